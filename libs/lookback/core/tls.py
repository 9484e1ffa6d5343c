"""TLS and mutual TLS between services, from PEM files named in the config.

A service's :class:`~lookback.core.server.ServerConfig` names up to three
files: ``tls_cert`` and ``tls_key`` (its certificate and key) and ``tls_ca``
(the CA bundle it trusts). As a server:

- ``tls_cert`` + ``tls_key``: its gRPC port (and the gateway's HTTP site) is
  TLS;
- with ``tls_ca`` too, gRPC clients must present a certificate signed by it
  (mutual TLS);
- none: plain text (the default).

As a client (:class:`ClientTls`, the default of every channel
:func:`lookback.core.clients.channel` makes): TLS as soon as any of them is
set, verifying servers against ``tls_ca`` (the system's CAs without one) and
presenting ``tls_cert`` as its client certificate. The server's name is the
host of the address it is called at, so certificates name the addresses the
services are called by (``decider``, ``decider.lookback.svc``... in
Kubernetes, ``localhost`` or ``127.0.0.1`` on one machine).

Certificates are read once, at start: a renewed certificate takes effect
when the process restarts.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc

from lookback.core.config import ConfigError, env_name


class TlsSettings(Protocol):
    """The TLS fields of a config (``ServerConfig`` has them)."""

    @property
    def tls_cert(self) -> str: ...
    @property
    def tls_key(self) -> str: ...
    @property
    def tls_ca(self) -> str: ...


@dataclass(frozen=True)
class _Files:
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""


def _read(field: str, path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{field}: cannot read {path}: {exc.strerror or exc}") from exc
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{field}: {path} is not PEM")
    return data


def check(settings: TlsSettings) -> None:
    """ConfigError unless the TLS settings are whole: a certificate and its
    key together (or neither); a CA alone is a client-only setting."""
    if bool(settings.tls_cert) != bool(settings.tls_key):
        given, missing = ("tls_cert", "tls_key") if settings.tls_cert else ("tls_key", "tls_cert")
        raise ConfigError(f"{given} is set but {missing} is not: TLS needs both")


def server_enabled(settings: TlsSettings) -> bool:
    """Whether this service serves TLS (it has a certificate)."""
    check(settings)
    return bool(settings.tls_cert)


def server_credentials(settings: TlsSettings) -> grpc.ServerCredentials | None:
    """gRPC server credentials (client certificates required with a CA), or
    None for plain text. ConfigError for a half-set config or unreadable files."""
    if not server_enabled(settings):
        return None
    pair = (_read("tls_key", settings.tls_key), _read("tls_cert", settings.tls_cert))
    ca = _read("tls_ca", settings.tls_ca) if settings.tls_ca else None
    return grpc.ssl_server_credentials(
        [pair], root_certificates=ca, require_client_auth=ca is not None
    )


def server_ssl_context(settings: TlsSettings) -> ssl.SSLContext | None:
    """An HTTPS server context with the service's certificate, or None for
    plain text. Client certificates are not asked for: the gateway's HTTP
    callers are apps and browsers (through the ingress controller)."""
    if not server_enabled(settings):
        return None
    _read("tls_cert", settings.tls_cert)  # a clear ConfigError before ssl's own
    _read("tls_key", settings.tls_key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except ssl.SSLError as exc:
        raise ConfigError(f"tls_cert/tls_key: {exc}") from exc
    return context


@dataclass(frozen=True)
class ClientTls:
    """How a client reaches TLS servers, from PEM files: the CA bundle it
    verifies them against (empty: the system's CAs), the certificate and key
    it presents (empty: none). A server's certificate must name the host it
    is called by, or ``server_name`` when given (gRPC only: an operator's
    tool reaching ``decider`` through ``kubectl port-forward`` at 127.0.0.1).

    The files are checked when it is made and read whenever credentials are
    made from it (once per channel)."""

    ca: str = ""
    cert: str = ""
    key: str = ""
    server_name: str = ""

    def __post_init__(self) -> None:
        if bool(self.cert) != bool(self.key):
            raise ConfigError("a client certificate needs its key, and a key its certificate")
        for field, path in (("tls_ca", self.ca), ("tls_cert", self.cert), ("tls_key", self.key)):
            if path:
                _read(field, path)

    @classmethod
    def from_config(cls, settings: TlsSettings) -> ClientTls | None:
        """A service's client side: None (plain text) when it has no TLS settings."""
        check(settings)
        if not (settings.tls_ca or settings.tls_cert):
            return None
        return cls(settings.tls_ca, settings.tls_cert, settings.tls_key)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClientTls | None:
        """The client side of ``LOOKBACK_TLS_CERT``, ``_KEY`` and ``_CA`` (the
        command-line tools: ``lookback up``'s health checks, ``lookback
        health``, ``lookback postbacks``)."""
        env = os.environ if env is None else env
        return cls.from_config(
            _Files(*(env.get(env_name(f), "") for f in ("tls_cert", "tls_key", "tls_ca")))
        )

    def credentials(self) -> grpc.ChannelCredentials:
        """gRPC channel credentials."""
        return grpc.ssl_channel_credentials(
            root_certificates=_read("tls_ca", self.ca) if self.ca else None,
            private_key=_read("tls_key", self.key) if self.key else None,
            certificate_chain=_read("tls_cert", self.cert) if self.cert else None,
        )

    def channel_options(self) -> list[tuple[str, str]]:
        """gRPC channel options: the server name override, if any."""
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []

    def ssl_context(self) -> ssl.SSLContext:
        """The same settings for an HTTPS client (aiohttp's ``ssl=``)."""
        context = ssl.create_default_context(cafile=self.ca or None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert:
            context.load_cert_chain(self.cert, self.key)
        return context
