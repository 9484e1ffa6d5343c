"""Fixtures for every kind of test: the real backends, for the whole session
(ours, or external ones named in the environment), a postback queue on each
backend, and a postback receiver of the test's own."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from lookback.postback.queue import PostbackQueue, SqliteQueue
from lookback.postback.redis_queue import RedisQueue
from lookback.testing.processes import free_ports
from lookback.testing.receiver import PostbackSink
from tests import REPO
from tests.backends import CassandraNode, start_backend


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


@pytest.fixture(params=["sqlite", "redis"])
async def queue(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[PostbackQueue]:
    """An empty postback queue on each backend in turn: the embedded SQLite
    one, and Redis (the session's, under a prefix of this test's own)."""
    q: PostbackQueue
    if request.param == "sqlite":
        q = SqliteQueue(tmp_path / "q.sqlite3")
    else:
        q = RedisQueue(request.getfixturevalue("redis_url"), prefix=f"test:{uuid.uuid4().hex}:")
    await q.open()
    yield q
    await q.close()


@pytest.fixture
async def receiver() -> AsyncIterator[PostbackSink]:
    """A postback receiver of this test's own (counts are its alone)."""
    async with PostbackSink() as sink:
        yield sink
