"""Reading every row of every table straight from a database (not through
the API), to show that nothing of an erased device is left anywhere."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

Values = list[tuple[str, Any]]
"""(table, value) for every column of every row."""


def sqlite_values(*paths: Path) -> Values:
    """Every value in every table of these SQLite files."""
    out: Values = []
    for path in paths:
        db = sqlite3.connect(path)
        try:
            names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for table in names:
                for row in db.execute(f"SELECT * FROM {table}"):
                    out += [(table, v) for v in row]
        finally:
            db.close()
    return out


def cassandra_values(host: str, port: int, keyspace: str) -> Values:
    """Every value in every table of a Cassandra keyspace (blocking)."""
    from cassandra.cluster import Cluster

    cluster = Cluster([host], port=port)
    try:
        session = cluster.connect()
        tables = session.execute(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (keyspace,)
        )
        out: Values = []
        for t in tables:
            for row in session.execute(f"SELECT * FROM {keyspace}.{t.table_name}"):
                out += [(t.table_name, v) for v in row]
        return out
    finally:
        cluster.shutdown()


def _holds(value: Any, needle: str) -> bool:
    if isinstance(value, bytes | bytearray):
        return needle.encode() in value
    return needle in str(value)


def tables_holding(values: Values, needle: str) -> list[str]:
    """The tables with a value containing ``needle`` (inside a serialized
    record too: protobuf keeps strings as they are)."""
    return sorted({table for table, v in values if _holds(v, needle)})
