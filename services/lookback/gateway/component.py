"""The gateway as a component on the shared bootstrap: its HTTP site starts
when it is warm and stops first on SIGTERM; its gRPC port serves health.
With a TLS certificate (``tls_cert``/``tls_key``) the HTTP site is HTTPS."""

from __future__ import annotations

import logging
import socket

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2_grpc

from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.decider.v1 import decider_service_pb2_grpc as decider_grpc
from lookback.api.explain.v1 import explain_service_pb2_grpc as explain_grpc
from lookback.api.links.v1 import link_service_pb2_grpc as links_grpc
from lookback.api.outcomes.v1 import outcomes_service_pb2_grpc as outcomes_grpc
from lookback.api.privacy.v1 import privacy_service_pb2_grpc as privacy_grpc
from lookback.api.reports.v1 import reports_service_pb2_grpc as reports_grpc
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.core import auth, clients, tls
from lookback.decider.client import AppDirectory, DeciderClient
from lookback.gateway.config import GatewayConfig
from lookback.gateway.http import Gateway, RedactedAccessLog
from lookback.touchpoint_store.client import TouchWriter


class GatewayComponent:
    name = "gateway"

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.channels = clients.channels(
            config.decider_address, config.store_address, config.reports_address
        )
        decider_ch, store_ch, reports_ch = self.channels
        key = config.outgoing_key()
        apps = clients.stub(apps_grpc.AppSettingsServiceStub, decider_ch, key=key)
        self.app_keys = directory = AppDirectory(apps)
        self.gateway = Gateway(
            decider=DeciderClient(
                clients.stub(
                    decider_grpc.DeciderServiceStub, decider_ch, config.decider_timeout, key
                )
            ),
            apps=apps,
            touches=TouchWriter(
                clients.stub(store_grpc.TouchpointStoreServiceStub, store_ch, key=key)
            ),
            health={
                "decider": clients.stub(health_pb2_grpc.HealthStub, decider_ch),
                "touchpoint_store": clients.stub(health_pb2_grpc.HealthStub, store_ch),
            },
            authenticator=auth.Authenticator(
                auth.read_admin_keys(config.admin_keys, config.admin_keys_file),
                directory,
                enabled=config.require_keys,
            ),
            directory=directory,
            config=config,
            outcomes=clients.stub(outcomes_grpc.OutcomesServiceStub, decider_ch, key=key),
            reports=clients.stub(reports_grpc.ReportsServiceStub, reports_ch, key=key),
            explain=(
                clients.stub(explain_grpc.ExplainServiceStub, decider_ch, key=key),
                (
                    explain_grpc.ExplainServiceStub(decider_ch).Simulate,
                    clients.key_metadata(key),
                ),
            ),
            # An access request reads every record of up to 100 devices.
            privacy=clients.stub(privacy_grpc.PrivacyServiceStub, decider_ch, 30.0, key),
            links=clients.stub(links_grpc.LinkServiceStub, decider_ch, key=key),
            # A stream has no deadline; the raw stub, with the key per call.
            watch=(
                outcomes_grpc.OutcomesServiceStub(decider_ch).WatchDecisions,
                clients.key_metadata(key),
            ),
        )
        self.runner: web.AppRunner | None = None
        self.http_port = 0
        self.ssl_context = tls.server_ssl_context(config)  # ConfigError if half set

    def register(self, server: grpc.aio.Server) -> list[str]:
        return []

    def listening(self) -> str:
        """What ``serve`` announces: the HTTP address."""
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.config.http_host}:{self.http_port}"

    async def start(self) -> None:
        await clients.wait_ready(self.channels)
        self.runner = web.AppRunner(
            self.gateway.app(),
            access_log=logging.getLogger("lookback.gateway.access"),
            access_log_class=RedactedAccessLog,
            shutdown_timeout=self.config.grace_period,
        )
        await self.runner.setup()
        sock = socket.socket(
            socket.AF_INET6 if ":" in self.config.http_host else socket.AF_INET, socket.SOCK_STREAM
        )
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.config.http_reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((self.config.http_host, self.config.http_port))
        self.http_port = sock.getsockname()[1]
        await web.SockSite(self.runner, sock, ssl_context=self.ssl_context).start()

    async def stop(self) -> None:
        self.gateway.draining = True
        if self.runner is not None:
            await self.runner.cleanup()
        await clients.close(self.channels)
