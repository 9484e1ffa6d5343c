"""Links at the store, on SQLite and on a real Cassandra: a code is created
once, found by code whatever the app, listed by app in code order, paged."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lookback.api.types.v1 import link_pb2
from lookback.touchpoint_store.backend import StoreBackend
from lookback.touchpoint_store.cassandra import CassandraBackend
from lookback.touchpoint_store.sqlite import SqliteBackend
from tests.backends import CassandraNode


@pytest.fixture(params=["sqlite", "cassandra"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreBackend]:
    b: StoreBackend
    if request.param == "sqlite":
        b = SqliteBackend(tmp_path / "store.sqlite3")
    else:
        node: CassandraNode = request.getfixturevalue("cassandra")
        b = CassandraBackend(node.settings())
    await b.open()
    yield b
    await b.close()


async def test_links_by_code_and_by_app(backend: StoreBackend) -> None:
    app, other = f"app-{uuid.uuid4().hex[:8]}", f"app-{uuid.uuid4().hex[:8]}"
    codes = sorted(f"c{uuid.uuid4().hex[:10]}" for _ in range(5))
    for code in codes:
        link = link_pb2.Link(code=code, app_id=app, media_source="networka", campaign="a")
        assert await backend.put_link(link, create=True)
    foreign = link_pb2.Link(code=f"c{uuid.uuid4().hex[:10]}", app_id=other, media_source="x")
    assert await backend.put_link(foreign, create=True)
    # A taken code is not created again, whatever the app; a replace changes it.
    clash = link_pb2.Link(code=codes[0], app_id=other, media_source="thief")
    assert not await backend.put_link(clash, create=True)
    found = await backend.get_link(codes[0])
    assert found is not None and (found.app_id, found.media_source) == (app, "networka")
    found.campaign, found.disabled = "b", True
    assert await backend.put_link(found, create=False)
    again = await backend.get_link(codes[0])
    assert again is not None and (again.campaign, again.disabled) == ("b", True)
    assert await backend.get_link("nosuchcode") is None
    first = await backend.list_links(app, "", 3)
    rest = await backend.list_links(app, first[-1].code, 3)
    assert [x.code for x in first + rest] == codes
    assert [x.campaign for x in first[:1]] == ["b"]  # the listing sees the replacement
    assert [x.code for x in await backend.list_links(other, "", 10)] == [foreign.code]
