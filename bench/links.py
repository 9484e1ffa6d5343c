"""Link benchmark: following a link (``GET /l/{code}``: the click recorded
durably, the redirect answered) against ``GET /v1/click`` and a bare
aiohttp server, in the same run, at concurrency 1, 16 and 64.

    python -m bench.links [--duration 10] [--warmup 2] [--out docs/benchmarks/links.md]

The suite runs as ``lookback up`` runs it (embedded store, one gateway
process). The Go load generator (bench/loadgen/, redirects not followed)
sends an Android browser's user agent, so every follow answers ``302`` to
the Play page with the click id in its referrer; the two run in turns
(click, link, link, click at each concurrency; each the better of its two); each request names a new
click id and a random ``gaid`` (``/l/<code>?click_id=<prefix>-{seq}&gaid={uuid}``),
as the click endpoint's do. Afterwards the store is asked which of the
measured click ids it holds: "stored/s" counts those. The limit
(issue 15): a link costs at most 10% more than ``/v1/click``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import uuid

import aiohttp
import grpc

from bench.clicks import ClickRun, count_stored, create_app
from bench.decisions import CONCURRENCIES, TIMEOUT, running_suite
from bench.loadgen import LoadResult, run_loadgen
from bench.outcomes import emit
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.testing.keys import admin_channel, admin_headers
from lookback.testing.processes import python_module

ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/124.0.0.0 Mobile Safari/537.36"
)
LIMIT = 0.10


def _stored_rate(r: ClickRun) -> float:
    return r.stored / r.load.duration_s


async def make_link(gateway: str, app_id: str) -> str:
    """A link with a deep link (created with the admin key); its code."""
    body = {"media_source": "networka", "campaign": "bench", "deep_link_value": "product/42"}
    async with aiohttp.ClientSession(headers=admin_headers()) as http:
        async with http.post(f"{gateway}/v1/apps/{app_id}/links", json=body) as r:
            answer = await r.json()
            if r.status != 201:
                raise RuntimeError(f"creating the link answered {r.status}: {answer}")
            code: str = answer["link"]["code"]
            return code


async def run(duration: float, warmup: float) -> str:
    load_average = os.getloadavg()
    async with running_suite(36_000, {"gateway_processes": 1}, timeout=120) as suite:
        app_id = f"com.bench.links.{uuid.uuid4().hex[:8]}"
        await create_app(suite.gateway_url, app_id)
        code = await make_link(suite.gateway_url, app_id)
        echo = await python_module("bench.clicks", "--serve-http-echo", capture_stderr=False)
        clicks: list[ClickRun] = []
        links: list[ClickRun] = []
        echoes: list[LoadResult] = []
        pairs: list[tuple[list[ClickRun], list[ClickRun]]] = []
        async with admin_channel(suite.addr["touchpoint_store"]) as store_ch:
            store = store_grpc.TouchpointStoreServiceStub(store_ch)
            for c in CONCURRENCIES:
                echoes.append(
                    await run_loadgen(
                        f"http://{echo.address}/v1/click?click_id={{seq}}",
                        concurrency=c,
                        duration=duration,
                        warmup=warmup,
                        timeout=TIMEOUT,
                    )
                )
                click_url = (
                    f"{suite.gateway_url}/v1/click?app_id={app_id}&media_source=networka"
                    "&campaign=bench&click_id={prefix}-{seq}&gaid={uuid}"
                )
                link_url = f"{suite.gateway_url}/l/{code}?click_id={{prefix}}-{{seq}}&gaid={{uuid}}"
                # In turns, ABBA: neither goes first into a store the other filled.
                turns: dict[str, list[ClickRun]] = {"click": [], "link": []}
                for kind in ("click", "link", "link", "click"):
                    url, status = (click_url, 200) if kind == "click" else (link_url, 302)
                    prefix = f"{kind}{c}-{uuid.uuid4().hex[:6]}"
                    figures = await run_loadgen(
                        url,
                        concurrency=c,
                        duration=duration,
                        warmup=warmup,
                        prefix=prefix,
                        headers={"User-Agent": ANDROID},
                        timeout=TIMEOUT,
                    )
                    ids = [f"{prefix}-{i}" for i in figures.measured_seqs]
                    stored = await count_stored(store, app_id, ids, 1000)
                    turns[kind].append(ClickRun(c, figures, stored, ok_status=status))
                clicks.append(max(turns["click"], key=_stored_rate))
                links.append(max(turns["link"], key=_stored_rate))
                pairs.append((turns["click"], turns["link"]))
        await echo.stop()
    lines = [
        "# Links: following `GET /l/{code}` against `GET /v1/click`",
        "",
        f"`python -m bench.links --duration {duration:g} --warmup {warmup:g}`,"
        " embedded store, one gateway process.",
        "",
        "| what | concurrency | answered/s | stored/s | p50 ms | p99 ms | not answered"
        " | requests |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e, k, link in zip(echoes, clicks, links, strict=True):
        d = k.load.duration_s
        lines.append(
            f"| bare aiohttp server | {e.concurrency} | {e.ok_rate:,.0f} | - "
            f"| {e.latency.p50:.2f} | {e.latency.p99:.2f} | - | {e.scheduled:,} |"
        )
        for name, r in (("`GET /v1/click` (200)", k), ("`GET /l/{code}` (302)", link)):
            d = r.load.duration_s
            lines.append(
                f"| {name} | {r.concurrency} | {r.ok / d:,.0f} | {r.stored / d:,.0f} "
                f"| {r.load.latency.p50:.2f} | {r.load.latency.p99:.2f} "
                f"| {r.load.scheduled - r.ok:,} | {r.load.scheduled:,} |"
            )
    lines += [
        "",
        "Each is the better of two turns (click, link, link, click at each concurrency);"
        " every turn, stored/s:",
        "",
    ]
    for k_turns, l_turns in pairs:
        lines.append(
            f"- concurrency {k_turns[0].concurrency}: click "
            + ", ".join(f"{_stored_rate(r):,.0f}" for r in k_turns)
            + "; link "
            + ", ".join(f"{_stored_rate(r):,.0f}" for r in l_turns)
        )
    lines += ["", "What a link costs over the click endpoint (stored per second):", ""]
    worst = 0.0
    for k, link in zip(clicks, links, strict=True):
        click_rate = k.stored / k.load.duration_s
        link_rate = link.stored / link.load.duration_s
        cost = 1 - link_rate / click_rate if click_rate else 0.0
        worst = max(worst, cost)
        lines.append(
            f"- concurrency {k.concurrency}: {link_rate:,.0f}/s against {click_rate:,.0f}/s:"
            f" **{cost:+.1%}** (p50 {link.load.latency.p50:.2f} ms against"
            f" {k.load.latency.p50:.2f} ms)"
        )
    verdict = "met" if worst <= LIMIT else "not met"
    lines += [
        "",
        f"The limit is {LIMIT:.0%}: **{verdict}** (the largest cost {worst:+.1%}).",
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, load average"
        f" {load_average[0]:.2f} at the start, Python {platform.python_version()},"
        f" aiohttp {aiohttp.__version__}, grpcio {grpc.__version__}. Failures:"
        + "; ".join(
            f" c{r.concurrency} {kind}: {r.failures()}"
            for kind, runs in (("click", clicks), ("link", links))
            for r in runs
        )
        + ".",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each")
    parser.add_argument("--out", default="", help="also write the report (markdown) here")
    args = parser.parse_args()
    return emit(asyncio.run(run(args.duration, args.warmup)), args.out)


if __name__ == "__main__":
    raise SystemExit(main())
