"""Watching an app's decisions: over gRPC (WatchDecisions) and as
Server-Sent Events through the gateway; in order, each once, resumed from a
cursor after a disconnect; an app's s2s key watches its own app only, the
admin every app at once."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.api.outcomes.v1 import outcomes_service_pb2 as outcomes_pb
from lookback.api.outcomes.v1 import outcomes_service_pb2_grpc as outcomes_grpc
from lookback.core.server import GrpcServer
from lookback.testing import builders
from lookback.testing.keys import admin_channel, admin_headers, bearer, key_channel
from lookback.testing.processes import LOOKBACK, start, wait_http_ready
from lookback.testing.suite import EphemeralSuite, SuiteAddresses


async def _app(suite: SuiteAddresses) -> tuple[str, apps_pb.AppKeys]:
    return await builders.keyed_app(suite.decider, "com.watch")


async def _install(
    http: aiohttp.ClientSession, suite: SuiteAddresses, app_id: str, key: str
) -> str:
    body = {
        "app_id": app_id,
        "install_id": uuid.uuid4().hex,
        "device": {"gaid": builders.new_gaid()},
    }
    async with http.post(f"{suite.gateway_url}/v1/installs", json=body, headers=bearer(key)) as r:
        assert r.status == 200, await r.text()
        return str((await r.json())["decision"]["decision_id"])


async def _events(response: aiohttp.ClientResponse, n: int) -> list[dict[str, Any]]:
    """The next ``n`` SSE events (id, event, data)."""
    out: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    while len(out) < n:
        line = (await asyncio.wait_for(response.content.readline(), 10)).decode().rstrip("\n")
        if not line:
            if "data" in current:
                out.append(current)
            current = {}
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(": ")
            current[field] = json.loads(value) if field == "data" else value
    return out


async def test_server_sent_events_resume_from_the_last_event_id(suite: SuiteAddresses) -> None:
    app_id, keys = await _app(suite)
    url = f"{suite.gateway_url}/v1/apps/{app_id}/decisions:watch"
    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers=bearer(keys.s2s)) as stream:
            assert stream.status == 200
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            await stream.content.readline()  # ": watching": the stream is open
            made = [await _install(http, suite, app_id, keys.sdk) for _ in range(3)]
            seen = await _events(stream, 3)
        assert [e["data"]["decision"]["decision_id"] for e in seen] == made
        assert all(e["event"] == "decision" for e in seen)
        last = seen[-1]["id"]
        # Disconnected: two more decisions; reconnecting after the last one
        # seen gives exactly those, in order.
        more = [await _install(http, suite, app_id, keys.sdk) for _ in range(2)]
        headers = {**bearer(keys.s2s), "Last-Event-ID": last}
        async with http.get(url, headers=headers) as stream:
            resumed = await _events(stream, 2)
        assert [e["data"]["decision"]["decision_id"] for e in resumed] == more
        # The sdk key does not watch; another app's key does not either.
        async with http.get(url, headers=bearer(keys.sdk)) as refused:
            assert refused.status == 403
        _, other = await _app(suite)
        async with http.get(url, headers=bearer(other.s2s)) as refused:
            assert refused.status == 403


async def test_the_grpc_stream_goes_on_after_a_cursor(suite: SuiteAddresses) -> None:
    app_id, keys = await _app(suite)
    async with aiohttp.ClientSession() as http:
        first = [await _install(http, suite, app_id, keys.sdk) for _ in range(2)]
        async with key_channel(suite.decider, keys.s2s) as channel:
            stub = outcomes_grpc.OutcomesServiceStub(channel)
            # No cursor: from now.
            call = stub.WatchDecisions(outcomes_pb.WatchDecisionsRequest(app_id=app_id))
            await call.initial_metadata()  # in place: what follows is "after now"
            later = await _install(http, suite, app_id, keys.sdk)
            entry = await asyncio.wait_for(call.read(), 10)
            call.cancel()
            assert entry.decision.decision_id == later  # from now: not the earlier ones
            again = await _install(http, suite, app_id, keys.sdk)
            call = stub.WatchDecisions(
                outcomes_pb.WatchDecisionsRequest(app_id=app_id, cursor=entry.cursor)
            )
            nxt = await asyncio.wait_for(call.read(), 10)
            call.cancel()
            assert nxt.decision.decision_id == again
        assert len(first) == 2
        # Another app's s2s key: refused before the first message.
        _, other = await _app(suite)
        async with key_channel(suite.decider, other.s2s) as channel:
            call = outcomes_grpc.OutcomesServiceStub(channel).WatchDecisions(
                outcomes_pb.WatchDecisionsRequest(app_id=app_id)
            )
            try:
                await asyncio.wait_for(call.read(), 10)
                raise AssertionError("another app's key watched this app")
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_lookback_decisions_tail_prints_new_decisions(suite: SuiteAddresses) -> None:
    app_id, keys = await _app(suite)
    tail = await start(
        [*LOOKBACK, "decisions", "tail", app_id, "--count", "2", "--target", suite.decider],
        name="tail",
        ready="watching",
        timeout=60,
    )
    async with aiohttp.ClientSession() as http:
        made = [await _install(http, suite, app_id, keys.sdk) for _ in range(2)]
    assert await tail.exited(timeout=30) == 0, tail.output()
    lines = [json.loads(line) for line in tail.output().splitlines() if line.startswith("{")]
    assert [entry["decision"]["decision_id"] for entry in lines] == made
    assert all(entry["cursor"] for entry in lines)


async def test_a_watch_resumes_by_cursor_across_a_restart_of_the_services(
    tmp_path: Path,
) -> None:
    """The cursor is the store's: after the store and the decider restart
    (same data), a watcher that reconnects with its last cursor gets exactly
    the decisions made since, in order."""
    suite = EphemeralSuite(tmp_path)
    a = await suite.start()
    try:
        app_id, keys = await _app(a)
        async with aiohttp.ClientSession() as http:
            async with key_channel(a.decider, keys.s2s) as channel:
                stub = outcomes_grpc.OutcomesServiceStub(channel)
                call = stub.WatchDecisions(outcomes_pb.WatchDecisionsRequest(app_id=app_id))
                await call.initial_metadata()
                first = await _install(http, a, app_id, keys.sdk)
                entry = await asyncio.wait_for(call.read(), 10)
                call.cancel()
                assert entry.decision.decision_id == first
            for name in ("decider", "touchpoint_store"):  # both go down, then come back
                server = suite.servers[name]
                await server.stop(grace=0.5)
            for name in ("touchpoint_store", "decider"):
                old = suite.servers[name]
                same = dataclasses.replace(old.config, port=old.port)
                component = type(old.component)(same)  # type: ignore[call-arg]
                back = GrpcServer(component, same)
                await back.start()
                suite.servers[name] = back
            await wait_http_ready(a.gateway_url)  # the gateway reconnected to both
            made = [await _install(http, a, app_id, keys.sdk) for _ in range(3)]
            async with key_channel(a.decider, keys.s2s) as channel:
                stub = outcomes_grpc.OutcomesServiceStub(channel)
                call = stub.WatchDecisions(
                    outcomes_pb.WatchDecisionsRequest(app_id=app_id, cursor=entry.cursor)
                )
                resumed = [await asyncio.wait_for(call.read(), 10) for _ in made]
                call.cancel()
        assert [e.decision.decision_id for e in resumed] == made
    finally:
        await suite.stop()


async def test_the_admin_watches_every_app_and_resumes_after_a_cursor(
    suite: SuiteAddresses,
) -> None:
    (a, keys_a), (b, keys_b) = await _app(suite), await _app(suite)
    async with aiohttp.ClientSession() as http, admin_channel(suite.decider) as channel:
        stub = outcomes_grpc.OutcomesServiceStub(channel)
        call = stub.WatchDecisions(outcomes_pb.WatchDecisionsRequest())  # every app, from now
        await call.initial_metadata()
        made = [
            (a, await _install(http, suite, a, keys_a.sdk)),
            (b, await _install(http, suite, b, keys_b.sdk)),
            (a, await _install(http, suite, a, keys_a.sdk)),
        ]
        got: list[tuple[str, str]] = []
        cursor = ""
        async for entry in call:  # other tests' apps decide too: only ours count
            if entry.app_id in (a, b):
                got.append((entry.app_id, entry.decision.decision_id))
                cursor = entry.cursor
            if len(got) == 2:
                break
        call.cancel()
        assert got == made[:2]  # in the order made, each with its app
        assert cursor.startswith("all.")
        # Disconnected: one more of b's; resuming gives a's last and b's new
        # one, each once.
        later = (b, await _install(http, suite, b, keys_b.sdk))
        call = stub.WatchDecisions(outcomes_pb.WatchDecisionsRequest(cursor=cursor))
        resumed: list[tuple[str, str]] = []
        async for entry in call:
            if entry.app_id in (a, b):
                resumed.append((entry.app_id, entry.decision.decision_id))
            if len(resumed) == 2:
                break
        call.cancel()
        assert resumed == [made[2], later]
        # A bad cursor is refused, naming it.
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.WatchDecisions(outcomes_pb.WatchDecisionsRequest(cursor="all.x")).read()
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # An app's key does not watch every app (gRPC nor HTTP).
    async with key_channel(suite.decider, keys_a.s2s) as channel:
        call = outcomes_grpc.OutcomesServiceStub(channel).WatchDecisions(
            outcomes_pb.WatchDecisionsRequest()
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call.read()
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    async with aiohttp.ClientSession() as http:
        url = f"{suite.gateway_url}/v1/decisions:watch"
        async with http.get(url, headers=bearer(keys_a.s2s)) as r:
            assert r.status == 403
        async with http.get(url, headers=admin_headers()) as stream:
            assert stream.status == 200
            await stream.content.readline()  # ": watching"
            mine = await _install(http, suite, a, keys_a.sdk)
            while True:
                (event,) = await _events(stream, 1)
                if event["data"]["app_id"] == a:
                    break
            assert event["data"]["decision"]["decision_id"] == mine
            assert event["id"].startswith("all.")
