"""Writing touches to the store, for the services that accept them (the
gateway and ingestion): each touch indexed by its match keys, and single
touches that arrive together written together (one ``PutTouches`` call,
one group commit), so a busy link endpoint pays the batch price per click.
"""

from __future__ import annotations

from collections.abc import Sequence

from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.api.types.v1 import touch_pb2
from lookback.core.batching import Batcher

MAX_WRITE = 500
"""Single touches per batched write at most."""


def index_touch(touch: touch_pb2.Touch) -> store_pb.IndexedTouch:
    """The touch as ``PutTouches`` takes it. No match keys: the store derives
    them itself from the touch (so that an erasure finds every index row),
    and would replace any sent."""
    return store_pb.IndexedTouch(touch=touch)


class TouchWriter:
    """Stores touches durably (each call returns once they are on disk)."""

    def __init__(self, stub: store_grpc.TouchpointStoreServiceStub, max_in_flight: int = 4) -> None:
        self.stub = stub
        self._singles: Batcher[touch_pb2.Touch, None] = Batcher(
            self._put_batch, max_batch=MAX_WRITE, max_in_flight=max_in_flight
        )

    async def _put_batch(self, touches: list[touch_pb2.Touch]) -> list[None]:
        await self.put_many(touches)
        return [None] * len(touches)

    async def put(self, touch: touch_pb2.Touch) -> None:
        """Store one touch, in the next batched write."""
        await self._singles.submit(touch)

    async def put_many(self, touches: Sequence[touch_pb2.Touch]) -> None:
        """Store a batch of touches, all or none, in one call."""
        await self.stub.PutTouches(
            store_pb.PutTouchesRequest(touches=[index_touch(t) for t in touches])
        )
