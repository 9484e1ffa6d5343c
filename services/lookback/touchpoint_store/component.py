"""The touchpoint store as a servable component, on the backend its settings name."""

from __future__ import annotations

import grpc

from lookback.api.store.v1 import touchpoint_store_service_pb2 as pb
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as pb_grpc
from lookback.core import auth
from lookback.core.outbound import OutboundPolicy
from lookback.touchpoint_store.backend import StoreBackend
from lookback.touchpoint_store.config import StoreConfig
from lookback.touchpoint_store.servicer import TouchpointStore
from lookback.touchpoint_store.sqlite import SqliteBackend


class StoreComponent:
    """The store as a servable component."""

    name = "touchpoint_store"
    auth_rules = auth.admin_rules(pb.DESCRIPTOR.services_by_name["TouchpointStoreService"])
    """Internal: called by the other services (and operators) with admin keys."""

    def __init__(self, config: StoreConfig, backend: StoreBackend | None = None) -> None:
        self.config = config
        self.backend: StoreBackend = backend or make_backend(config)
        self.health_interval = config.health_interval
        self.outbound = OutboundPolicy(config.outbound_allow_cidrs)

    def register(self, server: grpc.aio.Server) -> list[str]:
        pb_grpc.add_TouchpointStoreServiceServicer_to_server(
            TouchpointStore(self.backend, self.outbound), server
        )
        return [pb.DESCRIPTOR.services_by_name["TouchpointStoreService"].full_name]

    async def start(self) -> None:
        await self.backend.open()

    async def stop(self) -> None:
        await self.backend.close()

    async def healthy(self) -> bool:
        """Whether the backend answers (polled by the server bootstrap)."""
        return await self.backend.healthy()


def make_backend(config: StoreConfig) -> StoreBackend:
    """Cassandra when contact points are configured, else embedded SQLite."""
    if not config.cassandra_hosts:
        return SqliteBackend(config.sqlite_path, log_outcomes=config.outcomes_log)
    from lookback.touchpoint_store.cassandra import CassandraBackend, CassandraSettings

    return CassandraBackend(
        CassandraSettings(
            hosts=tuple(h.strip() for h in config.cassandra_hosts.split(",") if h.strip()),
            port=config.cassandra_port,
            keyspace=config.cassandra_keyspace,
            replication=config.cassandra_replication,
            local_dc=config.cassandra_local_dc,
            consistency=config.cassandra_consistency,
            request_timeout=config.cassandra_request_timeout,
            migrate=config.cassandra_migrate,
            username=config.cassandra_username,
            password=config.cassandra_password,
            tls=config.cassandra_tls or bool(config.cassandra_tls_ca),
            tls_ca=config.cassandra_tls_ca,
            tls_check_hostname=config.cassandra_tls_check_hostname,
        ),
        log_outcomes=config.outcomes_log,
    )
