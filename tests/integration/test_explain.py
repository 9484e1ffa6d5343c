"""Explanations through the gateway and the CLI (docs/explain.md): an
install's candidates with their verdicts, the same by decision id, the
``lookback explain`` table and the ``lookback whatif`` answer and progress;
a Simulate call cancelled by its client stops."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import grpc

from lookback.api.explain.v1 import explain_service_pb2 as explain_pb
from lookback.api.explain.v1 import explain_service_pb2_grpc as explain_grpc
from lookback.core.convert import micros_to_ts
from lookback.testing import builders
from lookback.testing.keys import bearer, key_channel
from lookback.testing.processes import run_cli
from lookback.testing.suite import SuiteAddresses

UA = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36"


async def _post(http: aiohttp.ClientSession, url: str, key: str, body: Any) -> dict[str, Any]:
    async with http.post(url, json=body, headers=bearer(key)) as r:
        answer: dict[str, Any] = await r.json()
        assert r.status == 200, answer
        return answer


def _click(app_id: str, click_id: str, source: str, ago: float, **extra: Any) -> dict[str, Any]:
    return {
        "app_id": app_id,
        "type": "click",
        "media_source": source,
        "campaign": f"{source}-c",
        "click_id": click_id,
        "engaged_at": builders.iso_ago(ago),
        **extra,
    }


async def test_an_install_is_explained_over_http_and_by_the_cli(suite: SuiteAddresses) -> None:
    app_id, keys = await builders.keyed_app(suite.decider, "com.explain")
    gaid = builders.new_gaid()
    base = suite.gateway_url
    async with aiohttp.ClientSession() as http:
        touches = [
            _click(app_id, "c_old", "networkb", 9 * 86400, device={"gaid": gaid}),
            _click(app_id, "c_new", "networka", 3 * 86400, device={"gaid": gaid}),
            _click(app_id, "c_ip", "networkc", 600, ip="203.0.113.77", user_agent="curl/8"),
        ]
        await _post(http, f"{base}/v1/touches", keys.s2s, {"touches": touches})
        install = {
            "app_id": app_id,
            "install_id": "i1",
            "device": {"gaid": gaid},
            "ip": "203.0.113.77",
            "user_agent": UA,
            "os_version": "14",
        }
        made = (await _post(http, f"{base}/v1/installs", keys.s2s, install))["decision"]
        assert (made["media_source"], made["click_id"]) == ("networka", "c_new")

        async with http.get(
            f"{base}/v1/apps/{app_id}/installs/i1:explain", headers=bearer(keys.s2s)
        ) as r:
            assert r.status == 200, await r.text()
            by_install = await r.json()
        async with http.get(
            f"{base}/v1/apps/{app_id}/decisions/{made['decision_id']}:explain",
            headers=bearer(keys.s2s),
        ) as r:
            assert r.status == 200
            assert await r.json() == by_install
    verdicts = {
        c["click_id"]: (c["verdict"], c.get("window", ""))
        for c in by_install["explanation"]["candidates"]
    }
    assert verdicts == {
        "c_new": ("winner", ""),
        "c_old": ("outside_window", "7d"),
        "c_ip": ("fingerprint_mismatch", ""),
    }
    assert by_install["explanation"]["settings_version"] == "1"

    code, out, err = await run_cli("explain", app_id, "i1", "--target", suite.decider)
    assert code == 0, err
    lines = out.splitlines()
    assert "install: networka / networka-c by device_id click c_new" in out
    row = next(line for line in lines if line.startswith("outside_window"))
    assert "c_old" in row and "window 7d" in row
    assert any(line.startswith("winner") and "c_new" in line for line in lines)

    code, out, err = await run_cli(
        "whatif", app_id, "--set", "click_lookback=2d", "--since", "1h", "--target", suite.decider
    )
    assert code == 0, err
    assert "100.0%  1 installs examined, 1 would change" in err
    assert "click_lookback=2d" in out and "1 would change" in out
    lines = out.splitlines()
    at = lines.index("i1")
    assert lines[at + 1].startswith("  before: install: networka / networka-c by device_id")
    assert lines[at + 2] == "  after:  install: organic by none"

    code, _, err = await run_cli(
        "whatif", app_id, "--set", "click_lookback=90d", "--target", suite.decider
    )
    assert code == 1 and "INVALID_ARGUMENT" in err and "click_lookback" in err


async def test_a_cancelled_simulation_ends_and_the_next_one_answers(suite: SuiteAddresses) -> None:
    app_id, keys = await builders.keyed_app(suite.decider, "com.explain")
    base = suite.gateway_url
    async with aiohttp.ClientSession() as http:
        for n in range(30):
            body = {
                "app_id": app_id,
                "install_id": f"i{n}",
                "device": {"gaid": builders.new_gaid()},
            }
            await _post(http, f"{base}/v1/installs", keys.sdk, body)
    channel = key_channel(suite.decider, keys.s2s)
    try:
        stub = explain_grpc.ExplainServiceStub(channel)
        request = explain_pb.SimulateRequest(app_id=app_id, start_time=micros_to_ts(0), page_size=1)
        call = stub.Simulate(request)
        first = await call.read()
        assert first.examined == 1 and not first.done
        call.cancel()
        try:
            await call.read()
            raise AssertionError("a cancelled call went on")
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass
        assert call.cancelled()
        pages = [p async for p in stub.Simulate(request)]
        assert pages[-1].done and pages[-1].examined == 30 and len(pages) == 30
    finally:
        await channel.close()
