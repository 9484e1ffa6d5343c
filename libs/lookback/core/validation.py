"""Request validation: every bad field is named, nothing half-accepted.

Each ``check_*`` function collects all violations of one message and raises
:class:`~lookback.core.errors.InvalidArgument` listing them. ``now`` is passed
in so validation stays deterministic.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import uuid
from collections.abc import Callable, Mapping, Sequence, Sized
from typing import Any
from urllib.parse import urlsplit

from google.protobuf import duration_pb2, timestamp_pb2

from lookback.api.srn.v1 import srn_adapter_service_pb2 as srn_pb
from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.types.v1 import (
    app_pb2,
    decision_pb2,
    device_pb2,
    install_pb2,
    postback_pb2,
    touch_pb2,
)
from lookback.core.convert import dur_to_micros, ts_to_micros
from lookback.core.errors import FieldViolation, InvalidArgument, Violations
from lookback.core.outbound import ALLOW_HINT, OutboundPolicy
from lookback.core.signing import bound_to
from lookback.domain import addresses
from lookback.domain.durations import HOUR, SECOND
from lookback.domain.model import Micros
from lookback.domain.postbacks import POSTBACK_TRIGGERS, unknown_macros
from lookback.domain.settings import DURATION_SETTINGS, RANGES, TOUCH_CLICK_LOOKBACK

# Whole values only (``fullmatch``: ``$`` would let a trailing newline in),
# and ASCII digits only (``\d`` also matches other scripts' digits).
_ID = re.compile(r"[A-Za-z0-9._:\-]{1,200}")
_SOURCE = re.compile(r"[a-z0-9][a-z0-9_.\-]{0,99}")
_HEX = re.compile(r"[0-9a-f]+")
_UUID_IDS = ("gaid", "idfa", "idfv", "fire_id")
_CURRENCY = re.compile(r"[A-Z]{3}")
_REVENUE = re.compile(r"-?[0-9]{1,15}(\.[0-9]{1,6})?")
# Earliest and latest times accepted (2000-01-01 and now + this skew).
_EPOCH_2000 = 946_684_800 * 1_000_000
MAX_CLOCK_SKEW = 1 * HOUR
MAX_USER_AGENT = 2000
MAX_OS_VERSION = 50
MAX_BATCH = 1000
"""Items in one batch call at most (touches, decision work, postback jobs)."""
MAX_LOOKUP = 1000
"""Match keys, device keys or click ids in one store call (or one touch) at most."""
MAX_KEY = 200
"""Characters of one match key at most (``sha1:gaid:<40 hex>``, ``ip:<address>``)."""
MAX_HASHED_IDS = 20
"""Hashed identifiers of one device at most."""
MAX_TEXT = 4000
"""Characters of a free-form label stored with a decision (a campaign, an SRN's click id)."""
MAX_NETWORKS = 50
"""SRN networks of one app (and one query) at most."""
MAX_SRN_BUDGET = 10 * SECOND
"""Longest time budget of one SRN query."""
MAX_PAGE_SIZE = 1000
MAX_URL = 4000
"""Characters of a postback URL (template or rendered) at most."""
MAX_BODY = 64 * 1024
"""Characters of a postback body (template or rendered) at most."""
MAX_IN_FLIGHT = 1000
"""A partner's ``max_in_flight`` setting (and a job's) at most."""
_JOB_ID = re.compile(r"[!-~]{1,600}")
"""A postback job id is sent as a header (``Idempotency-Key``): printable ASCII only."""
MAX_REDIRECT_HOSTS = 50
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}")
MAX_SRN_NETWORKS = 20
"""Self-reporting networks an app (and one SRN query) may name at most."""
MAX_BLOCKED_IPS = 10_000
"""Entries of an app's IP blocklist."""


def _check_id(v: Violations, value: str, path: str, required: bool = True) -> None:
    if not value:
        if required:
            v.add(path, "is required")
        return
    if not _ID.fullmatch(value):
        v.add(path, "must be 1 to 200 characters of letters, digits and . _ : -")


def ensure(check: Callable[..., None], *args: Any, prefix: str = "") -> None:
    """Run ``check(violations, *args)``; raise
    :class:`~lookback.core.errors.InvalidArgument` naming every bad field."""
    v = Violations(prefix=prefix)
    check(v, *args)
    v.raise_if_any()


def is_id(value: str) -> bool:
    """True when ``value`` is a well-formed id (app, install, click, event, decision)."""
    return bool(_ID.fullmatch(value))


def check_id(v: Violations, value: str, path: str, required: bool = True) -> None:
    """An id: 1 to 200 letters, digits and ``. _ : -`` (required unless told)."""
    _check_id(v, value, path, required)


def check_install_ref(v: Violations, app_id: str, install_id: str) -> None:
    """The app and install ids naming one install record."""
    _check_id(v, app_id, "app_id")
    _check_id(v, install_id, "install_id")


def _nested(v: Violations, prefix: str) -> Violations:
    """Violations under ``prefix`` that land in ``v``."""
    return Violations(prefix=v.prefix + prefix, items=v.items)


def check_count(v: Violations, items: Sized, path: str, limit: int) -> bool:
    """At most ``limit`` items; False (one violation, not one per item) when more."""
    if len(items) > limit:
        v.add(path, f"at most {limit} per call")
        return False
    return True


def check_keys(v: Violations, keys: Sequence[str], path: str, limit: int = MAX_LOOKUP) -> None:
    """Match or device keys: opaque to the store, but bounded in number and size."""
    if not check_count(v, keys, path, limit):
        return
    for i, key in enumerate(keys):
        if not key or len(key) > MAX_KEY or not key.isprintable():
            v.add(f"{path}[{i}]", f"must be 1 to {MAX_KEY} printable characters")


def check_ids(v: Violations, ids: Sequence[str], path: str, limit: int = MAX_LOOKUP) -> None:
    """A list of ids (see :func:`check_id`), bounded in number."""
    if not check_count(v, ids, path, limit):
        return
    for i, value in enumerate(ids):
        _check_id(v, value, f"{path}[{i}]")


def check_text(v: Violations, value: str, path: str, limit: int = MAX_TEXT) -> None:
    if len(value) > limit:
        v.add(path, f"must be at most {limit} characters")


def check_enum(v: Violations, value: int, enum: Any, path: str, required: bool = False) -> None:
    if value not in enum.values() or (required and value == 0):
        v.add(path, "is required" if value == 0 else "is not a known value")


def check_media_source(v: Violations, value: str, path: str) -> None:
    if not value:
        v.add(path, "is required")
    elif not _SOURCE.fullmatch(value):
        v.add(path, "must be lower-case letters, digits, '_', '.' or '-' (at most 100)")


def check_time(
    v: Violations, ts: timestamp_pb2.Timestamp, path: str, now: Micros, required: bool = False
) -> None:
    """A set timestamp must be well formed, after 2000 and not in the future."""
    if ts.seconds == 0 and ts.nanos == 0:
        if required:
            v.add(path, "is required")
        return
    if not 0 <= ts.nanos < 1_000_000_000:
        v.add(path, "nanos must be between 0 and 999999999")
        return
    micros = ts_to_micros(ts)
    if micros < _EPOCH_2000:
        v.add(path, "must be after 2000-01-01T00:00:00Z")
    elif micros > now + MAX_CLOCK_SKEW:
        v.add(path, "must not be in the future")


def check_duration(v: Violations, d: duration_pb2.Duration, path: str, range_name: str) -> None:
    if d.seconds < 0 or not 0 <= d.nanos < 1_000_000_000:
        v.add(path, "must be a non-negative duration")
        return
    problem = RANGES[range_name].check(dur_to_micros(d))
    if problem:
        v.add(path, problem)


def check_device(v: Violations, d: device_pb2.DeviceIdentifiers, path: str) -> None:
    for name in _UUID_IDS:
        value = getattr(d, name)
        if value:
            try:
                uuid.UUID(value)
            except ValueError:
                v.add(f"{path}.{name}", "must be a UUID (8-4-4-4-12 hex digits)")
    if d.oaid and not re.fullmatch(r"[0-9A-Fa-f\-]{1,128}", d.oaid):
        v.add(f"{path}.oaid", "must be up to 128 hex digits or dashes")
    if d.android_id and not re.fullmatch(r"[0-9A-Fa-f]{1,64}", d.android_id):
        v.add(f"{path}.android_id", "must be up to 64 hex digits")
    if d.imei and not re.fullmatch(r"[0-9]{14,17}", d.imei):
        v.add(f"{path}.imei", "must be 14 to 17 digits")
    if len(d.hashed) > MAX_HASHED_IDS:
        v.add(f"{path}.hashed", f"at most {MAX_HASHED_IDS} hashed identifiers")
        return
    for i, h in enumerate(d.hashed):
        hp = f"{path}.hashed[{i}]"
        if (
            h.type == device_pb2.DEVICE_ID_TYPE_UNSPECIFIED
            or h.type not in device_pb2.DeviceIdType.values()
        ):
            v.add(f"{hp}.type", "is required")
        if h.algorithm == device_pb2.HASH_ALGORITHM_SHA1:
            length = 40
        elif h.algorithm == device_pb2.HASH_ALGORITHM_MD5:
            length = 32
        else:
            v.add(f"{hp}.algorithm", "must be sha1 or md5")
            continue
        if len(h.value) != length or not _HEX.fullmatch(h.value.lower()):
            v.add(f"{hp}.value", f"must be {length} hex digits")


def check_ip(v: Violations, ip: str, path: str) -> None:
    if ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            v.add(path, "must be an IPv4 or IPv6 address")


def check_touch(v: Violations, t: touch_pb2.Touch, now: Micros) -> None:
    _check_id(v, t.app_id, "app_id")
    if t.type not in (touch_pb2.TOUCH_TYPE_CLICK, touch_pb2.TOUCH_TYPE_IMPRESSION):
        v.add("type", "must be click or impression")
    check_media_source(v, t.media_source, "media_source")
    _check_id(v, t.click_id, "click_id", required=False)
    check_time(v, t.engaged_at, "engaged_at", now)
    check_device(v, t.device, "device")
    check_ip(v, t.ip, "ip")
    if t.HasField("click_lookback"):
        problem = TOUCH_CLICK_LOOKBACK.check(dur_to_micros(t.click_lookback))
        if problem:
            v.add("click_lookback", problem)
    for name in ("campaign", "adset", "ad", "site_id"):
        if len(getattr(t, name)) > 500:
            v.add(name, "must be at most 500 characters")
    if len(t.user_agent) > MAX_USER_AGENT:
        v.add("user_agent", f"must be at most {MAX_USER_AGENT} characters")
    check_deep_link(v, t.deep_link_value, t.deep_link_params, "")
    if (t.deep_link_value or t.deep_link_params) and t.type == touch_pb2.TOUCH_TYPE_IMPRESSION:
        v.add("deep_link_value", "only clicks carry a deep link")


MAX_DEEP_LINK = 2000
MAX_DEEP_LINK_PARAMS = 20
_PARAM_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,100}")


def check_deep_link(v: Violations, value: str, params: Mapping[str, str], prefix: str) -> None:
    """A deferred deep link (docs/links.md): a value and at most 20 named parameters."""
    if len(value) > MAX_DEEP_LINK or not value.isprintable():
        v.add(f"{prefix}deep_link_value", f"must be at most {MAX_DEEP_LINK} printable characters")
    if len(params) > MAX_DEEP_LINK_PARAMS:
        v.add(f"{prefix}deep_link_params", f"at most {MAX_DEEP_LINK_PARAMS} parameters")
        return
    for name, param in params.items():
        if not _PARAM_NAME.fullmatch(name):
            v.add(
                f"{prefix}deep_link_params",
                f"names are 1 to 100 of A-Z a-z 0-9 _ . -: {name[:40]!r}",
            )
        elif len(param) > MAX_DEEP_LINK or not param.isprintable():
            v.add(
                f"{prefix}deep_link_params[{name}]",
                f"must be at most {MAX_DEEP_LINK} printable characters",
            )


def _check_report(
    v: Violations, report: install_pb2.Install | install_pb2.Open, time_field: str, now: Micros
) -> None:
    """What an install and an open report both carry: ids, time, device, IP."""
    _check_id(v, report.app_id, "app_id")
    _check_id(v, report.install_id, "install_id")
    check_time(v, getattr(report, time_field), time_field, now)
    check_device(v, report.device, "device")
    check_ip(v, report.ip, "ip")


def check_install(v: Violations, i: install_pb2.Install, now: Micros) -> None:
    _check_report(v, i, "installed_at", now)
    if len(i.user_agent) > MAX_USER_AGENT:
        v.add("user_agent", f"must be at most {MAX_USER_AGENT} characters")
    if len(i.os_version) > MAX_OS_VERSION:
        v.add("os_version", f"must be at most {MAX_OS_VERSION} characters")
    if i.att_status not in install_pb2.AttStatus.values():
        v.add("att_status", "is not a known ATT status")
    if i.HasField("install_referrer"):
        r = i.install_referrer
        check_time(v, r.install_begin_at, "install_referrer.install_begin_at", now)
        check_time(v, r.referrer_click_at, "install_referrer.referrer_click_at", now)
        if len(r.referrer) > 4000:
            v.add("install_referrer.referrer", "must be at most 4000 characters")
    if i.HasField("preload"):
        p = i.preload
        if p.type not in (
            install_pb2.PRELOAD_TYPE_REFERRER,
            install_pb2.PRELOAD_TYPE_PAI,
            install_pb2.PRELOAD_TYPE_CONF,
        ):
            v.add("preload.type", "must be referrer, pai or conf")
        check_media_source(v, p.media_source, "preload.media_source")
        check_time(
            v,
            p.preloaded_at,
            "preload.preloaded_at",
            now,
            required=p.type != install_pb2.PRELOAD_TYPE_CONF,
        )


def check_open(v: Violations, o: install_pb2.Open, now: Micros) -> None:
    _check_report(v, o, "opened_at", now)
    _check_id(v, o.deep_link_click_id, "deep_link_click_id", required=False)


def check_event(v: Violations, e: install_pb2.InAppEvent, now: Micros) -> None:
    _check_id(v, e.app_id, "app_id")
    _check_id(v, e.install_id, "install_id")
    _check_id(v, e.event_id, "event_id", required=False)
    if not e.name:
        v.add("name", "is required")
    elif len(e.name) > 100:
        v.add("name", "must be at most 100 characters")
    check_time(v, e.occurred_at, "occurred_at", now)
    if e.revenue and not _REVENUE.fullmatch(e.revenue):
        v.add("revenue", "must be a decimal number such as 4.99")
    if e.currency and not _CURRENCY.fullmatch(e.currency):
        v.add("currency", "must be an ISO 4217 code such as USD")
    if e.revenue and not e.currency:
        v.add("currency", "is required with revenue")


def _check_template(v: Violations, t: postback_pb2.PostbackTemplate, path: str) -> None:
    if not t.url:
        return
    if not re.match(r"^https?://", t.url):
        v.add(f"{path}.url", "must be an http:// or https:// URL")
    elif re.search(r"[{}]", re.sub(r"[/?#].*", "", t.url.split("://", 1)[1])):
        v.add(f"{path}.url", "the host and port may not contain macros")
    unknown = unknown_macros(t.url) + unknown_macros(t.body)
    if unknown:
        v.add(f"{path}.url", f"unknown macros: {', '.join(unknown)}")
    if t.method not in postback_pb2.HttpMethod.values():
        v.add(f"{path}.method", "must be GET or POST")


def check_redirect_host(v: Violations, entry: str, path: str) -> None:
    """A redirect allowlist entry: a host name (``example.com``, ASCII, so
    ``xn--`` for international names), or ``*.`` and a name of at least two
    labels (``*.example.com``: its subdomains)."""
    name = entry[2:] if entry.startswith("*.") else entry
    if len(name) > 253 or not _HOST.fullmatch(name):
        v.add(path, "must be a host name such as example.com, or *.example.com")
    elif entry.startswith("*.") and "." not in name:
        v.add(path, "a wildcard must cover a domain of at least two labels (*.example.com)")


def _check_click_signing(v: Violations, partner: str, p: postback_pb2.PartnerPostbacks) -> None:
    path = f"settings.postbacks[{partner}]"
    if p.click_signing not in postback_pb2.ClickSigning.values():
        v.add(f"{path}.click_signing", "must be off or required")
    elif p.click_signing == postback_pb2.CLICK_SIGNING_REQUIRED:
        if not p.signing_secret:
            v.add(f"{path}.signing_secret", "is required when click_signing is required")
        elif not bound_to(partner, p.signing_secret):
            v.add(
                f"{path}.signing_secret",
                f"must be the partner's own: {partner!r} or {partner + '.'!r} and a suffix",
            )


def check_srn_networks(v: Violations, networks: Any, path: str) -> None:
    """At most :data:`MAX_SRN_NETWORKS` valid network names, none twice."""
    if len(networks) > MAX_SRN_NETWORKS:
        v.add(path, f"must name at most {MAX_SRN_NETWORKS} networks")
    seen: set[str] = set()
    for i, network in enumerate(networks):
        check_media_source(v, network, f"{path}[{i}]")
        if network in seen:
            v.add(f"{path}[{i}]", f"{network!r} is named twice")
        seen.add(network)


def check_app(v: Violations, app: app_pb2.App) -> None:
    _check_id(v, app.app_id, "app_id")
    if app.platform not in (app_pb2.PLATFORM_ANDROID, app_pb2.PLATFORM_IOS, app_pb2.PLATFORM_OTHER):
        v.add("platform", "must be android, ios or other")
    s: Any = app.settings
    for name in DURATION_SETTINGS:
        if s.HasField(name):
            check_duration(v, getattr(s, name), f"settings.{name}", name)
    for source, d in s.click_lookback_by_source.items():
        check_media_source(v, source, f"settings.click_lookback_by_source[{source}]")
        check_duration(
            v, d, f"settings.click_lookback_by_source[{source}]", "click_lookback_by_source"
        )
    _check_app_sizes(v, s)
    check_srn_networks(v, s.srn_networks, "settings.srn_networks")
    for partner, templates in s.postbacks.items():
        check_media_source(v, partner, f"settings.postbacks[{partner}]")
        secret = templates.signing_secret
        if secret and not bound_to(partner, secret):
            v.add(
                f"settings.postbacks[{partner}].signing_secret",
                f"a secret of partner {partner!r} must be named {partner!r} or"
                f" start with {partner + '.'!r}",
            )
        for trigger in POSTBACK_TRIGGERS:
            if templates.HasField(trigger):
                _check_template(
                    v, getattr(templates, trigger), f"settings.postbacks[{partner}].{trigger}"
                )
        _check_click_signing(v, partner, templates)
        if not 0 <= templates.max_in_flight <= MAX_IN_FLIGHT:
            v.add(
                f"settings.postbacks[{partner}].max_in_flight",
                f"must be 1 to {MAX_IN_FLIGHT}, or 0 for the dispatcher's default",
            )
    if len(s.blocked_ips) > MAX_BLOCKED_IPS:
        v.add("settings.blocked_ips", f"at most {MAX_BLOCKED_IPS} entries")
    for i, entry in enumerate(s.blocked_ips[:MAX_BLOCKED_IPS]):
        try:
            addresses.parse_blocklist([entry])
        except ValueError as exc:
            v.add(f"settings.blocked_ips[{i}]", str(exc)[:200])
    if len(s.redirect_allowlist) > MAX_REDIRECT_HOSTS:
        v.add("settings.redirect_allowlist", f"at most {MAX_REDIRECT_HOSTS} entries")
    for i, entry in enumerate(s.redirect_allowlist):
        check_redirect_host(v, entry, f"settings.redirect_allowlist[{i}]")
    if s.HasField("links"):
        check_link_settings(v, s.links, "settings.links.")


_PACKAGE = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+")
_APP_STORE_ID = re.compile(r"(id)?[0-9]{1,20}")
_TEAM_ID = re.compile(r"[A-Z0-9]{10}")
_BUNDLE_ID = re.compile(r"[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)+")
_FINGERPRINT = re.compile(r"[0-9A-F]{2}(:[0-9A-F]{2}){31}")


def check_web_url(v: Violations, url: str, path: str) -> None:
    """A page people are sent to: an absolute https URL, no user info, no
    spaces or backslashes (:mod:`lookback.gateway.redirects` follows it)."""
    try:
        parsed = urlsplit(url)
        ok = (
            parsed.scheme == "https"
            and bool(parsed.hostname)
            and not parsed.username
            and not parsed.password
            and not re.search(r"[\x00-\x20\x7f\\]", url)
            and len(url) <= MAX_URL
        )
    except ValueError:
        ok = False
    if not ok:
        v.add(path, "must be an absolute https URL without spaces, backslashes or user info")


def check_link_settings(v: Violations, s: app_pb2.LinkSettings, prefix: str) -> None:
    """Store pages, web fallback and the ``.well-known`` identity (docs/links.md)."""
    if s.android_package and not _PACKAGE.fullmatch(s.android_package):
        v.add(f"{prefix}android_package", "must be a package name such as com.example.app")
    if s.ios_app_store_id and not _APP_STORE_ID.fullmatch(s.ios_app_store_id):
        v.add(f"{prefix}ios_app_store_id", "must be the App Store id: digits, or id and digits")
    if s.web_fallback_url:
        check_web_url(v, s.web_fallback_url, f"{prefix}web_fallback_url")
    if s.ios_team_id and not _TEAM_ID.fullmatch(s.ios_team_id):
        v.add(f"{prefix}ios_team_id", "must be 10 upper-case letters or digits")
    if s.ios_bundle_id and not _BUNDLE_ID.fullmatch(s.ios_bundle_id):
        v.add(f"{prefix}ios_bundle_id", "must be a bundle id such as com.example.app")
    if bool(s.ios_team_id) != bool(s.ios_bundle_id):
        v.add(f"{prefix}ios_team_id", "give the team id and the bundle id together")
    check_count(
        v, s.android_sha256_cert_fingerprints, f"{prefix}android_sha256_cert_fingerprints", 10
    )
    for i, f in enumerate(s.android_sha256_cert_fingerprints):
        if not _FINGERPRINT.fullmatch(f):
            v.add(
                f"{prefix}android_sha256_cert_fingerprints[{i}]",
                "must be 32 upper-case hex bytes separated by colons (AB:CD:...)",
            )
    if s.link_domain and (len(s.link_domain) > 253 or not _HOST.fullmatch(s.link_domain)):
        v.add(f"{prefix}link_domain", "must be a host name such as go.example.com")


def _check_app_sizes(v: Violations, s: app_pb2.AppSettings) -> None:
    """Bounds on how much one app's settings may hold."""
    check_count(v, s.postbacks, "settings.postbacks", 100)
    check_count(v, s.click_lookback_by_source, "settings.click_lookback_by_source", 1000)
    for partner, templates in s.postbacks.items():
        for trigger in POSTBACK_TRIGGERS:
            t = getattr(templates, trigger)
            path = f"settings.postbacks[{partner}].{trigger}"
            check_text(v, t.url, f"{path}.url", MAX_URL)
            check_text(v, t.body, f"{path}.body", MAX_BODY)


# --- the store's requests -----------------------------------------------------
#
# The store checks what it is sent as every other service does (a caller may
# skip ingestion and the decider): the same rules for what was already
# checked upstream, and bounds on what only the store sees (keys, lookups).


def check_indexed_touches(
    v: Violations, touches: Sequence[store_pb.IndexedTouch], now: Micros
) -> None:
    """A ``PutTouches`` batch: bounded, each touch whole, with its click id."""
    if not check_count(v, touches, "touches", MAX_BATCH):
        return
    for i, indexed in enumerate(touches):
        item = _nested(v, f"touches[{i}].")
        check_touch(_nested(item, "touch."), indexed.touch, now)
        if not indexed.touch.click_id:
            item.add("touch.click_id", "is required")
        check_keys(item, indexed.match_keys, "match_keys")


def _check_range(
    v: Violations, after: timestamp_pb2.Timestamp, before: timestamp_pb2.Timestamp
) -> None:
    for ts, name in ((after, "engaged_after"), (before, "engaged_before")):
        if not 0 <= ts.nanos < 1_000_000_000:
            v.add(name, "nanos must be between 0 and 999999999")


def check_gather(v: Violations, r: store_pb.GatherInstallFactsRequest) -> None:
    _check_id(v, r.app_id, "app_id")
    _check_id(v, r.install_id, "install_id")
    check_keys(v, r.touch_keys, "touch_keys")
    check_ids(v, r.click_ids, "click_ids")
    check_keys(v, r.device_keys, "device_keys")
    _check_range(v, r.engaged_after, r.engaged_before)


def check_find_touches(v: Violations, r: store_pb.FindTouchesRequest) -> None:
    _check_id(v, r.app_id, "app_id")
    check_keys(v, r.match_keys, "match_keys")
    check_ids(v, r.click_ids, "click_ids")
    _check_range(v, r.engaged_after, r.engaged_before)


def check_decision(v: Violations, d: decision_pb2.Decision, path: str) -> None:
    """A decision as the decider records it: ids, known enums, bounded labels."""
    p = _nested(v, f"{path}.")
    _check_id(p, d.decision_id, "decision_id")
    _check_id(p, d.app_id, "app_id", required=False)
    _check_id(p, d.install_id, "install_id", required=False)
    _check_id(p, d.original_decision_id, "original_decision_id", required=False)
    check_enum(p, d.kind, decision_pb2.DecisionKind, "kind")
    check_enum(p, d.method, decision_pb2.AttributionMethod, "method")
    check_enum(p, d.touch_type, touch_pb2.TouchType, "touch_type")
    for name in ("media_source", "campaign", "adset", "ad", "site_id", "click_id"):
        check_text(p, getattr(d, name), name)
    check_count(p, d.contributors, "contributors", 100)
    check_count(p, d.unanswered_srns, "unanswered_srns", MAX_NETWORKS)


def check_install_record(v: Violations, record: store_pb.InstallRecord, now: Micros) -> None:
    check_install(_nested(v, "install."), record.install, now)
    check_keys(v, record.match_keys, "match_keys")
    check_decision(v, record.decision, "decision")
    for name in ("attributed_decision", "latest_reengagement"):
        if record.HasField(name):
            check_decision(v, getattr(record, name), name)


def check_open_decision(v: Violations, r: store_pb.RecordOpenDecisionRequest, now: Micros) -> None:
    check_open(_nested(v, "open."), r.open, now)
    check_decision(v, r.decision, "decision")
    check_postback_jobs(v, r.postbacks, "postbacks")


def check_create_install_record(
    v: Violations, r: store_pb.CreateInstallRecordRequest, now: Micros
) -> None:
    check_install_record(_nested(v, "record."), r.record, now)
    check_postback_jobs(v, r.postbacks, "postbacks")


_CURSOR = re.compile(r"[0-9A-Za-z\-]{1,100}")
_PAGE_TOKEN = re.compile(r"[0-9A-Za-z_\-]{1,400}")


def check_read_outcomes(v: Violations, r: store_pb.ReadOutcomesRequest) -> None:
    _check_id(v, r.app_id, "app_id")
    if r.after_cursor and not _CURSOR.fullmatch(r.after_cursor):
        v.add("after_cursor", "is not a cursor this service handed out")
    if not 0 <= r.limit <= MAX_PAGE_SIZE:
        v.add("limit", f"must be 0 to {MAX_PAGE_SIZE}")
    if r.HasField("rewind"):
        rewind = r.rewind.ToMicroseconds()
        if not 1_000_000 <= rewind <= 3_600_000_000 or r.rewind.nanos < 0:
            v.add("rewind", "must be 1 s to 1 hour")
        elif not r.after_cursor:
            v.add("rewind", "needs an after_cursor to rewind from")


def check_get_decision(v: Violations, r: store_pb.GetDecisionRequest) -> None:
    _check_id(v, r.app_id, "app_id")
    _check_id(v, r.decision_id, "decision_id")


def _check_timestamp(v: Violations, ts: timestamp_pb2.Timestamp, path: str) -> None:
    if not 0 <= ts.nanos < 1_000_000_000 or not 0 <= ts.seconds < 253402300800:
        v.add(path, "must be a timestamp between 1970 and 9999")


def check_list_decisions(v: Violations, r: store_pb.ListDecisionsRequest) -> None:
    _check_id(v, r.app_id, "app_id")
    _check_timestamp(v, r.start_time, "start_time")
    _check_timestamp(v, r.end_time, "end_time")
    if r.HasField("end_time") and ts_to_micros(r.end_time) < ts_to_micros(r.start_time):
        v.add("end_time", "must not be before start_time")
    if check_count(v, r.kinds, "kinds", 10):
        for i, kind in enumerate(r.kinds):
            check_enum(v, kind, decision_pb2.DecisionKind, f"kinds[{i}]", required=True)
    if r.media_source:
        check_media_source(v, r.media_source, "media_source")
    check_page_size(v, r.page_size)
    if r.page_token and not _PAGE_TOKEN.fullmatch(r.page_token):
        v.add("page_token", "is not a token this service handed out")


def check_put_event(v: Violations, r: store_pb.PutEventRequest, now: Micros) -> None:
    check_event(_nested(v, "event."), r.event, now)
    if not r.event.event_id:
        v.add("event.event_id", "is required")
    a = _nested(v, "attribution.")
    _check_id(a, r.attribution.event_id, "event_id", required=False)
    _check_id(a, r.attribution.decision_id, "decision_id", required=False)
    for name in ("media_source", "campaign", "reengagement_media_source"):
        check_text(a, getattr(r.attribution, name), name)
    check_postback_jobs(v, r.postbacks, "postbacks")


# --- the SRN adapter's and the postback dispatcher's requests -----------------


def check_srn_query(v: Violations, r: srn_pb.QueryClaimsRequest, now: Micros) -> None:
    _check_id(v, r.app_id, "app_id")
    if check_count(v, r.networks, "networks", MAX_NETWORKS):  # duplicates collapse to 20
        for i, network in enumerate(r.networks):
            check_media_source(v, network, f"networks[{i}]")
    check_device(v, r.device, "device")
    check_time(v, r.installed_at, "installed_at", now)
    if r.HasField("budget"):
        b = r.budget
        if b.seconds < 0 or not 0 <= b.nanos < 1_000_000_000:
            v.add("budget", "must be a non-negative duration")
        elif dur_to_micros(b) > MAX_SRN_BUDGET:
            v.add("budget", f"must be at most {MAX_SRN_BUDGET // SECOND}s")


def check_job_id(v: Violations, job_id: str, path: str) -> None:
    if not _JOB_ID.fullmatch(job_id):
        v.add(path, "must be 1 to 600 printable ASCII characters, no spaces")


def check_postback_jobs(
    v: Violations, jobs: Sequence[postback_pb2.PostbackJob], path: str = "jobs"
) -> None:
    """An ``EnqueuePostbacks`` batch (or the jobs recorded with a decision,
    ``path`` naming their field): bounded, each job sendable as it is."""
    if not check_count(v, jobs, path, MAX_BATCH):
        return
    for i, job in enumerate(jobs):
        p = _nested(v, f"{path}[{i}].")
        check_job_id(p, job.job_id, "job_id")
        if not job.url.startswith(("http://", "https://")):
            p.add("url", "must be an http:// or https:// URL")
        check_text(p, job.url, "url", MAX_URL)
        check_text(p, job.body, "body", MAX_BODY)
        _check_id(p, job.app_id, "app_id", required=False)
        if job.partner:
            check_media_source(p, job.partner, "partner")
        check_enum(p, job.trigger, postback_pb2.PostbackTrigger, "trigger")
        check_enum(p, job.method, postback_pb2.HttpMethod, "method")
        check_text(p, job.signing_secret, "signing_secret", 200)
        check_text(p, job.source_id, "source_id", 600)
        check_text(p, job.traceparent, "traceparent", 100)
        if not 0 <= job.max_in_flight <= MAX_IN_FLIGHT:
            p.add("max_in_flight", f"must be 0 to {MAX_IN_FLIGHT}")


def check_page_size(v: Violations, page_size: int, path: str = "page_size") -> None:
    if not 0 <= page_size <= MAX_PAGE_SIZE:
        v.add(path, f"must be 0 to {MAX_PAGE_SIZE}")


async def check_app_destinations(
    app: app_pb2.App, policy: OutboundPolicy, prefix: str = ""
) -> None:
    """Every postback template URL of ``app`` must reach a destination the
    policy allows (host names resolved): :class:`InvalidArgument` listing
    each one that does not. Run after :func:`check_app` passed."""
    postbacks: Any = app.settings.postbacks
    urls = {
        f"{prefix}settings.postbacks[{partner}].{trigger}.url": template.url
        for partner, templates in postbacks.items()
        for trigger in POSTBACK_TRIGGERS
        if templates.HasField(trigger) and (template := getattr(templates, trigger)).url
    }
    problems = await asyncio.gather(*(policy.url_problem(url) for url in urls.values()))
    violations = [
        FieldViolation(path, f"{problem} ({ALLOW_HINT})")
        for path, problem in zip(urls, problems, strict=True)
        if problem is not None
    ]
    if violations:
        raise InvalidArgument(violations)


async def validate_app(app: app_pb2.App, policy: OutboundPolicy, prefix: str = "app.") -> None:
    """An app about to be written (by the settings API, and again by the
    store): :func:`check_app`, then :func:`check_app_destinations`."""
    v = Violations(prefix=prefix)
    check_app(v, app)
    v.raise_if_any()
    await check_app_destinations(app, policy, prefix)
