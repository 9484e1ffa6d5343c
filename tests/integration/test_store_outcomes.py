"""The store's outcomes log and decision index over gRPC: the postbacks
passed with a decision come back with it, in the log, and the reads are
validated like every other request."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from lookback.api.store.v1 import touchpoint_store_service_pb2 as pb
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as pb_grpc
from lookback.api.types.v1 import decision_pb2, postback_pb2
from lookback.core.convert import micros_to_ts
from lookback.core.server import GrpcServer
from lookback.testing.keys import ADMIN_KEY, admin_channel
from lookback.touchpoint_store.component import StoreComponent
from lookback.touchpoint_store.config import StoreConfig

APP = "com.example.x"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[pb_grpc.TouchpointStoreServiceStub]:
    config = StoreConfig(port=0, admin_keys=ADMIN_KEY, sqlite_path=str(tmp_path / "store.sqlite3"))
    server = GrpcServer(StoreComponent(config), config)
    await server.start()
    async with admin_channel(server.address) as channel:
        yield pb_grpc.TouchpointStoreServiceStub(channel)
    await server.stop(grace=0)


def create(
    install_id: str, decided_at: int, media_source: str = "networka"
) -> pb.CreateInstallRecordRequest:
    r = pb.CreateInstallRecordRequest()
    r.record.install.app_id = APP
    r.record.install.install_id = install_id
    r.record.install.installed_at.CopyFrom(micros_to_ts(decided_at - 1_000_000))
    r.record.match_keys.append(f"sha1:gaid:{install_id}")
    d = r.record.decision
    d.decision_id = f"d-{install_id}"
    d.app_id = APP
    d.install_id = install_id
    d.kind = decision_pb2.DECISION_KIND_INSTALL
    d.media_source = media_source
    d.decided_at.CopyFrom(micros_to_ts(decided_at))
    r.postbacks.add(
        job_id=f"j-{install_id}",
        app_id=APP,
        partner="networka",
        trigger=postback_pb2.POSTBACK_TRIGGER_INSTALL,
        url=f"https://partner.example/pb?install={install_id}",
        method=postback_pb2.HTTP_METHOD_GET,
    )
    return r


async def test_decisions_and_their_postbacks_read_back(
    store: pb_grpc.TouchpointStoreServiceStub,
) -> None:
    now = time.time_ns() // 1000
    for n in range(3):
        created = await store.CreateInstallRecord(create(f"i{n}", now - (3 - n) * 1_000_000))
        assert created.created
    # A retried create (its answer lost) is answered created, and logged once.
    again = await store.CreateInstallRecord(create("i2", now - 1_000_000))
    assert again.created

    log = await store.ReadOutcomes(pb.ReadOutcomesRequest(app_id=APP, limit=2))
    assert [o.decision.decision_id for o in log.outcomes] == ["d-i0", "d-i1"]
    assert [j.job_id for j in log.outcomes[0].postbacks] == ["j-i0"]
    rest = await store.ReadOutcomes(
        pb.ReadOutcomesRequest(app_id=APP, after_cursor=log.next_cursor)
    )
    assert [o.decision.decision_id for o in rest.outcomes] == ["d-i2"]

    got = await store.GetDecision(pb.GetDecisionRequest(app_id=APP, decision_id="d-i1"))
    assert got.decision.install_id == "i1"
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await store.GetDecision(pb.GetDecisionRequest(app_id=APP, decision_id="nope"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    first = await store.ListDecisions(pb.ListDecisionsRequest(app_id=APP, page_size=2))
    assert [d.decision_id for d in first.decisions] == ["d-i2", "d-i1"]
    second = await store.ListDecisions(
        pb.ListDecisionsRequest(app_id=APP, page_size=2, page_token=first.next_page_token)
    )
    assert [d.decision_id for d in second.decisions] == ["d-i0"]
    assert second.next_page_token == ""
    organic = await store.ListDecisions(
        pb.ListDecisionsRequest(
            app_id=APP, media_source="organic", kinds=[decision_pb2.DECISION_KIND_INSTALL]
        )
    )
    assert list(organic.decisions) == []


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.ReadOutcomes(pb.ReadOutcomesRequest(app_id=APP, limit=1001)),
        lambda s: s.ReadOutcomes(pb.ReadOutcomesRequest(app_id=APP, after_cursor="x y")),
        lambda s: s.ReadOutcomes(pb.ReadOutcomesRequest(app_id=APP, after_cursor="12")),
        lambda s: s.ReadOutcomes(pb.ReadOutcomesRequest(app_id="bad app")),
        lambda s: s.GetDecision(pb.GetDecisionRequest(app_id=APP)),
        lambda s: s.ListDecisions(pb.ListDecisionsRequest(app_id=APP, page_size=-1)),
        lambda s: s.ListDecisions(pb.ListDecisionsRequest(app_id=APP, page_token="garbage")),
        lambda s: s.ListDecisions(pb.ListDecisionsRequest(app_id=APP, kinds=[99])),  # type: ignore[list-item]
        lambda s: s.ListDecisions(pb.ListDecisionsRequest(app_id=APP, media_source="Bad!")),
        lambda s: s.ListDecisions(
            pb.ListDecisionsRequest(
                app_id=APP, start_time=micros_to_ts(2_000_000), end_time=micros_to_ts(1_000_000)
            )
        ),
    ],
)
async def test_bad_reads_are_invalid_arguments(
    store: pb_grpc.TouchpointStoreServiceStub, call: object
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call(store)  # type: ignore[operator]
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_postback_jobs_passed_with_a_decision_are_validated(
    store: pb_grpc.TouchpointStoreServiceStub,
) -> None:
    request = create("i1", time.time_ns() // 1000)
    request.postbacks[0].url = "ftp://partner.example/"
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await store.CreateInstallRecord(request)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "postbacks[0].url" in (failed.value.details() or "")
    log = await store.ReadOutcomes(pb.ReadOutcomesRequest(app_id=APP))
    assert list(log.outcomes) == []
