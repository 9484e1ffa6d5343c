"""Smoke test for a Cassandra started by scripts/cassandra.sh.

Usage:
    .venv/bin/python scripts/cassandra/smoke.py [--port 9042] write
        create keyspace + table, INSERT ... IF NOT EXISTS twice (first must
        apply, second must not), read the row back
    .venv/bin/python scripts/cassandra/smoke.py [--port 9042] read
        check the row written by `write` is still there (after a restart)

Exits non-zero on any mismatch. Needs cassandra-driver (>= 3.30.1).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

KEYSPACE = "lookback_smoke"


def connect(port: int) -> Any:
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc="datacenter1")),
        request_timeout=30,
    )
    cluster = Cluster(
        ["127.0.0.1"],
        port=port,
        protocol_version=5,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
    )
    return cluster, cluster.connect()


def write(session: Any) -> None:
    t = time.monotonic()
    session.execute(
        f"CREATE KEYSPACE IF NOT EXISTS {KEYSPACE} "
        "WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    session.execute(
        f"CREATE TABLE IF NOT EXISTS {KEYSPACE}.claims "
        "(id text PRIMARY KEY, owner text, created timestamp)"
    )
    print(f"schema ready in {time.monotonic() - t:.2f} s")
    session.execute(f"TRUNCATE {KEYSPACE}.claims")
    insert = session.prepare(
        f"INSERT INTO {KEYSPACE}.claims (id, owner, created) "
        "VALUES (?, ?, toTimestamp(now())) IF NOT EXISTS"
    )
    t = time.monotonic()
    first = session.execute(insert, ("order-1", "alice"))
    t_first = time.monotonic() - t
    t = time.monotonic()
    second = session.execute(insert, ("order-1", "bob"))
    t_second = time.monotonic() - t
    print(f"LWT 1: applied={first.was_applied} ({t_first * 1000:.1f} ms)")
    print(
        f"LWT 2: applied={second.was_applied} current owner={second.one().owner} "
        f"({t_second * 1000:.1f} ms)"
    )
    if not first.was_applied or second.was_applied:
        sys.exit("LWT semantics wrong: expected applied, then not applied")
    read(session)


def read(session: Any) -> None:
    row = session.execute(
        f"SELECT id, owner, created FROM {KEYSPACE}.claims WHERE id = %s", ("order-1",)
    ).one()
    print(f"SELECT: {None if row is None else (row.id, row.owner, str(row.created))}")
    if row is None or row.owner != "alice":
        sys.exit("row order-1/alice not found")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9042)
    parser.add_argument("mode", choices=["write", "read"])
    args = parser.parse_args()
    cluster, session = connect(args.port)
    try:
        release = session.execute("SELECT release_version FROM system.local").one()
        print(f"connected to Cassandra {release.release_version} on 127.0.0.1:{args.port}")
        if args.mode == "write":
            write(session)
        else:
            read(session)
        print("OK")
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
