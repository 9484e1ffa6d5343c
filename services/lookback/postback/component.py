"""The postback dispatcher as a servable component, on the queue its settings name."""

from __future__ import annotations

import grpc

from lookback.api.postback.v1 import postback_dispatcher_service_pb2 as pb
from lookback.api.postback.v1 import postback_dispatcher_service_pb2_grpc as pb_grpc
from lookback.api.reports.v1 import reports_service_pb2 as reports_pb
from lookback.api.reports.v1 import reports_service_pb2_grpc as reports_grpc
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.core import auth, clients
from lookback.decider.client import AppDirectory
from lookback.postback.config import PostbackConfig
from lookback.postback.dispatcher import Dispatcher
from lookback.postback.queue import PostbackQueue, SqliteQueue
from lookback.postback.relay import Relay
from lookback.postback.servicer import PostbackDispatcherServicer
from lookback.reports.aggregator import Aggregator
from lookback.reports.counts import RedisCounts, ReportCounts, SqliteCounts
from lookback.reports.servicer import RULES as REPORT_RULES
from lookback.reports.servicer import ReportsServicer


class PostbackComponent:
    name = "postback"
    auth_rules = {
        **auth.admin_rules(pb.DESCRIPTOR.services_by_name["PostbackDispatcherService"]),
        **REPORT_RULES,
    }
    """The queue is internal: called by the other services (and operators)
    with admin keys. Reports: an app's ``s2s`` key or the admin."""

    def __init__(self, config: PostbackConfig, queue: PostbackQueue | None = None) -> None:
        self.config = config
        self.queue: PostbackQueue = queue or make_queue(config)
        self.dispatcher = Dispatcher(config, self.queue)
        self.health_interval = config.health_interval
        self.channels = clients.channels(config.store_address) if config.store_address else []
        self.counts = make_counts(self.queue)
        self.relay: Relay | None = None
        self.aggregator: Aggregator | None = None
        self.app_keys: AppDirectory | None = None
        if self.channels:
            store = clients.stub(
                store_grpc.TouchpointStoreServiceStub,
                self.channels[0],
                10.0,
                config.outgoing_key(),
            )
            self.relay = Relay(
                store,
                self.queue,
                on_queued=self.dispatcher.wakeup.set,
                interval=config.relay_interval,
                settle=config.relay_settle,
            )
            self.aggregator = Aggregator(store, self.counts, interval=config.report_interval)
            # An app's s2s key reads its reports: its keys are the store's.
            self.app_keys = AppDirectory(store)

    async def healthy(self) -> bool:
        return await self.queue.healthy()

    def register(self, server: grpc.aio.Server) -> list[str]:
        pb_grpc.add_PostbackDispatcherServiceServicer_to_server(
            PostbackDispatcherServicer(self.queue, self.dispatcher), server
        )
        reports_grpc.add_ReportsServiceServicer_to_server(ReportsServicer(self.counts), server)
        return [
            pb.DESCRIPTOR.services_by_name["PostbackDispatcherService"].full_name,
            reports_pb.DESCRIPTOR.services_by_name["ReportsService"].full_name,
        ]

    async def start(self) -> None:
        await self.queue.open()
        await self.dispatcher.start()
        if self.relay is not None:
            # Not waiting for the store: the relay's first pass retries until it answers.
            await self.relay.start()
        if self.aggregator is not None:
            await self.aggregator.start()

    async def stop(self) -> None:
        if self.aggregator is not None:
            await self.aggregator.stop()
        if self.relay is not None:
            await self.relay.stop()
        await clients.close(self.channels)
        await self.dispatcher.stop()
        await self.queue.close()


def make_counts(queue: PostbackQueue) -> ReportCounts:
    """The reports' counts, in the queue's own backend."""
    if isinstance(queue, SqliteQueue):
        return SqliteCounts(queue.db)
    from lookback.postback.redis_queue import RedisQueue

    if isinstance(queue, RedisQueue):
        return RedisCounts(lambda: queue.r, queue.prefix)
    raise TypeError(f"no report counts for a {type(queue).__name__}")


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
