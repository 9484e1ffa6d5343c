"""Session fixtures: one real suite on free loopback ports, a postback sink
and a fake SRN, shared by the tests; each test isolates itself by app id."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
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
from lookback.touchpoint_store.cassandra import CassandraSettings

SRN_NETWORKS = ("srn_social", "srn_video")
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class CassandraNode:
    """A running Cassandra: ours (scripts/cassandra.sh) or an external one."""

    host: str
    port: int
    keyspace: str = "lookback_test"
    directory: Path | None = None

    def settings(self, **overrides: object) -> CassandraSettings:
        return CassandraSettings(
            hosts=(self.host,),
            port=self.port,
            keyspace=self.keyspace,
            **overrides,  # type: ignore[arg-type]
        )

    def script(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert self.directory is not None, "an external Cassandra is not ours to control"
        return subprocess.run(
            [str(REPO / "scripts" / "cassandra.sh"), *args, "--dir", str(self.directory)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


@pytest.fixture(scope="session")
def cassandra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CassandraNode]:
    """A real Cassandra for the whole session. ``LOOKBACK_TEST_CASSANDRA=host:port``
    uses an external one; otherwise scripts/cassandra.sh starts one on free
    ports. If it cannot start, every test that needs it fails (never skips)."""
    external = os.environ.get("LOOKBACK_TEST_CASSANDRA")
    if external:
        host, _, external_port = external.rpartition(":")
        yield CassandraNode(host or "127.0.0.1", int(external_port or 9042))
        return
    directory = tmp_path_factory.mktemp("cassandra")
    port, storage_port = free_ports(2)
    node = CassandraNode("127.0.0.1", port, directory=directory)
    start_backend(
        "cassandra.sh",
        "--dir",
        str(directory),
        "--port",
        str(port),
        "--storage-port",
        str(storage_port),
    )
    try:
        yield node
    finally:
        node.script("stop")


def start_backend(script: str, *args: str) -> None:
    """``scripts/SCRIPT start ARGS``; fails loudly (with its output) if it cannot."""
    started = subprocess.run(
        [str(REPO / "scripts" / script), "start", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if started.returncode != 0:
        raise RuntimeError(f"{script} start failed:\n{started.stdout}\n{started.stderr}")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis for the session: ``LOOKBACK_TEST_REDIS=redis://...`` uses an
    external one; otherwise scripts/redis.sh installs (Debian package) and
    starts one on a free port. If it cannot, every test needing it fails."""
    external = os.environ.get("LOOKBACK_TEST_REDIS")
    if external:
        yield external
        return
    directory = tmp_path_factory.mktemp("redis")
    (port,) = free_ports(1)
    start_backend("redis.sh", "--dir", str(directory), "--port", str(port))
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        subprocess.run(
            [str(REPO / "scripts" / "redis.sh"), "stop", "--dir", str(directory)],
            check=False,
            timeout=60,
        )


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


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
