"""The values the attribution rules work on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import parse_qsl

from lookback.domain.addresses import Blocklist
from lookback.domain.durations import DAY, HOUR, SECOND

Micros = int
"""A time: microseconds since the Unix epoch (UTC); or a length of time."""

ORGANIC = "organic"

REFERRER_CLICK_ID_PARAMS = ("click_id", "clickid", "af_click_id")
"""Query parameters of a Play install referrer that name the click."""

TOUCH_LABELS = ("media_source", "campaign", "adset", "ad", "site_id", "click_id")
"""What names a touch's partner, campaign and ad (link parameters, postback macros)."""

DEVICE_ID_TYPES = ("gaid", "idfa", "idfv", "oaid", "android_id", "imei", "fire_id")


class Platform(StrEnum):
    ANDROID = "android"
    IOS = "ios"
    OTHER = "other"


class TouchType(StrEnum):
    CLICK = "click"
    IMPRESSION = "impression"
    NONE = "none"


class Kind(StrEnum):
    INSTALL = "install"
    REATTRIBUTION = "reattribution"
    REINSTALL = "reinstall"
    REENGAGEMENT = "reengagement"
    DUPLICATE = "duplicate"
    NONE = "none"


class Method(StrEnum):
    PRELOAD = "preload"
    INSTALL_REFERRER = "install_referrer"
    DEVICE_ID = "device_id"
    SRN = "srn"
    PROBABILISTIC = "probabilistic"
    DEEP_LINK = "deep_link"
    NONE = "none"


class Reason(StrEnum):
    CTIT_TOO_SHORT = "ctit_too_short"
    CLICK_AFTER_INSTALL_BEGIN = "click_after_install_begin"
    UNKNOWN_CLICK_ID = "unknown_click_id"
    CTIT_TOO_LONG = "ctit_too_long"
    BLOCKED_IP = "blocked_ip"
    BOT = "bot"


class Verdict(StrEnum):
    """What the rules made of one candidate touch (OUTCOMES.md section 4)."""

    WINNER = "winner"
    LOST_TO_HIGHER_TIER = "lost_to_higher_tier"
    """Qualified, but the winner is in a higher tier of the waterfall."""
    LOST_TO_NEWER = "lost_to_newer"
    """Qualified in the winner's tier; the winner is newer (or won the tie-break)."""
    OUTSIDE_WINDOW = "outside_window"
    AFTER_INSTALL = "after_install"
    REJECTED = "rejected"
    PRIVACY = "privacy"
    DISABLED = "disabled"
    FINGERPRINT_MISMATCH = "fingerprint_mismatch"
    NOT_RETARGETING = "not_retargeting"


QUALIFYING_VERDICTS = frozenset(
    {Verdict.WINNER, Verdict.LOST_TO_HIGHER_TIER, Verdict.LOST_TO_NEWER}
)
"""Verdicts of candidates that qualified (a loser of these may be a contributor)."""


class AttStatus(StrEnum):
    UNSPECIFIED = ""
    AUTHORIZED = "authorized"
    DENIED = "denied"
    RESTRICTED = "restricted"
    NOT_DETERMINED = "not_determined"


class PreloadType(StrEnum):
    REFERRER = "referrer"
    PAI = "pai"
    CONF = "conf"


@dataclass(frozen=True, slots=True)
class HashedId:
    """A device identifier known only by its hash."""

    id_type: str
    algorithm: str  # "sha1" or "md5"
    value: str


@dataclass(frozen=True, slots=True)
class Device:
    """Device identifiers: raw values by type, plus hashed ones."""

    raw: Mapping[str, str] = field(default_factory=dict)
    hashed: tuple[HashedId, ...] = ()


@dataclass(frozen=True, slots=True)
class Touch:
    """A click or impression."""

    click_id: str
    type: TouchType
    media_source: str
    engaged_at: Micros
    campaign: str = ""
    adset: str = ""
    ad: str = ""
    site_id: str = ""
    device: Device = field(default_factory=Device)
    ip: str = ""
    user_agent: str = ""
    is_retargeting: bool = False
    click_lookback: Micros | None = None
    deep_link_value: str = ""
    """What the app should open once it runs (clicks; docs/links.md)."""
    deep_link_params: tuple[tuple[str, str], ...] = ()
    """Further deep-link parameters, sorted by name."""


@dataclass(frozen=True, slots=True)
class Referrer:
    """The Play install referrer."""

    raw: str
    click_id: str = ""
    params: Mapping[str, str] = field(default_factory=dict)
    install_begin_at: Micros | None = None
    referrer_click_at: Micros | None = None

    @classmethod
    def parse(
        cls,
        raw: str,
        install_begin_at: Micros | None = None,
        referrer_click_at: Micros | None = None,
    ) -> Referrer:
        """The referrer a Play install referrer query string describes; its
        click id is the first of :data:`REFERRER_CLICK_ID_PARAMS` it names."""
        params = dict(parse_qsl(raw, keep_blank_values=True))
        click_id = next((params[n] for n in REFERRER_CLICK_ID_PARAMS if params.get(n)), "")
        return cls(raw, click_id, params, install_begin_at, referrer_click_at)


@dataclass(frozen=True, slots=True)
class Preload:
    type: PreloadType
    media_source: str
    campaign: str = ""
    preloaded_at: Micros | None = None


@dataclass(frozen=True, slots=True)
class Install:
    """An app's first launch."""

    install_id: str
    installed_at: Micros
    device: Device = field(default_factory=Device)
    ip: str = ""
    user_agent: str = ""
    os_version: str = ""
    att_status: AttStatus = AttStatus.UNSPECIFIED
    referrer: Referrer | None = None
    preload: Preload | None = None


@dataclass(frozen=True, slots=True)
class Open:
    install_id: str
    opened_at: Micros
    device: Device = field(default_factory=Device)
    deep_link_click_id: str = ""


@dataclass(frozen=True, slots=True)
class SrnClaim:
    """A self-reporting network's claim that it engaged the device."""

    media_source: str
    touch_type: TouchType
    engaged_at: Micros
    campaign: str = ""
    click_id: str = ""


@dataclass(frozen=True, slots=True)
class PostbackTemplate:
    """One trigger's postback: a URL (and body) with ``{macro}`` slots."""

    url: str
    method: str = "GET"
    body: str = ""


@dataclass(frozen=True, slots=True)
class PartnerPostbacks:
    """A partner's postback templates by trigger, its signing secret, and how
    many of its deliveries may be in flight at once."""

    templates: Mapping[str, PostbackTemplate] = field(default_factory=dict)
    signing_secret: str = ""
    max_in_flight: int = 0
    """Deliveries in flight at once on each dispatcher, per destination host
    (1 to 1000); 0: the dispatcher's default."""


@dataclass(frozen=True, slots=True)
class Settings:
    """An app's attribution settings with every default applied."""

    platform: Platform = Platform.ANDROID
    click_lookback: Micros = 7 * DAY
    click_lookback_by_source: Mapping[str, Micros] = field(default_factory=dict)
    view_lookback: Micros = 24 * HOUR
    probabilistic_click_lookback: Micros = 24 * HOUR
    probabilistic_view_lookback: Micros = 0
    preload_lookback: Micros = 90 * DAY
    reattribution_window: Micros = 90 * DAY
    reengagement_window: Micros = 30 * DAY
    min_ctit: Micros = 10 * SECOND
    max_ctit: Micros = 0
    """Longest click-to-install time (0: off)."""
    blocked_ips: Blocklist = field(default_factory=Blocklist)
    """Touches from these networks are rejected."""
    click_injection_check: bool = True
    srn_networks: tuple[str, ...] = ()
    postbacks: Mapping[str, PartnerPostbacks] = field(default_factory=dict)
    """Postback templates by partner (media source)."""

    def click_window(self, media_source: str) -> Micros:
        """The deterministic click lookback for ``media_source``."""
        return self.click_lookback_by_source.get(media_source, self.click_lookback)


@dataclass(frozen=True, slots=True)
class Rejection:
    click_id: str
    media_source: str
    reason: Reason


@dataclass(frozen=True, slots=True)
class Considered:
    """One candidate of a decision and its verdict: a stored touch, an SRN
    claim, the install's preload, or a click its referrer named that does
    not exist. Holds no device identifier."""

    media_source: str
    touch_type: TouchType
    engaged_at: Micros
    """0 when unknown (a referrer's unknown click)."""
    method: Method
    """How it matched the install (or would have: the way its verdict is about)."""
    verdict: Verdict
    click_id: str = ""
    campaign: str = ""
    window: Micros | None = None
    """For ``outside_window``: the window that applied."""
    reason: Reason | None = None
    """For ``rejected``: the fraud rule's reason."""
    contributor: bool = False
    """A qualifying loser listed among the decision's contributors."""
    is_retargeting: bool = False

    def sort_key(self) -> tuple[int, str, str, str, str, str, str]:
        """Most recent first (the contributors' order), then by name; then
        by what else tells two candidates apart (two SRN claims of one
        network at one time differ only by type or campaign)."""
        return (
            -self.engaged_at,
            self.media_source,
            self.click_id,
            self.method,
            self.verdict,
            self.touch_type,
            self.campaign,
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the rules decided. The service adds ids and timing."""

    kind: Kind
    media_source: str = ORGANIC
    campaign: str = ""
    method: Method = Method.NONE
    touch_type: TouchType = TouchType.NONE
    click_id: str = ""
    adset: str = ""
    ad: str = ""
    site_id: str = ""
    contributors: tuple[str, ...] = ()
    rejected: tuple[Rejection, ...] = ()
    original_decision_id: str = ""
    considered: tuple[Considered, ...] = ()
    """Every candidate and its verdict, most recent first (when the rules
    were asked to explain)."""
    deep_link_value: str = ""
    deep_link_params: tuple[tuple[str, str], ...] = ()
    match_guaranteed: bool | None = None
    """Set with a deep link: whether the winning click matched deterministically."""

    @property
    def counted(self) -> bool:
        """Counted decisions trigger postbacks."""
        if self.kind is Kind.INSTALL:
            return self.media_source != ORGANIC
        return self.kind in (Kind.REATTRIBUTION, Kind.REENGAGEMENT)


@dataclass(frozen=True, slots=True)
class Decision:
    """A recorded decision: the outcome with its ids and times."""

    decision_id: str
    app_id: str
    install_id: str
    outcome: Outcome
    event_time: Micros
    """When the install (or open) happened."""
    decided_at: Micros = 0


@dataclass(frozen=True, slots=True)
class PriorDecision:
    """A decision recorded earlier for the same device."""

    decision_id: str
    kind: Kind
    media_source: str
    event_time: Micros
    campaign: str = ""
    method: Method = Method.NONE
    touch_type: TouchType = TouchType.NONE
    click_id: str = ""


@dataclass(frozen=True, slots=True)
class PriorInstall:
    """An earlier install of the same app on the same device."""

    install_id: str
    installed_at: Micros
    attributed: PriorDecision
    """The counted decision holding this user (original install or last reattribution)."""
    latest_reengagement: PriorDecision | None = None
