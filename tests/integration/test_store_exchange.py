"""The decider's one store call: the gathers and creates of the decisions in
flight travel together, each answered in order, exactly once per install."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lookback.api.store.v1 import touchpoint_store_service_pb2 as pb
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as pb_grpc
from lookback.core.server import GrpcServer
from lookback.testing.keys import ADMIN_KEY, admin_channel
from lookback.touchpoint_store.component import StoreComponent
from lookback.touchpoint_store.config import StoreConfig


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[pb_grpc.TouchpointStoreServiceStub]:
    config = StoreConfig(port=0, admin_keys=ADMIN_KEY, sqlite_path=str(tmp_path / "store.sqlite3"))
    server = GrpcServer(StoreComponent(config), config)
    await server.start()
    async with admin_channel(server.address) as channel:
        yield pb_grpc.TouchpointStoreServiceStub(channel)
    await server.stop(grace=0)


def create(install_id: str, decision_id: str) -> pb.CreateInstallRecordRequest:
    r = pb.CreateInstallRecordRequest()
    r.record.install.app_id = "com.example.x"
    r.record.install.install_id = install_id
    r.record.install.installed_at.FromSeconds(1_790_000_000)
    r.record.match_keys.append(f"sha1:gaid:{install_id}")
    r.record.decision.decision_id = decision_id
    r.record.decision.install_id = install_id
    return r


def gather(install_id: str) -> pb.GatherInstallFactsRequest:
    return pb.GatherInstallFactsRequest(
        app_id="com.example.x", install_id=install_id, device_keys=[f"sha1:gaid:{install_id}"]
    )


async def test_one_call_answers_every_item_in_order_and_once(
    store: pb_grpc.TouchpointStoreServiceStub,
) -> None:
    first = await store.ExchangeDecisionWork(
        pb.ExchangeDecisionWorkRequest(
            gathers=[gather("i1"), gather("i2")],
            # Two decisions of one install id in the same call: one wins.
            creates=[create("i1", "d-a"), create("i1", "d-b"), create("i2", "d-c")],
        )
    )
    assert [g.status.code for g in first.gathers] == [0, 0]
    assert all(not g.facts.HasField("existing") for g in first.gathers)
    created = [(c.response.created, c.response.record.decision.decision_id) for c in first.creates]
    assert created[2] == (True, "d-c")
    assert sorted(ok for ok, _ in created[:2]) == [False, True]
    winner = next(d for ok, d in created[:2] if ok)
    assert all(d == winner for _, d in created[:2])  # the loser is answered with the winner's

    second = await store.ExchangeDecisionWork(
        pb.ExchangeDecisionWorkRequest(gathers=[gather("i2"), gather("i1"), gather("i3")])
    )
    existing = [g.facts.existing.decision.decision_id for g in second.gathers]
    assert existing == ["d-c", winner, ""]
