"""Session fixtures: one real suite on free loopback ports, a postback sink
and a fake SRN, shared by the tests; each test isolates itself by app id."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.ingestion.v1 import ingestion_service_pb2_grpc as ingestion_grpc
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.api.types.v1 import app_pb2
from lookback.cli.suite import EphemeralSuite, SuiteAddresses
from lookback.postback.sink import PostbackSink
from lookback.srn_adapter.fake import FakeSrn, start_fake_srn

SRN_NETWORKS = ("srn_social", "srn_video")


@pytest.fixture(scope="session")
async def fake_srn() -> AsyncIterator[tuple[FakeSrn, str]]:
    fake, runner, url = await start_fake_srn()
    yield fake, url
    await runner.cleanup()


@pytest.fixture(scope="session")
async def sink() -> AsyncIterator[PostbackSink]:
    sink = PostbackSink()
    await sink.start()
    yield sink
    await sink.stop()


@pytest.fixture(scope="session")
async def suite(
    tmp_path_factory: pytest.TempPathFactory, fake_srn: tuple[FakeSrn, str]
) -> AsyncIterator[SuiteAddresses]:
    data = Path(tmp_path_factory.mktemp("suite"))
    running = EphemeralSuite(data, srn_endpoints={n: fake_srn[1] for n in SRN_NETWORKS})
    addresses = await running.start()
    yield addresses
    await running.stop()


@pytest.fixture(scope="session")
async def ingestion(suite: SuiteAddresses) -> AsyncIterator[ingestion_grpc.IngestionServiceStub]:
    async with grpc.aio.insecure_channel(suite.ingestion) as channel:
        yield ingestion_grpc.IngestionServiceStub(channel)


@pytest.fixture(scope="session")
async def store(suite: SuiteAddresses) -> AsyncIterator[store_grpc.TouchpointStoreServiceStub]:
    async with grpc.aio.insecure_channel(suite.store) as channel:
        yield store_grpc.TouchpointStoreServiceStub(channel)


@pytest.fixture(scope="session")
async def apps(suite: SuiteAddresses) -> AsyncIterator[apps_grpc.AppSettingsServiceStub]:
    async with grpc.aio.insecure_channel(suite.decider) as channel:
        yield apps_grpc.AppSettingsServiceStub(channel)


@pytest.fixture
async def app_id(apps: apps_grpc.AppSettingsServiceStub, sink: PostbackSink) -> str:
    """A fresh Android app whose partners post back to the sink."""
    app_id = f"com.test.{uuid.uuid4().hex[:12]}"
    app = app_pb2.App(app_id=app_id, platform=app_pb2.PLATFORM_ANDROID)
    for partner in ("networka", "networkb", "networkc"):
        app.settings.postbacks[
            partner
        ].install.url = f"{sink.url}/{partner}?app={app_id}&click={{click_id}}&c={{campaign}}"
    await apps.CreateApp(apps_pb.CreateAppRequest(app=app))
    return app_id


def new_gaid() -> str:
    return str(uuid.uuid4())
