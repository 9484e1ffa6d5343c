"""Request validation: every bad field is named, nothing half-accepted.

Each ``check_*`` function collects all violations of one message and raises
:class:`~lookback.core.errors.InvalidArgument` listing them. ``now`` is passed
in so validation stays deterministic.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2

from lookback.api.types.v1 import app_pb2, device_pb2, install_pb2, postback_pb2, touch_pb2
from lookback.core.convert import dur_to_micros, ts_to_micros
from lookback.core.errors import Violations
from lookback.domain.durations import HOUR
from lookback.domain.model import Micros
from lookback.domain.postbacks import unknown_macros
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


def _check_id(v: Violations, value: str, path: str, required: bool = True) -> None:
    if not value:
        if required:
            v.add(path, "is required")
        return
    if not _ID.fullmatch(value):
        v.add(path, "must be 1 to 200 characters of letters, digits and . _ : -")


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
    unknown = unknown_macros(t.url) + unknown_macros(t.body)
    if unknown:
        v.add(f"{path}.url", f"unknown macros: {', '.join(unknown)}")
    if t.method not in postback_pb2.HttpMethod.values():
        v.add(f"{path}.method", "must be GET or POST")


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
    for i, network in enumerate(s.srn_networks):
        check_media_source(v, network, f"settings.srn_networks[{i}]")
    for partner, templates in s.postbacks.items():
        check_media_source(v, partner, f"settings.postbacks[{partner}]")
        for trigger in ("install", "reattribution", "reengagement", "event"):
            if templates.HasField(trigger):
                _check_template(
                    v, getattr(templates, trigger), f"settings.postbacks[{partner}].{trigger}"
                )
