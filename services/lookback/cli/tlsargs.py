"""TLS flags of the command-line tools that call a service over gRPC
(``lookback health``, ``lookback postbacks``): the same files a service
reads, defaulting to the same variables (``LOOKBACK_TLS_CA``, ``_CERT``,
``_KEY``), so a tool run where a service runs (a pod with the certificates
mounted) needs none."""

from __future__ import annotations

import argparse
import os

from lookback.core.config import env_name
from lookback.core.tls import ClientTls


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    for field, what in (
        ("tls_ca", "CA bundle to verify the service against"),
        ("tls_cert", "client certificate to present (mutual TLS)"),
        ("tls_key", "key of --tls-cert"),
    ):
        variable = env_name(field)
        parser.add_argument(
            "--" + field.replace("_", "-"),
            default=os.environ.get(variable, ""),
            help=f"PEM {what} (default ${variable}); none of them: plain text",
        )
    parser.add_argument(
        "--tls-server-name",
        default="",
        help="name the service's certificate carries when it is not the host called"
        " (e.g. decider, through kubectl port-forward)",
    )


def client_tls(ns: argparse.Namespace) -> ClientTls | None:
    """The client side the flags describe; None for plain text. ConfigError
    for half-set or unreadable files."""
    if not (ns.tls_ca or ns.tls_cert or ns.tls_key):
        return None
    return ClientTls(ns.tls_ca, ns.tls_cert, ns.tls_key, ns.tls_server_name)
