"""``lookback health``: one health check of a gRPC service, over TLS or
mutual TLS when asked (flags or ``LOOKBACK_TLS_*``, see
:mod:`lookback.cli.tlsargs`).

lookback health HOST:PORT [--service NAME] [--timeout S] [--tls-... FILE]

Prints the status and exits 0 when SERVING, 1 otherwise (not serving,
unreachable, refused). Usable as an exec probe, or by an operator checking a
service that only speaks mutual TLS.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lookback.cli.tlsargs import add_tls_arguments, client_tls
from lookback.core import clients
from lookback.core.config import ConfigError
from lookback.core.tls import ClientTls


async def check(address: str, service: str, timeout: float, tls: ClientTls | None) -> str:
    """The status name the server at ``address`` reports for ``service``."""
    async with clients.channel(address, tls) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout
        )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="lookback health", description=__doc__.splitlines()[0])
    parser.add_argument("address", metavar="HOST:PORT", help="the service's gRPC port")
    parser.add_argument("--service", default="", help="health name ('liveness'; default: all)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds (default 2)")
    add_tls_arguments(parser)
    ns = parser.parse_args(argv)
    try:
        tls = client_tls(ns)
    except ConfigError as exc:
        print(f"lookback health: {exc}", file=sys.stderr)
        return 2
    try:
        status = asyncio.run(check(ns.address, ns.service, ns.timeout, tls))
    except grpc.aio.AioRpcError as exc:
        print(f"lookback health: {ns.address}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    print(status)
    return 0 if status == "SERVING" else 1
