"""Attribution links: the touch a click or impression link's query names."""

from __future__ import annotations

from collections.abc import Mapping

from lookback.api.types.v1 import device_pb2, touch_pb2
from lookback.core.convert import HASH_ALGORITHM_NUMBER, ID_TYPE_NUMBER
from lookback.core.errors import FieldViolation, InvalidArgument
from lookback.domain.durations import parse_duration
from lookback.domain.model import DEVICE_ID_TYPES, TOUCH_LABELS

LINK_PARAMS = frozenset(
    {
        "app_id",
        *TOUCH_LABELS,
        "ip",
        "user_agent",
        "engaged_at",
        "is_retargeting",
        "click_lookback",
        "redirect",
        *DEVICE_ID_TYPES,
    }
)
HASHED_PARAMS = {
    f"{alg}_{t}": (ID_TYPE_NUMBER[t], HASH_ALGORITHM_NUMBER[alg])
    for t in DEVICE_ID_TYPES
    for alg in ("sha1", "md5")
}


def touch_from_link(
    q: Mapping[str, str], touch_type: int, client_ip: str, user_agent: str
) -> touch_pb2.Touch:
    """The touch a link's query describes; ``ip`` and ``user_agent`` default
    to the request's. Raises :class:`InvalidArgument` naming each bad parameter."""
    violations: list[FieldViolation] = []
    unknown = sorted(k for k in q if k not in LINK_PARAMS and k not in HASHED_PARAMS)
    violations += [
        FieldViolation(k, "is not a known parameter")
        if k
        else FieldViolation("query", "has a parameter without a name")
        for k in unknown
    ]
    touch = touch_pb2.Touch(
        type=touch_type,  # type: ignore[arg-type]
        app_id=q.get("app_id", ""),
        media_source=q.get("media_source", ""),
        campaign=q.get("campaign", ""),
        adset=q.get("adset", ""),
        ad=q.get("ad", ""),
        site_id=q.get("site_id", ""),
        click_id=q.get("click_id", ""),
        ip=q.get("ip") or client_ip,
        user_agent=q.get("user_agent") or user_agent,
        is_retargeting=q.get("is_retargeting", "").lower() in ("1", "true", "yes"),
    )
    for id_type in DEVICE_ID_TYPES:
        if q.get(id_type):
            setattr(touch.device, id_type, q[id_type])
    for name, (id_type_number, alg_number) in HASHED_PARAMS.items():
        if q.get(name):
            touch.device.hashed.append(
                device_pb2.HashedIdentifier(
                    type=id_type_number,  # type: ignore[arg-type]
                    algorithm=alg_number,  # type: ignore[arg-type]
                    value=q[name].lower(),
                )
            )
    if q.get("engaged_at"):
        try:
            touch.engaged_at.FromJsonString(q["engaged_at"])
        except ValueError:
            violations.append(FieldViolation("engaged_at", "must be an RFC 3339 time"))
    if q.get("click_lookback"):
        try:
            touch.click_lookback.FromMicroseconds(parse_duration(q["click_lookback"]))
        except ValueError as exc:
            violations.append(FieldViolation("click_lookback", str(exc)))
    if violations:
        raise InvalidArgument(violations)
    return touch
