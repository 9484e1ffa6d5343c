"""Attribution links: the touch a click or impression link's query names,
and whether the link's signature holds (:mod:`lookback.core.linksig`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from lookback.api.types.v1 import app_pb2, device_pb2, postback_pb2, touch_pb2
from lookback.core import linksig
from lookback.core.convert import HASH_ALGORITHM_NUMBER, ID_TYPE_NUMBER
from lookback.core.errors import FieldViolation, InvalidArgument
from lookback.core.signing import secret_for
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
        linksig.TS,
        linksig.SIG,
        *DEVICE_ID_TYPES,
    }
)
LINK_FIXED = frozenset({"app_id", *TOUCH_LABELS, "redirect"}) - {"click_id"}
"""Parameters a link (``/l/{code}``) sets itself: a partner cannot change them."""
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


def check_link_signature(
    params: Iterable[tuple[str, str]],
    app: app_pb2.App,
    media_source: str,
    secrets: Mapping[str, str],
    now: float,
) -> bool:
    """Whether the link is signed; raises
    :class:`~lookback.core.linksig.LinkSignatureError` (401) when it must be
    and is not, or carries a ``sig`` that does not hold.

    The partner (``media_source``) requires signed links when its settings
    say ``click_signing: required``. A ``sig`` is checked whenever it is
    present, even where signing is off: a signed link is trusted more (its
    ``ip`` parameter is honoured), so its signature must hold; and a
    ``sig`` that cannot be checked (the partner has no signing secret the
    gateway knows) is refused rather than ignored."""
    pairs = list(params)
    partners = app.settings.postbacks
    partner = partners.get(media_source)
    required = partner is not None and partner.click_signing == postback_pb2.CLICK_SIGNING_REQUIRED
    if not required and all(k != linksig.SIG for k, _ in pairs):
        return False
    secret = secret_for(secrets, media_source, partner.signing_secret) if partner else None
    if not secret:
        raise linksig.LinkSignatureError(
            linksig.SIG, "cannot be checked: the gateway has no signing secret for this partner"
        )
    linksig.verify(pairs, secret, now)
    return True
