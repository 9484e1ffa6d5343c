"""Session fixtures: one real suite on free loopback ports, a postback sink
and a fake SRN, shared by the tests; each test isolates itself by app id."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.decider.v1 import decider_service_pb2_grpc as decider_grpc
from lookback.api.ingestion.v1 import ingestion_service_pb2_grpc as ingestion_grpc
from lookback.api.postback.v1 import postback_dispatcher_service_pb2_grpc as postback_grpc
from lookback.api.srn.v1 import srn_adapter_service_pb2_grpc as srn_grpc
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.testing.builders import create_app, new_app_id
from lookback.testing.http import LOCAL_CIDRS
from lookback.testing.keys import admin_channel
from lookback.testing.receiver import PostbackSink
from lookback.testing.srn import FakeSrn, start_fake_srn
from lookback.testing.suite import EphemeralSuite, SuiteAddresses

SRN_NETWORKS = ("srn_social", "srn_video")


@pytest.fixture(scope="session")
async def fake_srn() -> AsyncIterator[tuple[FakeSrn, str]]:
    fake, runner, url = await start_fake_srn()
    yield fake, url
    await runner.cleanup()


@pytest.fixture(scope="session")
async def sink() -> AsyncIterator[PostbackSink]:
    async with PostbackSink() as sink:
        yield sink


@pytest.fixture(scope="session")
async def suite(
    tmp_path_factory: pytest.TempPathFactory, fake_srn: tuple[FakeSrn, str]
) -> AsyncIterator[SuiteAddresses]:
    data = Path(tmp_path_factory.mktemp("suite"))
    # The sink and the fake SRN are on loopback: allowed explicitly.
    running = EphemeralSuite(
        data,
        srn_endpoints={n: fake_srn[1] for n in SRN_NETWORKS},
        outbound_allow_cidrs=LOCAL_CIDRS,
    )
    addresses = await running.start()
    yield addresses
    await running.stop()


@pytest.fixture(scope="session")
async def ingestion(suite: SuiteAddresses) -> AsyncIterator[ingestion_grpc.IngestionServiceStub]:
    async with admin_channel(suite.ingestion) as channel:
        yield ingestion_grpc.IngestionServiceStub(channel)


@pytest.fixture(scope="session")
async def store(suite: SuiteAddresses) -> AsyncIterator[store_grpc.TouchpointStoreServiceStub]:
    async with admin_channel(suite.store) as channel:
        yield store_grpc.TouchpointStoreServiceStub(channel)


@pytest.fixture(scope="session")
async def apps(suite: SuiteAddresses) -> AsyncIterator[apps_grpc.AppSettingsServiceStub]:
    async with admin_channel(suite.decider) as channel:
        yield apps_grpc.AppSettingsServiceStub(channel)


@pytest.fixture(scope="session")
async def decider(suite: SuiteAddresses) -> AsyncIterator[decider_grpc.DeciderServiceStub]:
    async with admin_channel(suite.decider) as channel:
        yield decider_grpc.DeciderServiceStub(channel)


@pytest.fixture(scope="session")
async def srn(suite: SuiteAddresses) -> AsyncIterator[srn_grpc.SrnAdapterServiceStub]:
    async with admin_channel(suite.srn) as channel:
        yield srn_grpc.SrnAdapterServiceStub(channel)


@pytest.fixture(scope="session")
async def postback(
    suite: SuiteAddresses,
) -> AsyncIterator[postback_grpc.PostbackDispatcherServiceStub]:
    async with admin_channel(suite.postback) as channel:
        yield postback_grpc.PostbackDispatcherServiceStub(channel)


@pytest.fixture
async def app_id(apps: apps_grpc.AppSettingsServiceStub, sink: PostbackSink) -> str:
    """A fresh Android app whose partners post back to the sink."""
    app_id = new_app_id()
    postbacks = {
        partner: f"{sink.url}/{partner}?app={app_id}&click={{click_id}}&c={{campaign}}"
        for partner in ("networka", "networkb", "networkc")
    }
    return await create_app(apps, app_id, postbacks=postbacks)
