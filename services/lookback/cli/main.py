"""``lookback``: serve one service, run the whole suite, drive a demo.

lookback serve SERVICE [--flag value ...]   one service (flags: --help)
lookback up [--demo]                        the whole suite, supervised
lookback demo [--gateway URL]               clicks and installs, as a table
lookback postbacks dead|show|replay|partners dead letters, partner lanes (--help)
lookback apps create|show|rotate-key        apps and their keys (--help)
lookback links create|list|get|update|disable   an app's attribution links (--help)
lookback decisions get|list|tail            read decisions back (--help)
lookback report APP_ID [--bucket hour|day]  counts per media source, campaign, kind
lookback explain APP_ID INSTALL_ID          why a decision: every candidate and its verdict
lookback whatif APP_ID --set NAME=VALUE     which installs other settings would change
lookback erase APP_ID --gaid ID [--wait]    erase a device's records (--all-apps: every app's)
lookback erasure APP_ID ERASURE_ID          an erasure request's state and counts
lookback access APP_ID --gaid ID            every stored record of a device, as JSON
lookback migrate [--cassandra-hosts ...]    bring the Cassandra schema up to date
lookback health HOST:PORT [--service NAME]  one health check (TLS: --help)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lookback.cli.options import add_admin_key, admin_key
from lookback.core import clients
from lookback.core import config as cfg
from lookback.core.server import Component, ServerConfig, serve
from lookback.core.telemetry import configure_logging
from lookback.core.tls import ClientTls


@dataclass(frozen=True)
class ServiceSpec:
    config: type
    component: Callable[[Any], Component]


def _specs() -> dict[str, ServiceSpec]:
    from lookback.decider.component import DeciderComponent
    from lookback.decider.config import DeciderConfig
    from lookback.gateway.component import GatewayComponent
    from lookback.gateway.config import GatewayConfig
    from lookback.ingestion.component import IngestionComponent
    from lookback.ingestion.config import IngestionConfig
    from lookback.postback.component import PostbackComponent
    from lookback.postback.config import PostbackConfig
    from lookback.srn_adapter.component import SrnComponent
    from lookback.srn_adapter.config import SrnConfig
    from lookback.touchpoint_store.component import StoreComponent
    from lookback.touchpoint_store.config import StoreConfig

    return {
        "touchpoint_store": ServiceSpec(StoreConfig, StoreComponent),
        "decider": ServiceSpec(DeciderConfig, DeciderComponent),
        "ingestion": ServiceSpec(IngestionConfig, IngestionComponent),
        "srn_adapter": ServiceSpec(SrnConfig, SrnComponent),
        "postback": ServiceSpec(PostbackConfig, PostbackComponent),
        "gateway": ServiceSpec(GatewayConfig, GatewayComponent),
    }


SERVICE_NAMES = ("touchpoint_store", "srn_adapter", "postback", "decider", "ingestion", "gateway")


def run_service(name: str, argv: Sequence[str]) -> int:
    spec = _specs()[name]
    if "--help" in argv or "-h" in argv:
        print(f"lookback serve {name} [options]\n\n{cfg.describe(spec.config)}")
        return 0
    try:
        config: Any = cfg.load(spec.config, argv)
        client_tls = ClientTls.from_config(config)  # half-set or unreadable TLS files
    except cfg.ConfigError as exc:
        print(f"lookback serve {name}: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level)
    assert isinstance(config, ServerConfig)
    try:
        asyncio.run(_serve(spec, config, client_tls))
    except cfg.ConfigError as exc:  # found at start (e.g. redis_tls_ca without rediss://)
        print(f"lookback serve {name}: {exc}", file=sys.stderr)
        return 2
    return 0


async def _serve(spec: ServiceSpec, config: ServerConfig, client_tls: ClientTls | None) -> None:
    # The component is made inside the running loop: its gRPC channels belong
    # to it; and inside using_tls: they call the other services over TLS if
    # this service has TLS settings.
    with clients.using_tls(client_tls):
        await serve(spec.component(config), config)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="lookback", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run one service", add_help=False)
    p_serve.add_argument("service", choices=SERVICE_NAMES)
    p_up = sub.add_parser("up", help="run the whole suite locally, supervised")
    p_up.add_argument("--data-dir", default=".lookback/data", help="embedded store folder")
    p_up.add_argument("--host", default="127.0.0.1", help="address every service binds")
    p_up.add_argument("--base-port", type=int, default=7400, help="gRPC ports are base+1..base+5")
    p_up.add_argument("--http-port", type=int, default=8080, help="the gateway's HTTP port")
    p_up.add_argument("--gateway-processes", type=int, default=1, help="gateways on one port")
    p_up.add_argument("--srn-endpoints", default="", help="network=url,... for the SRN adapter")
    p_up.add_argument(
        "--outbound-allow-cidrs",
        default=None,
        metavar="CIDRS",
        help="ranges postbacks and SRN queries may reach although not public (127.0.0.0/8 for"
        " local receivers), handed to every service; default: LOOKBACK_OUTBOUND_ALLOW_CIDRS,"
        " else public addresses only",
    )
    p_up.add_argument(
        "--cassandra",
        default="",
        metavar="HOST:PORT",
        help="store in this Cassandra instead of the embedded SQLite store",
    )
    p_up.add_argument("--cassandra-keyspace", default="lookback", help="keyspace to use")
    p_up.add_argument("--redis", default="", metavar="URL", help="Redis: queue, cache coherence")
    p_up.add_argument("--demo", action="store_true", help="run the demo once the suite is ready")
    sub.add_parser("migrate", help="bring the Cassandra schema up to date (store flags)")
    sub.add_parser(
        "postbacks",
        help="dead|show|replay|partners: dead letters and partner lanes (the dispatcher's RPCs)",
    )
    sub.add_parser("apps", help="create|show|rotate-key: apps and their keys, over the decider")
    sub.add_parser("links", help="create|list|get|update|disable: an app's links (--help)")
    sub.add_parser("decisions", help="get|list|tail: read decisions back, over the decider")
    sub.add_parser("report", help="APP_ID: an app's counts as a table (--help)")
    sub.add_parser("explain", help="APP_ID INSTALL_ID: why a decision, as a table (--help)")
    sub.add_parser("whatif", help="APP_ID --set NAME=VALUE: what other settings change (--help)")
    sub.add_parser("erase", help="APP_ID --gaid ID ...: erase a device's records (--help)")
    sub.add_parser("erasure", help="APP_ID ERASURE_ID: an erasure request's state (--help)")
    sub.add_parser("access", help="APP_ID --gaid ID ...: a device's stored records (--help)")
    sub.add_parser("scenario", help="scenario run PATH ... [--target HOST:PORT] [--json]")
    sub.add_parser("health", help="HOST:PORT: one gRPC health check (over TLS: --help)")
    p_demo = sub.add_parser("demo", help="drive a running suite through the HTTP gateway")
    p_demo.add_argument("--gateway", default="http://127.0.0.1:8080", help="gateway base URL")
    add_admin_key(p_demo)

    if args[:2] == ["scenario", "run"]:
        from lookback.cli.scenarios import main as run_scenarios

        return run_scenarios(args[2:])
    if args[:1] == ["migrate"]:
        from lookback.cli.migrate import main as migrate

        return migrate(args[1:])
    if args[:1] == ["decisions"]:
        from lookback.cli.decisions import main as decisions

        return decisions(args[1:])
    if args[:1] == ["report"]:
        from lookback.cli.report import main as report

        return report(args[1:])
    if args[:1] == ["explain"]:
        from lookback.cli.explain import explain_main

        return explain_main(args[1:])
    if args[:1] == ["whatif"]:
        from lookback.cli.explain import whatif_main

        return whatif_main(args[1:])
    if args[:1] in (["erase"], ["erasure"], ["access"]):
        from lookback.cli import privacy

        command = {
            "erase": privacy.erase_main,
            "erasure": privacy.erasure_main,
            "access": privacy.access_main,
        }[args[0]]
        return command(args[1:])
    if args[:1] == ["apps"]:
        from lookback.cli.apps import main as apps

        return apps(args[1:])
    if args[:1] == ["links"]:
        from lookback.cli.links import main as links

        return links(args[1:])
    if args[:1] == ["health"]:
        from lookback.cli.health import main as health

        return health(args[1:])
    if args[:1] == ["postbacks"]:
        from lookback.cli.postbacks import main as postbacks

        return postbacks(args[1:])
    if args[:1] == ["serve"]:
        known, rest = p_serve.parse_known_args(args[1:])
        return run_service(known.service, rest)
    ns = parser.parse_args(args)
    if ns.command == "up":
        from lookback.cli.suite import run_up

        return run_up(ns)
    if ns.command == "demo":
        from lookback.cli.demo import run_demo

        tls = ClientTls.from_env()  # an https gateway with a private CA: LOOKBACK_TLS_CA
        demo_key = admin_key(ns, "lookback demo")
        return asyncio.run(run_demo(ns.gateway, demo_key, tls.ssl_context() if tls else None))
    return 2


if __name__ == "__main__":
    sys.exit(main())
