"""``lookback explain`` and ``lookback whatif``, over the decider's ExplainService.

lookback explain APP_ID INSTALL_ID [--decision ID] [--json]
    why the install's decision came out as it did: every candidate touch
    and its verdict, as a table
lookback whatif APP_ID --set NAME=VALUE [--set ...] [--since 24h | --from ISO [--to ISO]]
    [--page-size N] [--json]
    which installs of the range another setting would give to someone
    else (nothing is changed); progress on standard error; Ctrl-C cancels

``--target HOST:PORT`` is the decider (``lookback up``: 7402); ``--admin-key``
(or ``LOOKBACK_ADMIN_KEY``; an app's ``s2s`` key works for its own app) and
the TLS flags as for the other tools. ``--set`` takes the settings' JSON
names and values as the settings API does: ``click_lookback=3d``,
``probabilistic_view_lookback=12h``, ``min_ctit=0``,
``disable_click_injection_check=true``, ``click_lookback_by_source={"networka":"2d"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

import grpc

from lookback.api.explain.v1 import explain_service_pb2 as pb
from lookback.api.explain.v1 import explain_service_pb2_grpc as pb_grpc
from lookback.cli.options import add_admin_key, admin_key
from lookback.cli.tlsargs import add_tls_arguments, client_tls
from lookback.core import clients, convert, jsonapi, wire
from lookback.core.clock import now_micros
from lookback.core.config import ConfigError
from lookback.core.errors import LookbackError
from lookback.domain.durations import parse_duration

CANDIDATE_COLUMNS = ("verdict", "media_source", "campaign", "click_id", "type", "method", "engaged")


def _text_table(head: Sequence[str], rows: list[list[str]]) -> list[str]:
    lines = [list(head), *rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    ]


def _short(enum_json: str) -> str:
    return enum_json or "-"


def _decision_line(d: dict[str, Any]) -> str:
    who = d.get("media_source", "organic")
    if d.get("campaign"):
        who += f" / {d['campaign']}"
    how = d.get("method", "none")
    touch = f" click {d['click_id']}" if d.get("click_id") else ""
    return f"{d.get('kind', '')}: {who} by {how}{touch}"


def explanation_table(answer: pb.ExplainDecisionResponse) -> str:
    """The decision, then each candidate with its verdict and the detail
    the verdict carries (the window, the fraud rule, the contributor mark)."""
    data = jsonapi.dump(answer, defaults=True)
    decision, explanation = data["decision"], data.get("explanation", {})
    out = [
        f"decision {decision['decision_id']} for install {decision['install_id']}"
        f" (settings version {explanation.get('settings_version', '?')})",
        f"  {_decision_line(decision)}",
    ]
    if decision.get("contributors"):
        out.append(f"  contributors: {', '.join(decision['contributors'])}")
    rows = []
    for c in explanation.get("candidates", []):
        detail = []
        if c.get("verdict") == "outside_window" and c.get("window"):
            detail.append(f"window {c['window']}")
        if c.get("verdict") == "rejected" and c.get("reason"):
            detail.append(c["reason"])
        if c.get("contributor"):
            detail.append("contributor")
        if c.get("is_retargeting"):
            detail.append("retargeting")
        rows.append(
            [
                c.get("verdict", ""),
                c.get("media_source") or "-",
                c.get("campaign") or "-",
                c.get("click_id") or "-",
                _short(c.get("touch_type", "")),
                _short(c.get("method", "")),
                c.get("engaged_at", "-"),
                ", ".join(detail),
            ]
        )
    if rows:
        out += ["", *_text_table([*CANDIDATE_COLUMNS, "detail"], rows)]
    else:
        out += ["", "(no candidate touch: nothing of this device was stored)"]
    return "\n".join(out)


def _channel(ns: argparse.Namespace, tool: str) -> tuple[Any, Any] | None:
    try:
        tls = client_tls(ns)
    except ConfigError as exc:
        print(f"{tool}: {exc}", file=sys.stderr)
        return None
    return clients.channel(ns.target, tls), admin_key(ns, tool)


async def _explain(ns: argparse.Namespace) -> int:
    opened = _channel(ns, "lookback explain")
    if opened is None:
        return 2
    channel, key = opened
    stub = clients.stub(pb_grpc.ExplainServiceStub, channel, 30.0, key)
    try:
        answer = await stub.ExplainDecision(
            pb.ExplainDecisionRequest(
                app_id=ns.app_id,
                install_id="" if ns.decision else ns.install_id,
                decision_id=ns.decision,
            )
        )
    except LookbackError as exc:
        print(f"lookback explain: {exc.code.name}: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await channel.close()
    if ns.json:
        print(json.dumps(jsonapi.dump(answer, defaults=True), indent=2, sort_keys=True))
    else:
        print(explanation_table(answer))
    return 0


def parse_settings(pairs: Sequence[str]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs as a partial settings object: ``true``,
    ``false``, an object or a list are taken as JSON, anything else (``3d``,
    ``0``) as a string."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--set {pair!r}: give NAME=VALUE")
        if value in ("true", "false") or value[:1] in ("{", "["):
            try:
                out[name] = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"--set {pair!r}: {exc}") from exc
        else:
            out[name] = value
    return out


def _change_line(d: dict[str, Any]) -> str:
    """A decision as the what-if table shows it: who, and what else it lists."""
    line = _decision_line(d)
    if d.get("contributors"):
        line += f"; contributors {', '.join(d['contributors'])}"
    rejected = [f"{r.get('click_id', '')} {r.get('reason', '')}" for r in d.get("rejected", [])]
    if rejected:
        line += f"; rejected {', '.join(rejected)}"
    return line


def _changes_table(items: list[dict[str, Any]]) -> str:
    """Each install with its decision before and after (or why it cannot be replayed)."""
    out = []
    for i in items:
        out.append(i["install_id"])
        out.append(f"  before: {_change_line(i['before'])}")
        if i.get("not_replayable"):
            gone = ", ".join(i.get("missing_click_ids", [])) or "no explanation recorded"
            out.append(f"  after:  not replayable ({gone})")
        else:
            out.append(f"  after:  {_change_line(i['after'])}")
    return "\n".join(out)


def _progress(page: pb.SimulateResponse, start: int, end: int) -> str:
    reached = convert.ts_to_micros(page.reached)
    share = 100.0 if page.done else 100.0 * (end - reached) / max(1, end - start)
    return (
        f"\r{share:5.1f}%  {page.examined} installs examined,"
        f" {page.changed} would change, {page.not_replayable} not replayable"
    )


async def _whatif(ns: argparse.Namespace) -> int:
    try:
        change = parse_settings(ns.set)
    except ValueError as exc:
        print(f"lookback whatif: {exc}", file=sys.stderr)
        return 2
    opened = _channel(ns, "lookback whatif")
    if opened is None:
        return 2
    channel, key = opened
    now = now_micros()
    try:
        request = jsonapi.parse(
            pb.SimulateRequest,
            {"app_id": ns.app_id, "settings": change, "page_size": ns.page_size},
        )
        request.update_mask.paths.extend(change)
        if ns.start:
            request.start_time.FromJsonString(ns.start)
        else:
            request.start_time.CopyFrom(convert.micros_to_ts(now - parse_duration(ns.since)))
        if ns.end:
            request.end_time.FromJsonString(ns.end)
        start = convert.ts_to_micros(request.start_time)
        end = convert.ts_to_micros(request.end_time) if ns.end else now
    except (LookbackError, ValueError) as exc:
        print(f"lookback whatif: {exc}", file=sys.stderr)
        await channel.close()
        return 2
    # A stream has no deadline; the raw stub with the key per call.
    call = pb_grpc.ExplainServiceStub(channel).Simulate(request, metadata=clients.key_metadata(key))
    items: list[dict[str, Any]] = []
    last: pb.SimulateResponse | None = None
    try:
        async for page in call:
            last = page
            items += [jsonapi.dump(i, defaults=True) for i in page.installs]
            if not ns.json:
                print(_progress(page, start, end), end="", file=sys.stderr, flush=True)
    except asyncio.CancelledError:
        call.cancel()
        print("\nlookback whatif: cancelled", file=sys.stderr)
        return 130
    except grpc.aio.AioRpcError as exc:
        error = wire.from_rpc_error(exc)
        print(f"\nlookback whatif: {error.code.name}: {error.message}", file=sys.stderr)
        return 1
    finally:
        call.cancel()
        await channel.close()
    assert last is not None
    if ns.json:
        summary = jsonapi.dump(last, defaults=True)
        summary["installs"] = items
        print(json.dumps(summary, indent=2, sort_keys=True))
        return 0
    print(file=sys.stderr)
    settings = jsonapi.dump(last.settings, defaults=False)
    shown = ", ".join(f"{k}={v}" for k, v in change.items()) or "(no change)"
    print(f"{ns.app_id}: {shown} (on settings version {last.settings_version})")
    print(f"  simulated settings: {json.dumps(settings, sort_keys=True)}")
    print(
        f"  {last.examined} installs examined, {last.changed} would change,"
        f" {last.not_replayable} not replayable"
    )
    if items:
        print()
        print(_changes_table(items))
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="the answer as JSON")
    parser.add_argument(
        "--target", default="127.0.0.1:7402", help="the decider (lookback up: 7402)"
    )
    add_admin_key(parser)
    add_tls_arguments(parser)


def explain_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="lookback explain", description="why a decision")
    parser.add_argument("app_id")
    parser.add_argument("install_id", nargs="?", default="")
    parser.add_argument("--decision", default="", help="a decision id (an open's, say) instead")
    _common(parser)
    ns = parser.parse_args(argv)
    if not ns.install_id and not ns.decision:
        parser.error("give INSTALL_ID or --decision ID")
    return asyncio.run(_explain(ns))


def whatif_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="lookback whatif", description="what other settings do")
    parser.add_argument("app_id")
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a setting to change"
    )
    parser.add_argument("--since", default="24h", help="installs decided this far back")
    parser.add_argument("--from", dest="start", default="", help="from this time (RFC 3339)")
    parser.add_argument("--to", dest="end", default="", help="up to this time (default: now)")
    parser.add_argument("--page-size", type=int, default=500, help="installs per page")
    _common(parser)
    ns = parser.parse_args(argv)
    try:
        return asyncio.run(_whatif(ns))
    except KeyboardInterrupt:  # Ctrl-C: the call is cancelled with the loop
        print("\nlookback whatif: cancelled", file=sys.stderr)
        return 130
