"""Postbacks: which decision or event triggers which partner's postback,
and its template's ``{macro}`` slots filled with URL-encoded values."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from lookback.domain.model import ORGANIC, TOUCH_LABELS, Decision, Kind, Micros, Settings

MACROS = frozenset(
    {
        "app_id",
        "install_id",
        "decision_id",
        "kind",
        *TOUCH_LABELS,
        "method",
        "touch_type",
        "install_time",
        "event_time",
        "event_id",
        "event_name",
        "event_revenue",
        "event_currency",
        "reengagement_media_source",
        "rejection_reason",
    }
)
_SLOT = re.compile(r"\{([a-z_]+)\}")


def unknown_macros(template: str) -> list[str]:
    """Macros a template uses that :data:`MACROS` does not define."""
    return sorted({m for m in _SLOT.findall(template) if m not in MACROS})


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill every known macro with its URL-encoded value (empty when absent)."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in MACROS:
            return match.group(0)
        return quote(values.get(name, ""), safe="")

    return _SLOT.sub(fill, template)


TRIGGERS = {
    Kind.INSTALL: "install",
    Kind.REATTRIBUTION: "reattribution",
    Kind.REENGAGEMENT: "reengagement",
}
"""The postback trigger of each counted decision kind."""
EVENT_TRIGGER = "event"
REJECTED_TRIGGER = "rejected"
"""Each touch of the partner that a decision rejected."""
POSTBACK_TRIGGERS = (*TRIGGERS.values(), EVENT_TRIGGER, REJECTED_TRIGGER)
"""Every trigger a partner may have a template for."""


@dataclass(frozen=True, slots=True)
class Postback:
    """A rendered postback, ready to be queued. ``job_id`` is derived from what
    triggered it, so handing the same postback over twice sends it once."""

    job_id: str
    partner: str
    trigger: str
    url: str
    method: str
    body: str
    signing_secret: str
    source_id: str
    max_in_flight: int = 0
    """The partner's ``max_in_flight`` setting; 0: the dispatcher's default."""


def iso_time(micros: Micros) -> str:
    """RFC 3339 UTC time (``2026-03-01T10:00:00Z``) of a time; ``""`` for 0."""
    if not micros:
        return ""
    seconds, rest = divmod(micros, 1_000_000)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if not rest:
        return f"{text}Z"
    # Milliseconds or microseconds, as protobuf's JSON writes them.
    return f"{text}.{rest // 1000:03d}Z" if rest % 1000 == 0 else f"{text}.{rest:06d}Z"


def decision_macros(d: Decision) -> dict[str, str]:
    """The macro values of a decision."""
    o = d.outcome
    return {
        "app_id": d.app_id,
        "install_id": d.install_id,
        "decision_id": d.decision_id,
        "kind": o.kind.value,
        "media_source": o.media_source,
        "campaign": o.campaign,
        "adset": o.adset,
        "ad": o.ad,
        "site_id": o.site_id,
        "click_id": o.click_id,
        "method": o.method.value,
        "touch_type": o.touch_type.value,
        "install_time": iso_time(d.event_time),
        "event_time": iso_time(d.event_time),
    }


def render_postback(
    settings: Settings, partner: str, trigger: str, source_id: str, macros: Mapping[str, str]
) -> Postback | None:
    """``partner``'s postback for ``trigger``, filled, if the app has one."""
    partner_postbacks = settings.postbacks.get(partner)
    if partner_postbacks is None:
        return None
    template = partner_postbacks.templates.get(trigger)
    if template is None or not template.url:
        return None
    return Postback(
        job_id=f"{source_id}:{partner}:{trigger}",
        partner=partner,
        trigger=trigger,
        url=render(template.url, macros),
        method=template.method,
        body=render(template.body, macros),
        signing_secret=partner_postbacks.signing_secret,
        source_id=source_id,
        max_in_flight=partner_postbacks.max_in_flight,
    )


def for_decision(settings: Settings, d: Decision) -> list[Postback]:
    """The postbacks a decision triggers: a counted one's to the winner, and
    one per rejected touch to its partner, if it has a ``rejected`` template."""
    out: list[Postback] = []
    if d.outcome.counted:
        trigger = TRIGGERS[d.outcome.kind]
        pb = render_postback(
            settings, d.outcome.media_source, trigger, d.decision_id, decision_macros(d)
        )
        if pb is not None:
            out.append(pb)
    return out + rejected_postbacks(settings, d)


def rejected_postbacks(settings: Settings, d: Decision) -> list[Postback]:
    """One postback per rejected touch of a partner with a ``rejected``
    template: its click id and the reason (the decision's own media source,
    campaign and ad are the winner's, so they are left empty). The n-th
    rejection's job is ``<decision id>/r<n>:<partner>:rejected`` (the
    rejections are in a fixed order, so a repeat hands over the same ids)."""
    out: list[Postback] = []
    base = decision_macros(d)
    for n, r in enumerate(d.outcome.rejected):
        if not r.media_source or r.media_source not in settings.postbacks:
            continue
        macros = {
            **base,
            "media_source": r.media_source,
            "click_id": r.click_id,
            "campaign": "",
            "adset": "",
            "ad": "",
            "site_id": "",
            "rejection_reason": r.reason.value,
        }
        pb = render_postback(
            settings, r.media_source, REJECTED_TRIGGER, f"{d.decision_id}/r{n}", macros
        )
        if pb is not None:
            out.append(pb)
    return out


@dataclass(frozen=True, slots=True)
class Event:
    """An in-app event as its postbacks see it."""

    app_id: str
    install_id: str
    event_id: str
    name: str
    revenue: str
    currency: str
    occurred_at: Micros


def for_event(
    settings: Settings,
    event: Event,
    attributed: Decision,
    media_source: str,
    reengagement_media_source: str,
) -> list[Postback]:
    """An attributed event's postbacks: to its media source and to the
    re-engagement media source (each once; never to organic)."""
    partners = [
        p for p in dict.fromkeys([media_source, reengagement_media_source]) if p and p != ORGANIC
    ]
    macros = decision_macros(attributed)
    macros.update(
        {
            "install_id": event.install_id,
            "event_id": event.event_id,
            "event_name": event.name,
            "event_revenue": event.revenue,
            "event_currency": event.currency,
            "event_time": iso_time(event.occurred_at),
            "reengagement_media_source": reengagement_media_source,
        }
    )
    out: list[Postback] = []
    for partner in partners:
        macros["media_source"] = partner
        pb = render_postback(
            settings, partner, EVENT_TRIGGER, f"event:{event.app_id}:{event.event_id}", macros
        )
        if pb is not None:
            out.append(pb)
    return out
