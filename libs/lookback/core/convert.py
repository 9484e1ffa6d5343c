"""Translation between the shared protobuf types and the plain domain values.

The one place that maps proto enums to domain names (``TOUCH_TYPE_CLICK`` to
``click``) and messages to domain values and back. Conversions of one
service's own messages (the store's records, the SRN adapter's claims) live
with the service that needs them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, TypeVar

from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.descriptor import EnumDescriptor

from lookback.api.types.v1 import (
    app_pb2,
    decision_pb2,
    device_pb2,
    explanation_pb2,
    install_pb2,
    postback_pb2,
    touch_pb2,
)
from lookback.domain import addresses, devices, model
from lookback.domain.model import Micros
from lookback.domain.postbacks import POSTBACK_TRIGGERS, Postback

E = TypeVar("E", bound=Any)


# --- times ---------------------------------------------------------------


def ts_to_micros(ts: timestamp_pb2.Timestamp) -> Micros:
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def micros_to_ts(micros: Micros) -> timestamp_pb2.Timestamp:
    seconds, rest = divmod(micros, 1_000_000)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=rest * 1000)


def dur_to_micros(d: duration_pb2.Duration) -> Micros:
    return d.seconds * 1_000_000 + d.nanos // 1000


def micros_to_dur(micros: Micros) -> duration_pb2.Duration:
    seconds, rest = divmod(micros, 1_000_000)
    return duration_pb2.Duration(seconds=seconds, nanos=rest * 1000)


# --- enums ---------------------------------------------------------------


def enum_prefix(enum: EnumDescriptor) -> str:
    """The prefix of an enum's value names (``TOUCH_TYPE_`` of ``TOUCH_TYPE_UNSPECIFIED``)."""
    first = enum.values[0].name
    return first[: -len("UNSPECIFIED")] if first.endswith("UNSPECIFIED") else ""


def enum_short_name(enum: EnumDescriptor, number: int) -> str:
    """A value's short lower-case name (``click`` for ``TOUCH_TYPE_CLICK``)."""
    value = enum.values_by_number.get(number)
    if value is None:
        return str(number)
    return value.name.removeprefix(enum_prefix(enum)).lower()


def enum_number(enum: EnumDescriptor, short: str) -> int:
    """The number of a short name (``click``); 0 when unknown."""
    value = enum.values_by_name.get(enum_prefix(enum) + short.strip().upper())
    return value.number if value is not None else 0


class EnumMap:
    """Maps a proto enum to a ``StrEnum`` by the short name (``TOUCH_TYPE_CLICK`` -> ``click``)."""

    def __init__(self, proto: Any, domain: type[E], prefix: str) -> None:
        self.to_domain: dict[int, Any] = {}
        self.to_proto: dict[Any, int] = {}
        values = {m.value: m for m in domain}  # type: ignore[attr-defined]
        for name, number in proto.items():
            short = name.removeprefix(prefix).lower()
            if short in values:
                self.to_domain[number] = values[short]
                self.to_proto[values[short]] = number

    def domain(self, number: int, default: Any = None) -> Any:
        return self.to_domain.get(number, default)

    def proto(self, value: Any) -> Any:
        return self.to_proto.get(value, 0)


TOUCH_TYPE = EnumMap(touch_pb2.TouchType, model.TouchType, "TOUCH_TYPE_")
KIND = EnumMap(decision_pb2.DecisionKind, model.Kind, "DECISION_KIND_")
METHOD = EnumMap(decision_pb2.AttributionMethod, model.Method, "ATTRIBUTION_METHOD_")
REASON = EnumMap(decision_pb2.RejectionReason, model.Reason, "REJECTION_REASON_")
PLATFORM = EnumMap(app_pb2.Platform, model.Platform, "PLATFORM_")
PRELOAD_TYPE = EnumMap(install_pb2.PreloadType, model.PreloadType, "PRELOAD_TYPE_")
ATT = EnumMap(install_pb2.AttStatus, model.AttStatus, "ATT_STATUS_")
VERDICT = EnumMap(explanation_pb2.Verdict, model.Verdict, "VERDICT_")
ATT.to_domain[0] = model.AttStatus.UNSPECIFIED
ID_TYPE = {
    number: name.removeprefix("DEVICE_ID_TYPE_").lower()
    for name, number in device_pb2.DeviceIdType.items()
    if number
}
HASH_ALGORITHM = {
    number: name.removeprefix("HASH_ALGORITHM_").lower()
    for name, number in device_pb2.HashAlgorithm.items()
    if number
}
ID_TYPE_NUMBER = {name: number for number, name in ID_TYPE.items()}
HASH_ALGORITHM_NUMBER = {name: number for number, name in HASH_ALGORITHM.items()}
TRIGGER_NUMBER = {
    name.removeprefix("POSTBACK_TRIGGER_").lower(): number
    for name, number in postback_pb2.PostbackTrigger.items()
    if number
}
HTTP_METHOD = {postback_pb2.HTTP_METHOD_GET: "GET", postback_pb2.HTTP_METHOD_POST: "POST"}
HTTP_METHOD_NUMBER = {name: number for number, name in HTTP_METHOD.items()}


# --- facts ---------------------------------------------------------------


def device(d: device_pb2.DeviceIdentifiers) -> model.Device:
    raw = {t: getattr(d, t) for t in model.DEVICE_ID_TYPES if getattr(d, t)}
    hashed = tuple(
        model.HashedId(
            ID_TYPE.get(h.type, ""), HASH_ALGORITHM.get(h.algorithm, ""), h.value.lower()
        )
        for h in d.hashed
    )
    return model.Device(raw=raw, hashed=hashed)


def touch(t: touch_pb2.Touch) -> model.Touch:
    return model.Touch(
        click_id=t.click_id,
        type=TOUCH_TYPE.domain(t.type, model.TouchType.CLICK),
        media_source=t.media_source,
        engaged_at=ts_to_micros(t.engaged_at),
        campaign=t.campaign,
        adset=t.adset,
        ad=t.ad,
        site_id=t.site_id,
        device=device(t.device),
        ip=t.ip,
        user_agent=t.user_agent,
        is_retargeting=t.is_retargeting,
        click_lookback=dur_to_micros(t.click_lookback) if t.HasField("click_lookback") else None,
        deep_link_value=t.deep_link_value,
        deep_link_params=tuple(sorted(t.deep_link_params.items())),
    )


def install(i: install_pb2.Install) -> model.Install:
    referrer = None
    if i.HasField("install_referrer"):
        r = i.install_referrer
        referrer = model.Referrer.parse(
            r.referrer,
            install_begin_at=(
                ts_to_micros(r.install_begin_at) if r.HasField("install_begin_at") else None
            ),
            referrer_click_at=(
                ts_to_micros(r.referrer_click_at) if r.HasField("referrer_click_at") else None
            ),
        )
    preload = None
    if i.HasField("preload"):
        p = i.preload
        preload = model.Preload(
            type=PRELOAD_TYPE.domain(p.type, model.PreloadType.REFERRER),
            media_source=p.media_source,
            campaign=p.campaign,
            preloaded_at=ts_to_micros(p.preloaded_at) if p.HasField("preloaded_at") else None,
        )
    return model.Install(
        install_id=i.install_id,
        installed_at=ts_to_micros(i.installed_at),
        device=device(i.device),
        ip=i.ip,
        user_agent=i.user_agent,
        os_version=i.os_version,
        att_status=ATT.domain(i.att_status, model.AttStatus.UNSPECIFIED),
        referrer=referrer,
        preload=preload,
    )


def open_(o: install_pb2.Open) -> model.Open:
    return model.Open(
        install_id=o.install_id,
        opened_at=ts_to_micros(o.opened_at),
        device=device(o.device),
        deep_link_click_id=o.deep_link_click_id,
    )


def _opt(msg: Any, name: str, default: Micros) -> Micros:
    return dur_to_micros(getattr(msg, name)) if msg.HasField(name) else default


@lru_cache(maxsize=256)
def _blocklist(entries: tuple[str, ...]) -> addresses.Blocklist:
    """An app's blocklist, parsed once per distinct list (a long one takes
    tens of milliseconds, and settings are read again every few seconds)."""
    return addresses.parse_blocklist(entries)


def settings(app: app_pb2.App) -> model.Settings:
    """The app's settings with every default applied."""
    s = app.settings
    d = model.Settings()
    return model.Settings(
        platform=PLATFORM.domain(app.platform, model.Platform.OTHER),
        click_lookback=_opt(s, "click_lookback", d.click_lookback),
        click_lookback_by_source={
            k: dur_to_micros(v) for k, v in s.click_lookback_by_source.items()
        },
        view_lookback=_opt(s, "view_lookback", d.view_lookback),
        probabilistic_click_lookback=_opt(
            s, "probabilistic_click_lookback", d.probabilistic_click_lookback
        ),
        probabilistic_view_lookback=_opt(
            s, "probabilistic_view_lookback", d.probabilistic_view_lookback
        ),
        preload_lookback=_opt(s, "preload_lookback", d.preload_lookback),
        reattribution_window=_opt(s, "reattribution_window", d.reattribution_window),
        reengagement_window=_opt(s, "reengagement_window", d.reengagement_window),
        min_ctit=_opt(s, "min_ctit", d.min_ctit),
        max_ctit=_opt(s, "max_ctit", d.max_ctit),
        blocked_ips=_blocklist(tuple(s.blocked_ips)),
        click_injection_check=not s.disable_click_injection_check,
        srn_networks=tuple(s.srn_networks),
        postbacks={k: partner_postbacks(v) for k, v in s.postbacks.items()},
    )


_TRIGGER_FIELDS = POSTBACK_TRIGGERS


def partner_postbacks(p: postback_pb2.PartnerPostbacks) -> model.PartnerPostbacks:
    return model.PartnerPostbacks(
        templates={
            trigger: model.PostbackTemplate(
                url=t.url, method=HTTP_METHOD.get(t.method, "GET"), body=t.body
            )
            for trigger in _TRIGGER_FIELDS
            if p.HasField(trigger) and (t := getattr(p, trigger)).url  # type: ignore[arg-type]
        },
        signing_secret=p.signing_secret,
        max_in_flight=p.max_in_flight,
    )


def postback_job(p: Postback, app_id: str, created: Micros) -> postback_pb2.PostbackJob:
    return postback_pb2.PostbackJob(
        job_id=p.job_id,
        app_id=app_id,
        partner=p.partner,
        trigger=TRIGGER_NUMBER[p.trigger],  # type: ignore[arg-type]
        url=p.url,
        method=HTTP_METHOD_NUMBER[p.method],  # type: ignore[arg-type]
        body=p.body,
        signing_secret=p.signing_secret,
        create_time=micros_to_ts(created),
        source_id=p.source_id,
        max_in_flight=p.max_in_flight,
    )


# --- decisions -----------------------------------------------------------


def decision(
    outcome: model.Outcome,
    *,
    decision_id: str,
    app_id: str,
    install_id: str,
    event_time: Micros,
    decided_at: Micros,
    latency: Micros,
    unanswered_srns: tuple[str, ...] = (),
) -> decision_pb2.Decision:
    return decision_pb2.Decision(
        decision_id=decision_id,
        app_id=app_id,
        install_id=install_id,
        kind=KIND.proto(outcome.kind),
        media_source=outcome.media_source,
        campaign=outcome.campaign,
        method=METHOD.proto(outcome.method),
        touch_type=TOUCH_TYPE.proto(outcome.touch_type),
        click_id=outcome.click_id,
        contributors=list(outcome.contributors),
        rejected=[
            decision_pb2.RejectedTouch(
                click_id=r.click_id, media_source=r.media_source, reason=REASON.proto(r.reason)
            )
            for r in outcome.rejected
        ],
        latency=micros_to_dur(latency),
        event_time=micros_to_ts(event_time),
        decided_at=micros_to_ts(decided_at),
        unanswered_srns=list(unanswered_srns),
        counted=outcome.counted,
        adset=outcome.adset,
        ad=outcome.ad,
        site_id=outcome.site_id,
        original_decision_id=outcome.original_decision_id,
        deep_link_value=outcome.deep_link_value,
        deep_link_params=dict(outcome.deep_link_params),
        match_guaranteed=outcome.match_guaranteed,
    )


def prior_decision(
    d: decision_pb2.Decision | explanation_pb2.PriorAttribution,
) -> model.PriorDecision:
    """A recorded decision as a prior (a decision, or a prior attribution an
    explanation recorded: the same fields)."""
    return model.PriorDecision(
        decision_id=d.decision_id,
        kind=KIND.domain(d.kind, model.Kind.INSTALL),
        media_source=d.media_source,
        event_time=ts_to_micros(d.event_time),
        campaign=d.campaign,
        method=METHOD.domain(d.method, model.Method.NONE),
        touch_type=TOUCH_TYPE.domain(d.touch_type, model.TouchType.NONE),
        click_id=d.click_id,
    )


def outcome(d: decision_pb2.Decision) -> model.Outcome:
    return model.Outcome(
        kind=KIND.domain(d.kind, model.Kind.INSTALL),
        media_source=d.media_source,
        campaign=d.campaign,
        method=METHOD.domain(d.method, model.Method.NONE),
        touch_type=TOUCH_TYPE.domain(d.touch_type, model.TouchType.NONE),
        click_id=d.click_id,
        adset=d.adset,
        ad=d.ad,
        site_id=d.site_id,
        contributors=tuple(d.contributors),
        rejected=tuple(
            model.Rejection(r.click_id, r.media_source, REASON.domain(r.reason)) for r in d.rejected
        ),
        original_decision_id=d.original_decision_id,
        deep_link_value=d.deep_link_value,
        deep_link_params=tuple(sorted(d.deep_link_params.items())),
        match_guaranteed=d.match_guaranteed if d.HasField("match_guaranteed") else None,
    )


def recorded_decision(d: decision_pb2.Decision) -> model.Decision:
    """A stored decision as the domain sees it (for its postbacks)."""
    return model.Decision(
        decision_id=d.decision_id,
        app_id=d.app_id,
        install_id=d.install_id,
        outcome=outcome(d),
        event_time=ts_to_micros(d.event_time),
        decided_at=ts_to_micros(d.decided_at),
    )


# --- explanations ------------------------------------------------------------


def explained_candidate(c: model.Considered) -> explanation_pb2.ExplainedCandidate:
    out = explanation_pb2.ExplainedCandidate(
        click_id=c.click_id,
        media_source=c.media_source,
        campaign=c.campaign,
        touch_type=TOUCH_TYPE.proto(c.touch_type),
        method=METHOD.proto(c.method),
        verdict=VERDICT.proto(c.verdict),
        contributor=c.contributor,
        is_retargeting=c.is_retargeting,
    )
    if c.engaged_at:
        out.engaged_at.CopyFrom(micros_to_ts(c.engaged_at))
    if c.window is not None:
        out.window.CopyFrom(micros_to_dur(c.window))
    if c.reason is not None:
        out.reason = REASON.proto(c.reason)
    return out


def considered(c: explanation_pb2.ExplainedCandidate) -> model.Considered:
    return model.Considered(
        media_source=c.media_source,
        touch_type=TOUCH_TYPE.domain(c.touch_type, model.TouchType.NONE),
        engaged_at=ts_to_micros(c.engaged_at) if c.HasField("engaged_at") else 0,
        method=METHOD.domain(c.method, model.Method.NONE),
        verdict=VERDICT.domain(c.verdict, model.Verdict.DISABLED),
        click_id=c.click_id,
        campaign=c.campaign,
        window=dur_to_micros(c.window) if c.HasField("window") else None,
        reason=REASON.domain(c.reason) if c.reason else None,
        contributor=c.contributor,
        is_retargeting=c.is_retargeting,
    )


def prior_attribution(p: model.PriorInstall) -> explanation_pb2.PriorAttribution:
    a = p.attributed
    return explanation_pb2.PriorAttribution(
        install_id=p.install_id,
        decision_id=a.decision_id,
        kind=KIND.proto(a.kind),
        media_source=a.media_source,
        campaign=a.campaign,
        method=METHOD.proto(a.method),
        touch_type=TOUCH_TYPE.proto(a.touch_type),
        click_id=a.click_id,
        event_time=micros_to_ts(a.event_time),
        installed_at=micros_to_ts(p.installed_at),
    )


def prior_from_attribution(p: explanation_pb2.PriorAttribution) -> model.PriorInstall:
    return model.PriorInstall(
        install_id=p.install_id,
        installed_at=ts_to_micros(p.installed_at),
        attributed=prior_decision(p),
    )


def explanation(
    outcome: model.Outcome,
    decision_id: str,
    settings_version: int,
    prior: tuple[model.PriorInstall, ...] | list[model.PriorInstall] = (),
) -> explanation_pb2.Explanation:
    """The explanation of a decision the rules made (``outcome.considered``)."""
    return explanation_pb2.Explanation(
        decision_id=decision_id,
        settings_version=settings_version,
        candidates=[explained_candidate(c) for c in outcome.considered],
        prior=[prior_attribution(p) for p in prior],
    )


def srn_claims(e: explanation_pb2.Explanation) -> list[model.SrnClaim]:
    """The SRN claims a decision saw (recorded among its candidates)."""
    return [
        model.SrnClaim(
            media_source=c.media_source,
            touch_type=TOUCH_TYPE.domain(c.touch_type, model.TouchType.CLICK),
            engaged_at=ts_to_micros(c.engaged_at),
            campaign=c.campaign,
            click_id=c.click_id,
        )
        for c in e.candidates
        if c.method == decision_pb2.ATTRIBUTION_METHOD_SRN
    ]


def stored_touch_ids(e: explanation_pb2.Explanation) -> list[str]:
    """The click ids of the stored touches among a decision's candidates
    (not SRN claims, preloads, or a referrer's unknown click)."""
    skip = (decision_pb2.ATTRIBUTION_METHOD_SRN, decision_pb2.ATTRIBUTION_METHOD_PRELOAD)
    return sorted(
        {
            c.click_id
            for c in e.candidates
            if c.click_id
            and c.method not in skip
            and c.reason != decision_pb2.REJECTION_REASON_UNKNOWN_CLICK_ID
        }
    )


_HASH_NUMBER = {
    "sha1": device_pb2.HASH_ALGORITHM_SHA1,
    "md5": device_pb2.HASH_ALGORITHM_MD5,
}


def hash_raw_ids(
    device: device_pb2.DeviceIdentifiers, algorithms: tuple[str, ...] = ("sha1",)
) -> None:
    """Replace ``device``'s raw identifiers by their hashed forms (SHA-1, or
    each of ``algorithms``), in place: touches and installs are matched by
    key forms only (a raw identifier's keys are its SHA-1 and MD5), so the
    raw values need not be kept. An unavailable (all-zero) identifier is
    dropped."""
    have = {(h.type, h.algorithm, h.value) for h in device.hashed}
    for id_type in model.DEVICE_ID_TYPES:
        value = getattr(device, id_type)
        if not value:
            continue
        device.ClearField(id_type)  # type: ignore[arg-type]
        if devices.is_unavailable(value):
            continue
        number = ID_TYPE_NUMBER[id_type]
        for algorithm in algorithms:
            digest = devices.hex_digest(algorithm, value)
            code = _HASH_NUMBER[algorithm]
            if (number, code, digest) not in have:
                device.hashed.add(type=number, algorithm=code, value=digest)  # type: ignore[arg-type]
