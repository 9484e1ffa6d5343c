"""``lookback apps``: apps and their keys for operators, over the decider's RPCs.

lookback apps create APP_ID --platform android|ios|other [--settings JSON]
lookback apps show APP_ID
lookback apps rotate-key APP_ID --scope sdk|s2s [--grace 24h]

Each takes ``--target HOST:PORT`` (the decider; ``lookback up``: 7402) and
``--admin-key`` (or ``LOOKBACK_ADMIN_KEY``), and the TLS flags of the other
tools (``--tls-ca``, ...; default ``LOOKBACK_TLS_*``). Output is JSON; ``create`` and
``rotate-key`` print the new keys, which are never shown again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.types.v1 import app_pb2
from lookback.cli.options import add_admin_key, admin_key, report_failure
from lookback.cli.tlsargs import add_tls_arguments, client_tls
from lookback.core import auth, clients, jsonapi
from lookback.core.config import ConfigError
from lookback.core.errors import LookbackError


def _shown(app: app_pb2.App) -> dict[str, Any]:
    out = jsonapi.dump(app)
    out["keys"] = [
        {
            "scope": auth.SCOPE_NAMES.get(k.scope, "?"),
            "sha256_prefix": k.key_sha256.hex()[:12],
            **(
                {"expire_time": jsonapi.dump(k)["expire_time"]} if k.HasField("expire_time") else {}
            ),
        }
        for k in app.keys
    ]
    return out


async def _run(ns: argparse.Namespace) -> int:
    try:
        tls = client_tls(ns)
    except ConfigError as exc:
        print(f"lookback apps: {exc}", file=sys.stderr)
        return 2
    channel = clients.channel(ns.target, tls)
    stub = clients.stub(
        apps_grpc.AppSettingsServiceStub, channel, 30.0, admin_key(ns, "lookback apps")
    )
    try:
        if ns.action == "create":
            body: dict[str, Any] = {"app_id": ns.app_id, "platform": ns.platform}
            if ns.settings:
                body["settings"] = json.loads(ns.settings)
            app = jsonapi.parse(app_pb2.App, body)
            created = await stub.CreateApp(apps_pb.CreateAppRequest(app=app))
            out = {
                "app": _shown(created.app),
                "keys": {"sdk": created.keys.sdk, "s2s": created.keys.s2s},
            }
        elif ns.action == "show":
            got = await stub.GetApp(apps_pb.GetAppRequest(app_id=ns.app_id))
            out = {"app": _shown(got.app)}
        else:
            req = jsonapi.parse(
                apps_pb.RotateAppKeyRequest,
                {"app_id": ns.app_id, "scope": ns.scope, "grace_period": ns.grace},
            )
            rotated = await stub.RotateAppKey(req)
            out = {
                "key": rotated.key,
                "scope": ns.scope,
                "previous_keys_expire_time": jsonapi.dump(rotated)["previous_keys_expire_time"],
            }
    except LookbackError as exc:
        return report_failure(f"lookback apps {ns.action}", exc)
    finally:
        await channel.close()
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="lookback apps", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="register an app; prints its first keys")
    create.add_argument("--platform", required=True, choices=["android", "ios", "other"])
    create.add_argument("--settings", default="", help="settings as JSON (as in POST /v1/apps)")
    sub.add_parser("show", help="show an app (its keys only as hash prefixes)")
    rotate = sub.add_parser("rotate-key", help="issue a new key; the old one works for --grace")
    rotate.add_argument("--scope", required=True, choices=["sdk", "s2s"])
    rotate.add_argument("--grace", default="24h", help="how long the old key keeps working")
    for p in sub.choices.values():
        p.add_argument("app_id")
        p.add_argument("--target", default="127.0.0.1:7402", help="the decider (lookback up: 7402)")
        add_admin_key(p)
        add_tls_arguments(p)
    return asyncio.run(_run(parser.parse_args(argv)))
