"""The install's side of matching: its privacy state, the keys and click ids
it can match by, and what to read from the store for a decision.

Pure functions, like :mod:`lookback.domain.rules`, which uses them.
"""

from __future__ import annotations

from dataclasses import dataclass

from lookback.domain import addresses, devices, useragent
from lookback.domain.model import AttStatus, Install, Micros, Open, Platform, Settings
from lookback.domain.settings import RANGES

MAX_TOUCH_LOOKBACK = RANGES["click_lookback"].high
"""The longest a touch can ever count (the widest click lookback allowed)."""


def _version_at_least(version: str, major: int, minor: int) -> bool:
    parts = [p for p in version.replace("_", ".").split(".") if p.isdigit()]
    if not parts:
        return True  # unknown: assume a current OS and apply its privacy rules
    got = (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0)
    return got >= (major, minor)


@dataclass(frozen=True, slots=True)
class Privacy:
    """What the device's privacy state allows."""

    excluded_ids: frozenset[str]
    probabilistic_allowed: bool


def privacy_for(settings: Settings, install_os_version: str, att: AttStatus) -> Privacy:
    """iOS 14.5 and later: IDFA only with ATT consent; no probabilistic matching."""
    if settings.platform is Platform.IOS and _version_at_least(install_os_version, 14, 5):
        excluded = frozenset() if att is AttStatus.AUTHORIZED else frozenset({"idfa"})
        return Privacy(excluded, probabilistic_allowed=False)
    return Privacy(frozenset(), probabilistic_allowed=True)


@dataclass(frozen=True, slots=True)
class Matching:
    """The install's side of matching, computed once per decision."""

    at: Micros
    device_keys: frozenset[str]
    referrer_click_id: str
    agent: useragent.NormalisedAgent | None
    """The install's normalised agent; ``None`` when probabilistic matching is off."""
    ip: str
    excluded_ids: frozenset[str] = frozenset()
    """The identifier types the privacy rules keep from matching (``idfa``
    without ATT consent): never matched by, never sent to a network."""
    excluded_keys: frozenset[str] = frozenset()
    """Keys of the install's identifiers the privacy rules keep from matching
    (an IDFA without ATT consent): a touch with one is explained as ``privacy``."""
    probabilistic_blocked: bool = False
    """The privacy rules forbid probabilistic matching for this install."""


def matching_for_install(install: Install, settings: Settings) -> Matching:
    privacy = privacy_for(settings, install.os_version, install.att_status)
    agent = None
    # Never by an address many devices share or that is no device's own.
    shared = addresses.shared_or_special(install.ip) if install.ip else True
    if privacy.probabilistic_allowed and not shared:
        agent = useragent.normalise(install.user_agent, install.os_version)
    keys = frozenset(devices.install_device_keys(install.device, privacy.excluded_ids))
    excluded: frozenset[str] = frozenset()
    if privacy.excluded_ids:
        excluded = frozenset(devices.install_device_keys(install.device)) - keys
    return Matching(
        at=install.installed_at,
        device_keys=keys,
        referrer_click_id=install.referrer.click_id if install.referrer else "",
        agent=agent,
        ip=install.ip.strip().lower(),
        excluded_ids=privacy.excluded_ids,
        excluded_keys=excluded,
        probabilistic_blocked=not privacy.probabilistic_allowed,
    )


@dataclass(frozen=True, slots=True)
class Lookup:
    """What to read from the store for one decision."""

    touch_keys: list[str]
    """Keys of candidate touches: device keys, and the IP key only when the
    install can match probabilistically."""
    click_ids: list[str]
    """Touches to fetch by id (the install referrer's, the deep link's)."""
    device_keys: list[str]
    """Keys of the device's prior installs."""
    engaged_after: Micros
    engaged_before: Micros


AFTER_INSTALL_HORIZON = MAX_TOUCH_LOOKBACK
"""How long after the install touches are still read: none of them can win,
but a decision explains every touch of the device it could see (a click
stamped after the first launch is ``after_install``)."""


def install_lookup(install: Install, matching: Matching) -> Lookup:
    """The store reads an install's decision needs: every touch that is a
    candidate (OUTCOMES.md section 4), including those the privacy rules or a
    fingerprint mismatch keep from matching, so that the decision can explain them."""
    device_keys = devices.install_keys(matching.device_keys)
    touch_keys = sorted(matching.device_keys | matching.excluded_keys)
    # A shared or special address is never read by: its touches are not the
    # device's own (and may be many: a carrier-grade NAT's).
    if (ip := useragent.ip_key(install.ip)) and not addresses.shared_or_special(install.ip):
        touch_keys.append(ip)
    return Lookup(
        touch_keys=touch_keys,
        click_ids=[matching.referrer_click_id] if matching.referrer_click_id else [],
        device_keys=device_keys,
        engaged_after=matching.at - MAX_TOUCH_LOOKBACK,
        engaged_before=matching.at + AFTER_INSTALL_HORIZON,
    )


def open_lookup(open_: Open) -> Lookup:
    """The store reads an open's decision needs (its install is read by id)."""
    return Lookup(
        touch_keys=sorted(devices.install_device_keys(open_.device)),
        click_ids=[open_.deep_link_click_id] if open_.deep_link_click_id else [],
        device_keys=[],
        engaged_after=open_.opened_at - MAX_TOUCH_LOOKBACK,
        engaged_before=open_.opened_at + AFTER_INSTALL_HORIZON,
    )
