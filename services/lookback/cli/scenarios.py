"""``lookback scenario run``: replay scenario files through the real services.

A scenario is a timeline of touches, SRN claims, installs, opens, events
and erasure requests for one app, with expectations on chosen steps (format: docs/scenarios.md).
The runner

- validates every file first (exit 2 naming file, step and field; nothing of
  an invalid file runs);
- shifts each timeline so its last step falls now, keeping every gap;
- gives every app id a fresh suffix per run, so runs never meet;
- drives the suite through its HTTP gateway (so the whole pipeline is
  exercised) with the app's own keys (touches, and reports naming their
  device's ``ip``, with its ``s2s`` key, as the app's backend would send
  them; other reports with its ``sdk`` key; the app is created with the
  admin key), registers
  SRN claims with a fake SRN it runs, and receives
  postbacks on a local sink it runs (``{sink}`` in templates);
- without ``--target`` starts an ephemeral suite on loopback (embedded
  store, a fresh admin key) and tears it down afterwards; with ``--target``
  it presents ``--admin-key`` (or ``LOOKBACK_ADMIN_KEY``); an ``https``
  target is verified against ``--tls-ca`` (default ``$LOOKBACK_TLS_CA``),
  else the system's CAs.

Exit 0 when every expectation holds, 1 when any fails, 2 for an invalid file.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import ssl
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

from lookback.cli.options import add_admin_key, admin_key
from lookback.cli.scenario_files import (
    ERASURE_COUNTS,
    REPORT_DIMENSIONS,
    REPORT_METRICS,
    SCALAR_EXPECTATIONS,
    SETTING_DURATIONS,
    STEP_KINDS,
    Failure,
    Scenario,
    device_json,
    iso,
    load_files,
    parse_time,
    time_paths,
)
from lookback.core.auth import new_admin_key
from lookback.testing.http import LOCAL_CIDRS
from lookback.testing.receiver import PostbackSink
from lookback.testing.srn import FakeSrn, start_fake_srn

POSTBACK_WAIT = 10.0
"""Seconds to wait for each expected postback."""
POSTBACK_QUIET = 0.3
"""Seconds to keep listening for unexpected postbacks once the expected ones arrived."""


REPORT_WAIT = 5.0
"""Seconds a report step waits for its rows (decisions reach the reports
within about a second)."""
REPORT_POLL = 0.1

ERASE_WAIT = 60.0
"""Seconds an erase step waits for its erasure to complete."""
ERASE_POLL = 0.05
"""Seconds between two reads of a pending erasure."""
ERASE_SETTLE = 0.5
"""Seconds between an erasure's two passes in the runner's own suite (the
decider's ``erasure_settle``; a ``--target`` suite keeps its own)."""


def _metric_equal(name: str, want: Any, got: Any) -> bool:
    if name == "revenue":
        if not isinstance(want, dict):
            return False
        have = {k: Decimal(v) for k, v in (got or {}).items() if Decimal(v)}
        return have == {k: Decimal(str(v)) for k, v in want.items() if Decimal(str(v))}
    if name == "rejected_touches":
        if not isinstance(want, dict):
            return False
        counts = {k: int(v) for k, v in (got or {}).items() if int(v)}
        return counts == {k: int(v) for k, v in want.items() if int(v)}
    return int(got or 0) == int(want)


def _row_matches(row: dict[str, Any], want: dict[str, Any]) -> bool:
    for name, value in want.items():
        if name in REPORT_DIMENSIONS:
            if row.get(name, "") != value:
                return False
        elif not _metric_equal(name, value, row.get(name)):
            return False
    return True


def _row_counts(row: dict[str, Any]) -> bool:
    """True when the row counts anything."""
    for m in REPORT_METRICS:
        value = row.get(m)
        if isinstance(value, dict):
            if any(Decimal(str(v)) for v in value.values()):
                return True
        elif value and int(value):
            return True
    return False


def report_failures(i: int, rows: list[dict[str, Any]], expect: dict[str, Any]) -> list[Failure]:
    """Each expected row must be matched by a row of the report (its
    dimensions and the metrics it names); with ``rows_complete`` no other row
    may count anything."""
    failures = []
    matched: set[int] = set()
    for want in expect.get("rows", []):
        hits = [j for j, row in enumerate(rows) if _row_matches(row, want)]
        if not hits:
            dims = {k: v for k, v in want.items() if k in REPORT_DIMENSIONS}
            near = [r for r in rows if all(r.get(k, "") == v for k, v in dims.items())]
            failures.append(Failure(i, "rows", want, near or rows))
        matched.update(hits)
    if expect.get("rows_complete"):
        extra = [r for j, r in enumerate(rows) if j not in matched and _row_counts(r)]
        if extra:
            failures.append(Failure(i, "rows_complete", "no other rows", extra))
    return failures


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

    async def _call(self, method: str, path: str, body: Any, key: str = "") -> tuple[int, Any]:
        """Call the gateway with the session's (admin) key, or ``key``."""
        headers = {"Authorization": f"Bearer {key}"} if key else None
        async with self.session.request(
            method, self.gateway + path, json=body, headers=headers
        ) as r:
            try:
                return r.status, await r.json()
            except (aiohttp.ContentTypeError, json.JSONDecodeError):
                return r.status, {"error": {"code": f"HTTP_{r.status}", "message": await r.text()}}

    def _app_json(self, sc: Scenario, app_id: str) -> dict[str, Any]:
        return {
            "app_id": app_id,
            "platform": sc.app.get("platform", "android"),
            "settings": self._settings_json(sc.app.get("settings", {})),
        }

    def _settings_json(self, given: dict[str, Any]) -> dict[str, Any]:
        """A scenario's settings object as the settings API takes it."""
        s = dict(given)
        settings: dict[str, Any] = {k: s[k] for k in SETTING_DURATIONS if k in s}
        if "click_lookback_by_source" in s:
            settings["click_lookback_by_source"] = s["click_lookback_by_source"]
        if "srn" in s:
            settings["srn_networks"] = s["srn"]
        if s.get("disable_click_injection_check"):
            settings["disable_click_injection_check"] = True
        if "blocked_ips" in s:
            settings["blocked_ips"] = s["blocked_ips"]
        postbacks = {}
        for partner, templates in s.get("postbacks", {}).items():
            postbacks[partner] = {
                trigger: {"url": url.replace("{sink}", self.sink.url)}
                for trigger, url in templates.items()
            }
        if postbacks:
            settings["postbacks"] = postbacks
        return settings

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
            for path in time_paths(kind, b):
                if path == ("preload", "preloaded_at"):
                    b["preload"] = {
                        **b["preload"],
                        "preloaded_at": iso(parse_time(b["preload"]["preloaded_at"]) + shift),
                    }
                else:
                    b[path[0]] = iso(parse_time(b[path[0]]) + shift)
        if "device" in b:
            b["device"] = device_json(b["device"])
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
        reports = [s["report"] for s in sc.steps if "report" in s]
        if reports:
            # Reports count in whole UTC hours (days): shifted by whole ones,
            # the timeline's hours (days) stay its own, and the last step
            # falls within the hour (day) before now.
            unit = timedelta(days=1 if any(r.get("bucket") == "day" for r in reports) else 0)
            unit = unit or timedelta(hours=1)
            shift = (shift // unit) * unit
        status, answer = await self._call("POST", "/v1/apps", self._app_json(sc, app_id))
        if status != 201:
            return [Failure(-1, "app", "created", answer.get("error", answer))]
        # The app's own keys from here on, as its SDK and its backend hold them:
        # touches with the s2s key, reports with the sdk key.
        keys = answer["keys"]
        began = datetime.now(UTC)
        decided: list[tuple[datetime, datetime]] = []
        """(the step's shifted time, when it was decided) of each install step."""
        for i, step in enumerate(sc.steps):
            kind = next(k for k in STEP_KINDS if k in step)
            expect = step.get("expect", {})
            at = iso(parse_time(step["at"]) + shift)
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
            if kind == "report":
                first = min(parse_time(s["at"]) for s in sc.steps) + shift
                failures += await self._report(
                    i, app_id, step[kind], expect, keys["s2s"], shift, first, at
                )
                continue
            if kind == "erase":
                failures += await self._erase(i, app_id, step[kind], expect, keys["s2s"])
                continue
            if kind == "whatif":
                failures += await self._whatif(
                    i, app_id, step[kind], expect, keys["s2s"], shift, began, decided
                )
                continue
            path, body = self._request(kind, step[kind], app_id, at, shift, "error" in expect)
            # An SDK's own address is the request's; a report naming its
            # device's ``ip`` comes from the app's backend, with the s2s key.
            server_to_server = path == "/v1/touches" or "ip" in body
            key = keys["s2s"] if server_to_server else keys["sdk"]
            status, answer = await self._call("POST", path, body, key)
            failures += await self._check(i, app_id, kind, expect, answer)
            made = answer.get("decision", {}) if isinstance(answer, dict) else {}
            if kind == "install" and made.get("decided_at"):
                decided.append((parse_time(at), parse_time(made["decided_at"])))
            if "explain" in expect and made.get("decision_id"):
                failures += await self._explain(i, app_id, made["decision_id"], expect, keys["s2s"])
        return failures

    async def _explain(
        self, i: int, app_id: str, decision_id: str, expect: dict[str, Any], key: str
    ) -> list[Failure]:
        """Each named candidate must be explained as expected (OUTCOMES.md section 4)."""
        path = f"/v1/apps/{app_id}/decisions/{decision_id}:explain"
        status, answer = await self._call("GET", path, None, key)
        if status != 200:
            return [Failure(i, "explain", "OK", answer.get("error", answer))]
        candidates = answer.get("explanation", {}).get("candidates", [])
        failures = []
        for want in expect["explain"]:
            name = "click_id" if "click_id" in want else "campaign"
            found = [c for c in candidates if c.get(name) == want[name]]
            if not found:
                failures.append(Failure(i, f"explain[{want[name]}]", want, "not a candidate"))
                continue
            got = found[0]
            checks = {"verdict": got.get("verdict")}
            if "reason" in want:
                checks["reason"] = got.get("reason", "")
            if "contributor" in want:
                checks["contributor"] = bool(got.get("contributor"))
            for field_name, value in checks.items():
                if want.get(field_name, value) != value:
                    failures.append(
                        Failure(i, f"explain[{want[name]}].{field_name}", want[field_name], value)
                    )
        return failures

    async def _erase(
        self, i: int, app_id: str, body: dict[str, Any], expect: dict[str, Any], key: str
    ) -> list[Failure]:
        """An erasure request for the step's device (ATTRIBUTION_RULES.md
        section 9) with the app's ``s2s`` key, then read again every
        :data:`ERASE_POLL` seconds until it has completed (a failure after
        :data:`ERASE_WAIT`); ``expect.erased`` checks the counts it names."""
        request = {"devices": [device_json(body["device"])]}
        status, answer = await self._call("POST", f"/v1/apps/{app_id}/erasures", request, key)
        error = answer.get("error") if isinstance(answer, dict) else None
        if "error" in expect:
            got = error.get("code") if error else "OK"
            return [] if got == expect["error"] else [Failure(i, "error", expect["error"], got)]
        if status != 202 or error or not isinstance(answer, dict):
            return [Failure(i, "erase", "accepted", error or answer)]
        path = f"/v1/apps/{app_id}/erasures/{quote(str(answer.get('erasure_id', '')), safe='')}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ERASE_WAIT
        while answer.get("state") != "completed":
            if loop.time() > deadline:
                progress = f"{answer.get('devices_done', 0)}/{answer.get('devices', 0)} devices"
                return [
                    Failure(
                        i,
                        "erase",
                        f"completed within {ERASE_WAIT:g}s",
                        f"{answer.get('state')} ({progress})",
                    )
                ]
            await asyncio.sleep(ERASE_POLL)
            status, answer = await self._call("GET", path, None, key)
            if status != 200 or not isinstance(answer, dict):
                got = answer.get("error", answer) if isinstance(answer, dict) else answer
                return [Failure(i, "erase", "OK", got)]
        erased = answer.get("erased", {})
        return [
            Failure(i, f"erased.{name}", want, erased.get(name, 0))
            for name, want in expect.get("erased", {}).items()
            if name in ERASURE_COUNTS and erased.get(name, 0) != want
        ]

    async def _whatif(
        self,
        i: int,
        app_id: str,
        body: dict[str, Any],
        expect: dict[str, Any],
        key: str,
        shift: timedelta,
        began: datetime,
        decided: list[tuple[datetime, datetime]],
    ) -> list[Failure]:
        """A simulation (OUTCOMES.md section 5) over the installs decided so
        far; ``from``/``to`` (scenario times) choose the installs whose steps
        lie in them, by the times those were decided."""
        start, end = began, datetime.now(UTC) + timedelta(seconds=1)
        if "from" in body or "to" in body:
            low = parse_time(body["from"]) + shift if "from" in body else None
            high = parse_time(body["to"]) + shift if "to" in body else None
            chosen = [
                real
                for at, real in decided
                if (low is None or at >= low) and (high is None or at < high)
            ]
            if chosen:
                start, end = min(chosen), max(chosen) + timedelta(microseconds=1)
            else:
                start, end = began, began + timedelta(microseconds=1)
        request = {
            "settings": self._settings_json(body["settings"]),
            "start_time": iso(start),
            "end_time": iso(end),
        }
        headers = {"Authorization": f"Bearer {key}"}
        url = f"{self.gateway}/v1/apps/{app_id}/installs:simulate"
        pages = []
        async with self.session.post(url, json=request, headers=headers) as r:
            if r.status != 200:
                return [Failure(i, "whatif", "OK", await r.text())]
            async for line in r.content:
                if line.strip():
                    pages.append(json.loads(line))
        if not pages or "error" in pages[-1] or not pages[-1].get("done"):
            return [Failure(i, "whatif", "done", pages[-1] if pages else "no answer")]
        changed = sorted(
            (item["install_id"], item.get("after", {}).get("media_source", ""))
            for page in pages
            for item in page.get("installs", [])
            if not item.get("not_replayable")
        )
        if "changed" not in expect:
            return []
        got = dict(changed)
        want = {c["install_id"]: c.get("media_source") for c in expect["changed"]}
        if set(got) != set(want) or any(m is not None and got[a] != m for a, m in want.items()):
            return [Failure(i, "changed", expect["changed"], [list(c) for c in changed])]
        return []

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
        # Unset (null) when the decision carries no deep link.
        if (
            "match_guaranteed" in expect
            and result.get("match_guaranteed") != expect["match_guaranteed"]
        ):
            failures.append(
                Failure(
                    i,
                    "match_guaranteed",
                    expect["match_guaranteed"],
                    result.get("match_guaranteed"),
                )
            )
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

    async def _report(
        self,
        i: int,
        app_id: str,
        body: dict[str, Any],
        expect: dict[str, Any],
        key: str,
        shift: timedelta,
        first: datetime,
        at: str,
    ) -> list[Failure]:
        """A report query, retried until its rows are as expected or
        :data:`REPORT_WAIT` has passed (a decision is in the reports within
        about a second of being made)."""
        start = iso(parse_time(body["from"]) + shift) if "from" in body else iso(first)
        end = (
            iso(parse_time(body["to"]) + shift)
            if "to" in body
            else iso(parse_time(at) + timedelta(seconds=1))
        )
        query = {"start_time": start, "end_time": end}
        if "bucket" in body:
            query["bucket"] = body["bucket"]
        if body.get("group_by"):
            query["group_by"] = ",".join(body["group_by"])
        path = f"/v1/apps/{app_id}/reports?" + urlencode(query)
        deadline = asyncio.get_running_loop().time() + REPORT_WAIT
        while True:
            status, answer = await self._call("GET", path, None, key)
            if status != 200:
                return [Failure(i, "report", "OK", answer.get("error", answer))]
            failures = report_failures(i, answer.get("rows", []), expect)
            if not failures or asyncio.get_running_loop().time() > deadline:
                return failures
            await asyncio.sleep(REPORT_POLL)

    def _partners(self, prefix: str) -> set[str]:
        """The partners whose postbacks of ``prefix`` (a decision's, or an
        event's) arrived; a decision's rejected-touch postbacks are
        ``<decision id>/r<n>:<partner>:rejected``."""
        partners = set()
        rejected = prefix[:-1] + "/r"
        for r in self.sink.received:
            key = r.headers.get("Idempotency-Key", "")
            if key.startswith(prefix):
                partners.add(key[len(prefix) :].rsplit(":", 1)[0])
            elif key.startswith(rejected) and ":" in key:
                partners.add(key.split(":", 1)[1].rsplit(":", 1)[0])
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
    scenarios: list[Scenario],
    target: str | None,
    srn_listen: str,
    as_json: bool,
    admin_key: str = "",
    ssl_context: ssl.SSLContext | None = None,
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
            admin_key = new_admin_key()
            # The runner's fake SRN and postback sink are local: allowed explicitly.
            suite = EphemeralSuite(
                Path(tmp.name),
                srn_endpoints={"*": fake_url},
                admin_key=admin_key,
                outbound_allow_cidrs=LOCAL_CIDRS,
                # An erasure's second pass catches decisions in flight during
                # its first; the runner's steps run one after another (none is
                # in flight), so a short pause keeps erase steps quick.
                decider_overrides={"erasure_settle": ERASE_SETTLE},
            )
            gateway = (await suite.start()).gateway_url
        else:
            gateway = target if target.startswith("http") else f"http://{target}"
        passed = failed = 0
        headers = {"Authorization": f"Bearer {admin_key}"}
        connector = aiohttp.TCPConnector(ssl=ssl_context or True)
        async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
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
        " adapter must use it as its '*' endpoint (and the suite must allow"
        " loopback destinations: --outbound-allow-cidrs 127.0.0.0/8)",
    )
    add_admin_key(parser)
    parser.add_argument(
        "--tls-ca",
        default=os.environ.get("LOOKBACK_TLS_CA", ""),
        help="PEM CA bundle an https --target is verified against"
        " (default $LOOKBACK_TLS_CA; none: the system's CAs)",
    )
    ns = parser.parse_args(argv)
    ssl_context = ssl.create_default_context(cafile=ns.tls_ca) if ns.tls_ca else None
    key = admin_key(ns, "lookback scenario run") if ns.target else ""
    scenarios, errors = load_files(ns.paths)
    for e in errors:
        print(f"invalid scenario: {e}", file=sys.stderr)
    if not scenarios and not errors:
        print("no scenario files found", file=sys.stderr)
        return 2
    code = (
        asyncio.run(run_scenarios(scenarios, ns.target, ns.srn_listen, ns.json, key, ssl_context))
        if scenarios
        else 0
    )
    # Valid files still run; an invalid one (run not at all) makes the exit 2.
    return 2 if errors else code
