"""Scenario files: their format checked before anything runs, and their
timelines read (times, devices). See docs/scenarios.md; the runner is
:mod:`lookback.cli.scenarios`."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lookback.domain.durations import parse_duration
from lookback.domain.postbacks import POSTBACK_TRIGGERS
from lookback.domain.settings import DURATION_SETTINGS

STEP_KINDS = (
    "click",
    "impression",
    "srn_claim",
    "install",
    "open",
    "event",
    "erase",
    "report",
    "whatif",
)
VERDICTS = (
    "winner",
    "lost_to_higher_tier",
    "lost_to_newer",
    "outside_window",
    "after_install",
    "rejected",
    "privacy",
    "disabled",
    "fingerprint_mismatch",
    "not_retargeting",
)
EXPLAIN_FIELDS = ("click_id", "campaign", "verdict", "reason", "contributor")
REPORT_DIMENSIONS = ("media_source", "campaign", "kind")
REPORT_METRICS = (
    "clicks",
    "impressions",
    "installs",
    "reattributions",
    "reinstalls",
    "reengagements",
    "rejected_touches",
    "events",
    "revenue",
)
SCALAR_EXPECTATIONS = (
    "kind",
    "media_source",
    "campaign",
    "click_id",
    "method",
    "touch_type",
    "reengagement_media_source",
    "deep_link_value",
)
EXPECTATIONS = (
    *SCALAR_EXPECTATIONS,
    "match_guaranteed",
    "contributors",
    "rejected",
    "postbacks",
    "error",
    "rows",
    "rows_complete",
    "explain",
    "changed",
    "erased",
)
ERASURE_COUNTS = ("touches", "installs", "decisions", "events", "postbacks")
"""What an ``erase`` step's ``expect.erased`` may count (an erasure's counts)."""
SETTING_DURATIONS = DURATION_SETTINGS
SETTINGS = (
    *SETTING_DURATIONS,
    "click_lookback_by_source",
    "srn",
    "postbacks",
    "disable_click_injection_check",
    "blocked_ips",
)
TRIGGERS = POSTBACK_TRIGGERS
DEVICE_TYPES = ("gaid", "idfa", "idfv", "oaid", "android_id", "imei", "fire_id")


class InvalidScenario(Exception):
    def __init__(self, file: str, where: str, message: str) -> None:
        super().__init__(f"{file}: {where}: {message}")


@dataclass(frozen=True)
class Failure:
    step: int
    field: str
    expected: Any
    actual: Any

    def describe(self) -> str:
        return f"step {self.step}: {self.field}: expected {self.expected!r}, got {self.actual!r}"


@dataclass
class Scenario:
    file: str
    name: str
    app: dict[str, Any]
    steps: list[dict[str, Any]]


# --- validation -------------------------------------------------------------


def parse_time(text: Any) -> datetime:
    if not isinstance(text, str) or not text:
        raise ValueError("must be an ISO-8601 UTC time string")
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError("must name its zone (e.g. end with Z)")
    return dt.astimezone(UTC)


def validate(file: str, data: Any) -> Scenario:
    """Check the file's structure; raises :class:`InvalidScenario`."""

    def bad(where: str, message: str) -> InvalidScenario:
        return InvalidScenario(file, where, message)

    if not isinstance(data, dict):
        raise bad("file", "must be a JSON object")
    if not isinstance(data.get("name"), str) or not data["name"]:
        raise bad("name", "is required (a string)")
    app = data.get("app")
    if not isinstance(app, dict):
        raise bad("app", "is required (an object)")
    if not isinstance(app.get("app_id"), str) or not app["app_id"]:
        raise bad("app.app_id", "is required (a string)")
    if app.get("platform", "android") not in ("android", "ios", "other"):
        raise bad("app.platform", "must be android, ios or other")
    settings = app.get("settings", {})
    if not isinstance(settings, dict):
        raise bad("app.settings", "must be an object")
    for key, value in settings.items():
        where = f"app.settings.{key}"
        if key not in SETTINGS:
            raise bad(where, "is not a known setting")
        if key in SETTING_DURATIONS:
            _check_duration(bad, where, value)
        elif key == "click_lookback_by_source":
            if not isinstance(value, dict):
                raise bad(where, "must map media sources to durations")
            for source, d in value.items():
                _check_duration(bad, f"{where}.{source}", d)
        elif key == "srn":
            if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
                raise bad(where, "must be a list of network names")
        elif key == "blocked_ips":
            if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
                raise bad(where, "must be a list of CIDRs")
        elif key == "postbacks":
            if not isinstance(value, dict):
                raise bad(where, "must map partners to templates by trigger")
            for partner, templates in value.items():
                if not isinstance(templates, dict):
                    raise bad(f"{where}.{partner}", "must map triggers to URL templates")
                for trigger, url in templates.items():
                    if trigger not in TRIGGERS:
                        raise bad(f"{where}.{partner}.{trigger}", f"must be one of {TRIGGERS}")
                    if not isinstance(url, str):
                        raise bad(f"{where}.{partner}.{trigger}", "must be a URL template string")
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps:
        raise bad("steps", "must be a non-empty list")
    for i, step in enumerate(steps):
        where = f"step {i}"
        if not isinstance(step, dict):
            raise bad(where, "must be an object")
        try:
            parse_time(step.get("at"))
        except ValueError as exc:
            raise bad(f"{where}.at", str(exc)) from exc
        kinds = [k for k in step if k in STEP_KINDS]
        if len(kinds) != 1:
            raise bad(where, f"must have exactly one of {', '.join(STEP_KINDS)}")
        extra = [k for k in step if k not in (*STEP_KINDS, "at", "expect")]
        if extra:
            raise bad(f"{where}.{extra[0]}", "is not a known step field")
        body = step[kinds[0]]
        if not isinstance(body, dict):
            raise bad(f"{where}.{kinds[0]}", "must be an object")
        expect = step.get("expect", {})
        if not isinstance(expect, dict):
            raise bad(f"{where}.expect", "must be an object")
        for name, value in expect.items():
            if name not in EXPECTATIONS:
                raise bad(f"{where}.expect.{name}", "is not a known expectation")
            if name in ("contributors", "postbacks") and not isinstance(value, list):
                raise bad(f"{where}.expect.{name}", "must be a list")
            if name == "match_guaranteed" and value is not None and not isinstance(value, bool):
                raise bad(f"{where}.expect.{name}", "must be true, false or null (no deep link)")
            if name == "rejected" and not (
                isinstance(value, list)
                and all(isinstance(r, dict) and set(r) <= {"click_id", "reason"} for r in value)
            ):
                raise bad(f"{where}.expect.rejected", "must be a list of {click_id, reason}")
        if kinds[0] == "report":
            _check_report(bad, where, body, expect)
        elif "rows" in expect or "rows_complete" in expect:
            raise bad(f"{where}.expect.rows", "is only for report steps")
        if kinds[0] == "whatif":
            _check_whatif(bad, where, body, expect)
        elif "changed" in expect:
            raise bad(f"{where}.expect.changed", "is only for whatif steps")
        if kinds[0] == "erase":
            _check_erase(bad, where, body, expect)
        elif "erased" in expect:
            raise bad(f"{where}.expect.erased", "is only for erase steps")
        if "explain" in expect:
            _check_explain(bad, f"{where}.expect.explain", expect["explain"])
        if "error" not in expect:
            for path in time_paths(kinds[0], body):
                try:
                    parse_time(_get(body, path))
                except ValueError as exc:
                    raise bad(f"{where}.{kinds[0]}.{'.'.join(path)}", str(exc)) from exc
    return Scenario(file, data["name"], app, steps)


def _check_report(bad: Any, where: str, body: dict[str, Any], expect: dict[str, Any]) -> None:
    extra = [k for k in body if k not in ("bucket", "group_by", "from", "to")]
    if extra:
        raise bad(f"{where}.report.{extra[0]}", "is not a report field")
    if body.get("bucket", "hour") not in ("hour", "day"):
        raise bad(f"{where}.report.bucket", "must be hour or day (omitted: totals)")
    group_by = body.get("group_by", [])
    if not isinstance(group_by, list) or not all(d in REPORT_DIMENSIONS for d in group_by):
        raise bad(f"{where}.report.group_by", f"must be a list of {', '.join(REPORT_DIMENSIONS)}")
    rows = expect.get("rows", [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise bad(f"{where}.expect.rows", "must be a list of rows (objects)")
    for j, row in enumerate(rows):
        for key in row:
            if key not in (*REPORT_DIMENSIONS, *REPORT_METRICS):
                raise bad(f"{where}.expect.rows[{j}].{key}", "is not a dimension or a metric")
    if not isinstance(expect.get("rows_complete", False), bool):
        raise bad(f"{where}.expect.rows_complete", "must be true or false")


def _check_explain(bad: Any, where: str, value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(c, dict) for c in value):
        raise bad(where, "must be a list of candidates (objects)")
    for j, c in enumerate(value):
        extra = [k for k in c if k not in EXPLAIN_FIELDS]
        if extra:
            raise bad(f"{where}[{j}].{extra[0]}", f"is not one of {', '.join(EXPLAIN_FIELDS)}")
        if "click_id" not in c and "campaign" not in c:
            raise bad(f"{where}[{j}]", "must name its candidate by click_id or campaign")
        if c.get("verdict") not in VERDICTS:
            raise bad(f"{where}[{j}].verdict", f"must be one of {', '.join(VERDICTS)}")
        if "contributor" in c and not isinstance(c["contributor"], bool):
            raise bad(f"{where}[{j}].contributor", "must be true or false")


def _check_whatif(bad: Any, where: str, body: dict[str, Any], expect: dict[str, Any]) -> None:
    extra = [k for k in body if k not in ("settings", "from", "to")]
    if extra:
        raise bad(f"{where}.whatif.{extra[0]}", "is not a whatif field")
    settings = body.get("settings")
    if not isinstance(settings, dict):
        raise bad(f"{where}.whatif.settings", "is required (a partial settings object)")
    for key, value in settings.items():
        if key not in SETTINGS:
            raise bad(f"{where}.whatif.settings.{key}", "is not a known setting")
        if key in SETTING_DURATIONS:
            _check_duration(bad, f"{where}.whatif.settings.{key}", value)
    changed = expect.get("changed", [])
    if not isinstance(changed, list) or not all(
        isinstance(c, dict) and set(c) <= {"install_id", "media_source"} and "install_id" in c
        for c in changed
    ):
        raise bad(f"{where}.expect.changed", "must be a list of {install_id, media_source}")


def _check_erase(bad: Any, where: str, body: dict[str, Any], expect: dict[str, Any]) -> None:
    extra = [k for k in body if k != "device"]
    if extra:
        raise bad(f"{where}.erase.{extra[0]}", "is not an erase field")
    if not isinstance(body.get("device"), dict) or not body["device"]:
        raise bad(f"{where}.erase.device", "is required (the device's identifiers)")
    other = [k for k in expect if k not in ("erased", "error")]
    if other:
        raise bad(f"{where}.expect.{other[0]}", "is not checked on erase steps (erased, error)")
    erased = expect.get("erased", {})
    if not isinstance(erased, dict):
        raise bad(f"{where}.expect.erased", "must map counts to numbers")
    for name, value in erased.items():
        if name not in ERASURE_COUNTS:
            raise bad(f"{where}.expect.erased.{name}", f"is not one of {', '.join(ERASURE_COUNTS)}")
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise bad(f"{where}.expect.erased.{name}", "must be a whole number")


def _check_duration(bad: Any, where: str, value: Any) -> None:
    if not isinstance(value, str):
        raise bad(where, "must be a duration string such as 7d")
    try:
        parse_duration(value)
    except ValueError as exc:
        raise bad(where, str(exc)) from exc


def time_paths(kind: str, body: dict[str, Any]) -> list[tuple[str, ...]]:
    """Paths of the payload's own times, shifted like ``at`` when present."""
    paths: list[tuple[str, ...]] = []
    if kind in ("report", "whatif"):
        paths += [(k,) for k in ("from", "to") if k in body]
    if kind == "install":
        paths += [(k,) for k in ("install_begin_at", "referrer_click_at") if k in body]
        if isinstance(body.get("preload"), dict) and "preloaded_at" in body["preload"]:
            paths.append(("preload", "preloaded_at"))
    return paths


def _get(body: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = body
    for key in path:
        value = value[key]
    return value


def load_files(paths: Iterable[str]) -> tuple[list[Scenario], list[str]]:
    """Read and validate every file; returns the scenarios and the errors."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*.json") if f.is_file())
        else:
            files.append(p)
    scenarios, errors = [], []
    for f in files:
        try:
            data = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            errors.append(f"{f}: file: cannot read JSON: {exc}")
            continue
        try:
            scenarios.append(validate(str(f), data))
        except InvalidScenario as exc:
            errors.append(str(exc))
    return scenarios, errors


# --- running ---------------------------------------------------------------


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def device_json(spec: Any) -> Any:
    """Scenario device (raw ids, ``sha1_gaid``/``md5_idfa`` for hashed) to API JSON."""
    if not isinstance(spec, dict):
        return spec
    out: dict[str, Any] = {}
    hashed = []
    for key, value in spec.items():
        algorithm, _, id_type = key.partition("_")
        if algorithm in ("sha1", "md5") and id_type in DEVICE_TYPES:
            hashed.append({"type": id_type, "algorithm": algorithm, "value": value})
        else:
            out[key] = value
    if hashed:
        out["hashed"] = hashed
    return out
