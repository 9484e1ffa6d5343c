"""``lookback scenario run``: replay scenario files through the real services.

A scenario is a timeline of touches, SRN claims, installs, opens and events
for one app, with expectations on chosen steps (format: docs/scenarios.md).
The runner

- validates every file first (exit 2 naming file, step and field; nothing of
  an invalid file runs);
- shifts each timeline so its last step falls now, keeping every gap;
- gives every app id a fresh suffix per run, so runs never meet;
- drives the suite through its HTTP gateway (so the whole pipeline is
  exercised), registers SRN claims with a fake SRN it runs, and receives
  postbacks on a local sink it runs (``{sink}`` in templates);
- without ``--target`` starts an ephemeral suite on loopback (embedded
  store) and tears it down afterwards.

Exit 0 when every expectation holds, 1 when any fails, 2 for an invalid file.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from lookback.domain.durations import parse_duration
from lookback.domain.settings import DURATION_SETTINGS
from lookback.testing.receiver import PostbackSink
from lookback.testing.srn import FakeSrn, start_fake_srn

STEP_KINDS = ("click", "impression", "srn_claim", "install", "open", "event")
SCALAR_EXPECTATIONS = (
    "kind",
    "media_source",
    "campaign",
    "click_id",
    "method",
    "touch_type",
    "reengagement_media_source",
)
EXPECTATIONS = (*SCALAR_EXPECTATIONS, "contributors", "rejected", "postbacks", "error")
SETTING_DURATIONS = DURATION_SETTINGS
SETTINGS = (
    *SETTING_DURATIONS,
    "click_lookback_by_source",
    "srn",
    "postbacks",
    "disable_click_injection_check",
)
TRIGGERS = ("install", "reattribution", "reengagement", "event")
DEVICE_TYPES = ("gaid", "idfa", "idfv", "oaid", "android_id", "imei", "fire_id")
POSTBACK_WAIT = 10.0
"""Seconds to wait for each expected postback."""
POSTBACK_QUIET = 0.3
"""Seconds to keep listening for unexpected postbacks once the expected ones arrived."""


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
            if name == "rejected" and not (
                isinstance(value, list)
                and all(isinstance(r, dict) and set(r) <= {"click_id", "reason"} for r in value)
            ):
                raise bad(f"{where}.expect.rejected", "must be a list of {click_id, reason}")
        if "error" not in expect:
            for path in _time_paths(kinds[0], body):
                try:
                    parse_time(_get(body, path))
                except ValueError as exc:
                    raise bad(f"{where}.{kinds[0]}.{'.'.join(path)}", str(exc)) from exc
    return Scenario(file, data["name"], app, steps)


def _check_duration(bad: Any, where: str, value: Any) -> None:
    if not isinstance(value, str):
        raise bad(where, "must be a duration string such as 7d")
    try:
        parse_duration(value)
    except ValueError as exc:
        raise bad(where, str(exc)) from exc


def _time_paths(kind: str, body: dict[str, Any]) -> list[tuple[str, ...]]:
    """Paths of the payload's own times, shifted like ``at`` when present."""
    paths: list[tuple[str, ...]] = []
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


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _device(spec: Any) -> Any:
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


@dataclass
class Runner:
    gateway: str
    sink: PostbackSink
    srn: FakeSrn
    session: aiohttp.ClientSession
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    _serial: Iterator[int] = field(default_factory=itertools.count)
    credited: set[str] = field(default_factory=set)
    """Postback sources already credited to a step: a duplicate report's
    decision repeats its original's id, but its postbacks were the original's."""

    async def _call(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        async with self.session.request(method, self.gateway + path, json=body) as r:
            try:
                return r.status, await r.json()
            except (aiohttp.ContentTypeError, json.JSONDecodeError):
                return r.status, {"error": {"code": f"HTTP_{r.status}", "message": await r.text()}}

    def _app_json(self, sc: Scenario, app_id: str) -> dict[str, Any]:
        s = dict(sc.app.get("settings", {}))
        settings: dict[str, Any] = {k: s[k] for k in SETTING_DURATIONS if k in s}
        if "click_lookback_by_source" in s:
            settings["click_lookback_by_source"] = s["click_lookback_by_source"]
        if "srn" in s:
            settings["srn_networks"] = s["srn"]
        if s.get("disable_click_injection_check"):
            settings["disable_click_injection_check"] = True
        postbacks = {}
        for partner, templates in s.get("postbacks", {}).items():
            postbacks[partner] = {
                trigger: {"url": url.replace("{sink}", self.sink.url)}
                for trigger, url in templates.items()
            }
        if postbacks:
            settings["postbacks"] = postbacks
        return {
            "app_id": app_id,
            "platform": sc.app.get("platform", "android"),
            "settings": settings,
        }

    def _request(
        self,
        kind: str,
        body: dict[str, Any],
        app_id: str,
        at: str,
        shift: timedelta,
        as_written: bool,
    ) -> tuple[str, Any]:
        b = dict(body)
        if not as_written:
            for path in _time_paths(kind, b):
                if path == ("preload", "preloaded_at"):
                    b["preload"] = {
                        **b["preload"],
                        "preloaded_at": _iso(parse_time(b["preload"]["preloaded_at"]) + shift),
                    }
                else:
                    b[path[0]] = _iso(parse_time(b[path[0]]) + shift)
        if "device" in b:
            b["device"] = _device(b["device"])
        if kind in ("click", "impression"):
            touch = {**b, "type": kind, "app_id": app_id, "engaged_at": at}
            return "/v1/touches", {"touches": [touch]}
        if kind == "install":
            referrer = {}
            if "install_referrer" in b:
                referrer["referrer"] = b.pop("install_referrer")
            for key in ("install_begin_at", "referrer_click_at"):
                if key in b:
                    referrer[key] = b.pop(key)
            if referrer:
                b["install_referrer"] = referrer
            return "/v1/installs", {**b, "app_id": app_id, "installed_at": at}
        if kind == "open":
            return "/v1/opens", {**b, "app_id": app_id, "opened_at": at}
        return "/v1/events", {**b, "app_id": app_id, "occurred_at": at}

    async def run(self, sc: Scenario) -> list[Failure]:
        failures: list[Failure] = []
        # A fresh suffix per run and per scenario: runs never meet, and two
        # files naming the same app in one run do not either.
        app_id = f"{sc.app['app_id']}.r{self.run_id}s{next(self._serial)}"
        last = max(parse_time(s["at"]) for s in sc.steps)
        shift = datetime.now(UTC) - last
        status, answer = await self._call("POST", "/v1/apps", self._app_json(sc, app_id))
        if status != 201:
            return [Failure(-1, "app", "created", answer.get("error", answer))]
        for i, step in enumerate(sc.steps):
            kind = next(k for k in STEP_KINDS if k in step)
            expect = step.get("expect", {})
            at = _iso(parse_time(step["at"]) + shift)
            if kind == "srn_claim":
                claim = step[kind]
                self.srn.claim(
                    claim.get("media_source", ""),
                    app_id,
                    claim.get("device", {}),
                    at,
                    campaign=claim.get("campaign", ""),
                    touch_type=claim.get("touch_type", "click"),
                    click_id=claim.get("click_id", ""),
                )
                continue
            path, body = self._request(kind, step[kind], app_id, at, shift, "error" in expect)
            status, answer = await self._call("POST", path, body)
            failures += await self._check(i, app_id, kind, expect, answer)
        return failures

    async def _check(
        self, i: int, app_id: str, kind: str, expect: dict[str, Any], answer: Any
    ) -> list[Failure]:
        error = answer.get("error") if isinstance(answer, dict) else None
        if "error" in expect:
            got = error.get("code") if error else "OK"
            return [] if got == expect["error"] else [Failure(i, "error", expect["error"], got)]
        if error:
            return [Failure(i, "error", "OK", f"{error.get('code')}: {error.get('message')}")]
        result = answer.get("decision") or answer.get("attribution") or {}
        failures = []
        for name in SCALAR_EXPECTATIONS:
            if name in expect and result.get(name, "") != expect[name]:
                failures.append(Failure(i, name, expect[name], result.get(name, "")))
        if (
            "contributors" in expect
            and list(result.get("contributors", [])) != expect["contributors"]
        ):
            failures.append(
                Failure(
                    i, "contributors", expect["contributors"], list(result.get("contributors", []))
                )
            )
        if "rejected" in expect:
            want = sorted((r.get("click_id", ""), r.get("reason", "")) for r in expect["rejected"])
            got = sorted(
                (r.get("click_id", ""), r.get("reason", "")) for r in result.get("rejected", [])
            )
            if want != got:
                failures.append(
                    Failure(i, "rejected", [list(w) for w in want], [list(g) for g in got])
                )
        # Postback job ids (sent as Idempotency-Key) are <source>:<partner>:<trigger>.
        if kind == "event":
            prefix = f"event:{app_id}:{result.get('event_id', '')}:"
        else:
            prefix = f"{result.get('decision_id', '')}:"
        first = prefix not in self.credited
        self.credited.add(prefix)
        if "postbacks" in expect:
            expected = set(expect["postbacks"])
            if first:
                failures += await self._check_postbacks(i, prefix, expected)
            elif expected:
                failures.append(Failure(i, "postbacks", sorted(expected), []))
        return failures

    def _partners(self, prefix: str) -> set[str]:
        partners = set()
        for r in self.sink.received:
            key = r.headers.get("Idempotency-Key", "")
            if key.startswith(prefix):
                partners.add(key[len(prefix) :].rsplit(":", 1)[0])
        return partners

    async def _check_postbacks(self, i: int, prefix: str, expected: set[str]) -> list[Failure]:
        # Wait (on the sink's arrivals) up to 10 s for the expected partners,
        # then listen a moment longer for partners that should get nothing.
        arrived = await self.sink.wait_until(
            lambda: expected <= self._partners(prefix), POSTBACK_WAIT
        )
        if arrived:
            await self.sink.wait_until(
                lambda: bool(self._partners(prefix) - expected), POSTBACK_QUIET
            )
        got = self._partners(prefix)
        return [] if got == expected else [Failure(i, "postbacks", sorted(expected), sorted(got))]


async def run_scenarios(
    scenarios: list[Scenario], target: str | None, srn_listen: str, as_json: bool
) -> int:
    host, _, port = srn_listen.rpartition(":")
    fake, fake_runner, fake_url = await start_fake_srn(host or "127.0.0.1", int(port or 0))
    sink = PostbackSink()
    await sink.start()
    suite = None
    tmp = None
    try:
        if target is None:
            from lookback.testing.suite import EphemeralSuite

            tmp = tempfile.TemporaryDirectory(prefix="lookback-scenarios-")
            suite = EphemeralSuite(Path(tmp.name), srn_endpoints={"*": fake_url})
            gateway = (await suite.start()).gateway_url
        else:
            gateway = target if target.startswith("http") else f"http://{target}"
        passed = failed = 0
        async with aiohttp.ClientSession() as session:
            runner = Runner(gateway, sink, fake, session)
            for sc in scenarios:
                failures = await runner.run(sc)
                ok = not failures
                passed, failed = passed + ok, failed + (not ok)
                if as_json:
                    print(
                        json.dumps(
                            {
                                "file": sc.file,
                                "name": sc.name,
                                "passed": ok,
                                "failures": [
                                    {
                                        "step": f.step,
                                        "field": f.field,
                                        "expected": f.expected,
                                        "actual": f.actual,
                                        "message": f.describe(),
                                    }
                                    for f in failures
                                ],
                            }
                        ),
                        flush=True,
                    )
                else:
                    print(f"{'PASS' if ok else 'FAIL'} {sc.file}: {sc.name}", flush=True)
                    for f in failures:
                        print(f"  {sc.file}: {f.describe()}", flush=True)
        if not as_json:
            print(f"scenarios: {passed} passed, {failed} failed")
        return 0 if failed == 0 else 1
    finally:
        if suite is not None:
            await suite.stop()
        if tmp is not None:
            tmp.cleanup()
        await sink.stop()
        await fake_runner.cleanup()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lookback scenario run", description="Replay scenario files through the suite."
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="scenario files or folders")
    parser.add_argument(
        "--target",
        help="HOST:PORT (or URL) of a running suite's HTTP gateway;"
        " without it an ephemeral suite is started",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per scenario")
    parser.add_argument(
        "--srn-listen",
        default="127.0.0.1:0",
        help="where the runner's fake SRN listens; a --target suite's SRN"
        " adapter must use it as its '*' endpoint",
    )
    ns = parser.parse_args(argv)
    scenarios, errors = load_files(ns.paths)
    for e in errors:
        print(f"invalid scenario: {e}", file=sys.stderr)
    if not scenarios and not errors:
        print("no scenario files found", file=sys.stderr)
        return 2
    code = (
        asyncio.run(run_scenarios(scenarios, ns.target, ns.srn_listen, ns.json)) if scenarios else 0
    )
    # Valid files still run; an invalid one (run not at all) makes the exit 2.
    return 2 if errors else code
