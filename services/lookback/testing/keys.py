"""Keys for tests: one admin key per test process, made at import.

Everything the testing package starts (:class:`~lookback.testing.suite.EphemeralSuite`,
the processes of :mod:`lookback.testing.processes`) is given this key, and
tests present it with :func:`admin_channel` and :func:`admin_headers`. It is
random, so nothing outside this process knows it; services themselves have
no default key at all.
"""

from __future__ import annotations

import grpc

from lookback.core import auth, clients

ADMIN_KEY = auth.new_admin_key()
"""This test process's admin key."""


def admin_env(key: str = ADMIN_KEY) -> dict[str, str]:
    """Environment giving a service (``LOOKBACK_ADMIN_KEYS``) and an operator
    command (``LOOKBACK_ADMIN_KEY``) the admin key."""
    return {"LOOKBACK_ADMIN_KEYS": key, "LOOKBACK_ADMIN_KEY": key}


def bearer(key: str) -> dict[str, str]:
    """HTTP headers presenting ``key``."""
    return {"Authorization": f"Bearer {key}"}


def admin_headers() -> dict[str, str]:
    """HTTP headers presenting the admin key."""
    return bearer(ADMIN_KEY)


def admin_channel(address: str) -> grpc.aio.Channel:
    """A channel whose every call presents the admin key."""
    return clients.channel(address, key=ADMIN_KEY)


def key_channel(address: str, key: str) -> grpc.aio.Channel:
    """A channel whose every call presents ``key`` (an app key, a wrong one...)."""
    return clients.channel(address, key=key)
