"""The postback dispatcher as a servable component, on the queue its settings name."""

from __future__ import annotations

import grpc

from lookback.api.postback.v1 import postback_dispatcher_service_pb2 as pb
from lookback.api.postback.v1 import postback_dispatcher_service_pb2_grpc as pb_grpc
from lookback.core import auth
from lookback.postback.config import PostbackConfig
from lookback.postback.dispatcher import Dispatcher
from lookback.postback.queue import PostbackQueue, SqliteQueue
from lookback.postback.servicer import PostbackDispatcherServicer


class PostbackComponent:
    name = "postback"
    auth_rules = auth.admin_rules(pb.DESCRIPTOR.services_by_name["PostbackDispatcherService"])
    """Internal: called by the other services (and operators) with admin keys."""

    def __init__(self, config: PostbackConfig, queue: PostbackQueue | None = None) -> None:
        self.config = config
        self.queue: PostbackQueue = queue or make_queue(config)
        self.dispatcher = Dispatcher(config, self.queue)
        self.health_interval = config.health_interval

    async def healthy(self) -> bool:
        return await self.queue.healthy()

    def register(self, server: grpc.aio.Server) -> list[str]:
        pb_grpc.add_PostbackDispatcherServiceServicer_to_server(
            PostbackDispatcherServicer(self.queue, self.dispatcher), server
        )
        return [pb.DESCRIPTOR.services_by_name["PostbackDispatcherService"].full_name]

    async def start(self) -> None:
        await self.queue.open()
        await self.dispatcher.start()

    async def stop(self) -> None:
        await self.dispatcher.stop()
        await self.queue.close()


def make_queue(config: PostbackConfig) -> PostbackQueue:
    """Redis Streams when a Redis URL is configured, else embedded SQLite."""
    if config.redis_url:
        from lookback.postback.redis_queue import RedisQueue

        return RedisQueue(
            config.redis_url,
            retention=config.delivered_retention,
            username=config.redis_username,
            password=config.redis_password,
            tls_ca=config.redis_tls_ca,
        )
    return SqliteQueue(config.queue_path, retention=config.delivered_retention)
