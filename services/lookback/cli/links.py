"""``lookback links``: an app's attribution links, over the decider's LinkService.

lookback links create APP_ID --media-source P [--campaign C] [--adset A] [--ad A]
                     [--site-id S] [--deep-link-value V] [--param name=value ...]
                     [--web-fallback-url URL]
lookback links list APP_ID
lookback links get APP_ID CODE
lookback links update APP_ID CODE [--campaign C] [--deep-link-value V] [--param n=v ...]
                     [--web-fallback-url URL] [--enable]
lookback links disable APP_ID CODE

Each takes ``--target HOST:PORT`` (the decider; ``lookback up``: 7402),
``--admin-key`` (or ``LOOKBACK_ADMIN_KEY``; an app's ``s2s`` key manages its
own app's links) and the TLS flags. Output is JSON; ``--gateway URL`` adds
each link's public URL (``<gateway>/l/<code>``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from google.protobuf import field_mask_pb2

from lookback.api.links.v1 import link_service_pb2 as pb
from lookback.api.links.v1 import link_service_pb2_grpc as pb_grpc
from lookback.api.types.v1 import link_pb2
from lookback.cli.options import add_admin_key, admin_key, report_failure
from lookback.cli.tlsargs import add_tls_arguments, client_tls
from lookback.core import clients, jsonapi
from lookback.core.config import ConfigError
from lookback.core.errors import LookbackError

FIELDS = (
    "media_source",
    "campaign",
    "adset",
    "ad",
    "site_id",
    "deep_link_value",
    "web_fallback_url",
)


def _link(ns: argparse.Namespace) -> tuple[link_pb2.Link, list[str]]:
    """The link the flags describe, and the fields they name."""
    link = link_pb2.Link()
    named = []
    for name in FIELDS:
        value = getattr(ns, name, None)
        if value is not None:
            setattr(link, name, value)
            named.append(name)
    if ns.param:
        for pair in ns.param:
            name, sep, value = pair.partition("=")
            if not sep:
                raise ValueError(f"--param {pair!r}: give name=value")
            link.deep_link_params[name] = value
        named.append("deep_link_params")
    return link, named


def _shown(link: link_pb2.Link, gateway: str) -> dict[str, Any]:
    out = jsonapi.dump(link)
    if gateway:
        out["url"] = f"{gateway.rstrip('/')}/l/{link.code}"
    return out


async def _run(ns: argparse.Namespace) -> int:
    try:
        tls = client_tls(ns)
        link, named = _link(ns)
    except (ConfigError, ValueError) as exc:
        print(f"lookback links: {exc}", file=sys.stderr)
        return 2
    channel = clients.channel(ns.target, tls)
    stub = clients.stub(pb_grpc.LinkServiceStub, channel, 30.0, admin_key(ns, "lookback links"))
    try:
        out: Any
        if ns.action == "create":
            answer = await stub.CreateLink(pb.CreateLinkRequest(app_id=ns.app_id, link=link))
            out = {"link": _shown(answer.link, ns.gateway)}
        elif ns.action == "list":
            links, token = [], ""
            while True:
                page = await stub.ListLinks(
                    pb.ListLinksRequest(app_id=ns.app_id, page_size=1000, page_token=token)
                )
                links += [_shown(x, ns.gateway) for x in page.links]
                token = page.next_page_token
                if not token:
                    break
            out = {"links": links}
        elif ns.action == "get":
            got = await stub.GetLink(pb.GetLinkRequest(app_id=ns.app_id, code=ns.code))
            out = {"link": _shown(got.link, ns.gateway)}
        elif ns.action == "update":
            link.code = ns.code
            if ns.enable:
                named.append("disabled")  # disabled=false
            mask = field_mask_pb2.FieldMask(paths=named)
            updated = await stub.UpdateLink(
                pb.UpdateLinkRequest(app_id=ns.app_id, link=link, update_mask=mask)
            )
            out = {"link": _shown(updated.link, ns.gateway)}
        else:
            off = await stub.DisableLink(pb.DisableLinkRequest(app_id=ns.app_id, code=ns.code))
            out = {"link": _shown(off.link, ns.gateway)}
    except LookbackError as exc:
        return report_failure(f"lookback links {ns.action}", exc)
    finally:
        await channel.close()
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0


def _fields(p: argparse.ArgumentParser, required_source: bool) -> None:
    p.add_argument("--media-source", dest="media_source", required=required_source)
    for name in ("campaign", "adset", "ad", "site_id", "deep_link_value", "web_fallback_url"):
        p.add_argument(f"--{name.replace('_', '-')}", dest=name)
    p.add_argument(
        "--param", action="append", help="a deep-link parameter, name=value (repeat for more)"
    )


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="lookback links", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    helps = {
        "create": "a new link; prints it with its code",
        "list": "every link of the app",
        "get": "one link",
        "update": "change the fields named",
        "disable": "it still redirects (to the web fallback), records nothing",
    }
    for action, text in helps.items():
        p = sub.add_parser(action, help=text)
        p.add_argument("app_id")
        if action in ("get", "update", "disable"):
            p.add_argument("code")
        if action in ("create", "update"):
            _fields(p, action == "create")
        if action == "update":
            p.add_argument("--enable", action="store_true", help="enable a disabled link")
        p.add_argument("--target", default="127.0.0.1:7402", help="the decider (lookback up: 7402)")
        p.add_argument("--gateway", default="", help="the gateway's URL, to print links' URLs")
        add_admin_key(p)
        add_tls_arguments(p)
    ns = parser.parse_args(argv)
    for name in ("param", "enable", *FIELDS):
        if not hasattr(ns, name):
            setattr(ns, name, None if name != "enable" else False)
    return asyncio.run(_run(ns))
