"""``lookback migrate``: bring the Cassandra schema up to date, then exit.

Takes the touchpoint store's settings (flags or ``LOOKBACK_*`` environment),
waits for Cassandra, applies every migration not yet recorded (idempotent,
safe to run again or beside a starting store) and prints the schema versions.
Run it as a Kubernetes Job before rolling out a store that needs a new
schema, with the store's ``--cassandra-migrate false``.

``--backfill-install-items`` then fills schema 7's ``install_items`` from
the events and open decisions recorded before it (so that erasures and
access requests find them; docs/privacy.md). Idempotent; once is enough.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from lookback.core import config as cfg
from lookback.core.telemetry import configure_logging

BACKFILL = "--backfill-install-items"


async def _migrate(config: object, backfill: bool = False) -> int:
    from lookback.touchpoint_store import schema
    from lookback.touchpoint_store.cassandra import CassandraBackend, backfill_install_items
    from lookback.touchpoint_store.component import make_backend
    from lookback.touchpoint_store.config import StoreConfig

    assert isinstance(config, StoreConfig)
    backend = make_backend(config)
    if not isinstance(backend, CassandraBackend):
        print("lookback migrate: no --cassandra-hosts given (the embedded store migrates itself)")
        return 2
    await backend.open()  # waits for Cassandra, then migrates
    try:
        assert backend.session is not None
        versions = await asyncio.to_thread(
            schema.applied_versions, backend.session, config.cassandra_keyspace
        )
        if backfill:
            events, opens = await backfill_install_items(backend)
            print(f"install_items: {events} events and {opens} open decisions indexed", flush=True)
    finally:
        await backend.close()
    print(f"keyspace {config.cassandra_keyspace}: schema versions {sorted(versions)}", flush=True)
    return 0


def main(argv: Sequence[str]) -> int:
    from lookback.touchpoint_store.config import StoreConfig

    if "--help" in argv or "-h" in argv:
        print(f"{__doc__}\n{cfg.describe(StoreConfig)}")
        return 0
    backfill = BACKFILL in argv
    argv = [a for a in argv if a != BACKFILL]
    try:
        config = cfg.load(StoreConfig, argv)
    except cfg.ConfigError as exc:
        print(f"lookback migrate: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level)
    return asyncio.run(_migrate(config, backfill))
