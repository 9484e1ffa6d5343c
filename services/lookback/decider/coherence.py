"""Settings cache coherence across decider replicas, over Redis pub/sub.

A decider that changes an app's settings publishes the app id; every decider
(itself included) drops that app from its LRU cache as the message arrives,
so no replica keeps using stale settings. An erasure publishes the install
ids it erased (``installs`` and the app id and ids, a line each): every
decider drops them from its install cache. If the subscription breaks,
messages may have been missed: the whole cache is dropped on reconnecting.
Without Redis, the cache's age bound (``settings_cache_ttl``) is the limit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import redis.asyncio as aioredis

from lookback.core import redis_client
from lookback.core.tasks import cancel_and_wait

log = logging.getLogger("lookback.decider.coherence")

CHANNEL = "lookback:apps:changed"
INSTALLS = "installs"
"""First line of a message naming erased installs (never an app id: app
ids have no line breaks)."""


class RedisInvalidation:
    def __init__(
        self,
        url: str,
        drop: Callable[[str], None],
        drop_all: Callable[[], None],
        *,
        username: str = "",
        password: str = "",
        tls_ca: str = "",
        drop_installs: Callable[[str, list[str]], None] | None = None,
    ) -> None:
        self.url = url
        self.drop_installs = drop_installs
        self._options = redis_client.connect_options(
            url, username=username, password=password, tls_ca=tls_ca
        )
        self.drop = drop
        self.drop_all = drop_all
        self.redis: aioredis.Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()
        self._stopping = False

    async def start(self) -> None:
        self.redis = aioredis.from_url(self.url, **self._options)
        self._task = asyncio.create_task(self._listen())
        await asyncio.wait_for(self.subscribed.wait(), timeout=30)

    async def stop(self) -> None:
        self._stopping = True
        await cancel_and_wait(self._task)
        if self.redis is not None:
            await self.redis.aclose()

    async def publish(self, app_id: str) -> None:
        assert self.redis is not None
        await self.redis.publish(CHANNEL, app_id)

    async def publish_installs(self, app_id: str, install_ids: list[str]) -> None:
        assert self.redis is not None
        await self.redis.publish(CHANNEL, "\n".join([INSTALLS, app_id, *install_ids]))

    async def _listen(self) -> None:
        assert self.redis is not None
        first = True
        while not self._stopping:
            try:
                pubsub = self.redis.pubsub()
                await pubsub.subscribe(CHANNEL)
                if not first:
                    self.drop_all()  # messages may have been missed meanwhile
                first = False
                self.subscribed.set()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._received(message["data"].decode())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("settings invalidation lost its subscription (%s); retrying", exc)
                await asyncio.sleep(1.0)

    def _received(self, data: str) -> None:
        lines = data.split("\n")
        if lines[0] == INSTALLS:
            if self.drop_installs is not None and len(lines) > 1:
                self.drop_installs(lines[1], lines[2:])
            return
        self.drop(data)
