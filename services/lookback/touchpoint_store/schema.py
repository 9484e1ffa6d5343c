"""The Cassandra schema, designed by query, and its versioned migrations.

| query | table | partition key |
|---|---|---|
| touch by click id (install referrer, deep link) | ``touches`` | (app_id, click_id) |
| touches by device or IP key, newest first, in a range | ``touches_by_key`` | (app_id, key) |
| install record by install id (exactly once) | ``installs`` | (app_id, install_id) |
| prior installs by device key, newest first | ``installs_by_device`` | (app_id, key) |
| event by event id (exactly once) | ``events`` | (app_id, event_id) |
| app by id | ``apps`` | app_id |
| link by code; an app's links by code | ``links``; ``links_by_app`` | code; app_id |
| an app's outcomes log (the outbox) after a cursor | ``outcomes`` | (app_id, bucket) |
| an app's decisions in a time range, newest first | ``decisions_by_day`` | (app_id, bucket) |
| decision by id | ``decisions_by_id`` | (app_id, decision_id) |

``bucket`` is a UTC day (days since the epoch) of the entry's time.

Keys are the opaque match keys of :mod:`lookback.domain.devices`: ``gaid:<raw>``,
``sha1:gaid:<hex>``, ``md5:gaid:<hex>``, ``ip:<address>`` (the probabilistic
fingerprint's partition; the user agents are compared by the rules).
``touches_by_key`` carries the touch itself and ``installs_by_device`` the
install record, so a look-up is one read; the reads name every key at once.

Retention is a TTL on every write (see ``backend.py``); the tables also have
``default_time_to_live`` as a backstop. Each migration is a list of
idempotent statements, recorded in ``schema_version`` once applied, so any
number of store replicas may start at once.
"""

from __future__ import annotations

import logging
import re

from cassandra import InvalidRequest
from cassandra.cluster import Session

log = logging.getLogger("lookback.store.schema")

DAY_S = 86_400

MIGRATIONS: dict[int, list[str]] = {
    1: [
        f"""CREATE TABLE IF NOT EXISTS touches (
            app_id text, click_id text, engaged_at timestamp, body blob,
            PRIMARY KEY ((app_id, click_id))
        ) WITH default_time_to_live = {31 * DAY_S}""",
        f"""CREATE TABLE IF NOT EXISTS touches_by_key (
            app_id text, key text, engaged_at timestamp, click_id text, body blob,
            PRIMARY KEY ((app_id, key), engaged_at, click_id)
        ) WITH CLUSTERING ORDER BY (engaged_at DESC, click_id ASC)
          AND default_time_to_live = {31 * DAY_S}""",
        f"""CREATE TABLE IF NOT EXISTS installs (
            app_id text, install_id text, installed_at timestamp, body blob, reengagement blob,
            PRIMARY KEY ((app_id, install_id))
        ) WITH default_time_to_live = {(24 * 30 + 1) * DAY_S}""",
        f"""CREATE TABLE IF NOT EXISTS installs_by_device (
            app_id text, key text, installed_at timestamp, install_id text,
            PRIMARY KEY ((app_id, key), installed_at, install_id)
        ) WITH CLUSTERING ORDER BY (installed_at DESC, install_id ASC)
          AND default_time_to_live = {(24 * 30 + 1) * DAY_S}""",
        f"""CREATE TABLE IF NOT EXISTS events (
            app_id text, event_id text, body blob, attribution blob,
            PRIMARY KEY ((app_id, event_id))
        ) WITH default_time_to_live = {(24 * 30 + 1) * DAY_S}""",
        """CREATE TABLE IF NOT EXISTS apps (
            app_id text PRIMARY KEY, version bigint, body blob
        )""",
    ],
    # 2: prior installs in one read: the record travels with its device key.
    2: ["ALTER TABLE installs_by_device ADD body blob"],
    # 3: the outcomes log (the outbox) and the decision index.
    3: [
        f"""CREATE TABLE IF NOT EXISTS outcomes (
            app_id text, bucket int, position timeuuid, body blob,
            PRIMARY KEY ((app_id, bucket), position)
        ) WITH CLUSTERING ORDER BY (position ASC)
          AND default_time_to_live = {8 * DAY_S}""",
        f"""CREATE TABLE IF NOT EXISTS decisions_by_day (
            app_id text, bucket int, decided_at bigint, decision_id text, body blob,
            PRIMARY KEY ((app_id, bucket), decided_at, decision_id)
        ) WITH CLUSTERING ORDER BY (decided_at DESC, decision_id DESC)
          AND default_time_to_live = {(24 * 30 + 1) * DAY_S}""",
        f"""CREATE TABLE IF NOT EXISTS decisions_by_id (
            app_id text, decision_id text, body blob,
            PRIMARY KEY ((app_id, decision_id))
        ) WITH default_time_to_live = {(24 * 30 + 1) * DAY_S}""",
    ],
    # 4: an event's log time, so a retried PutEvent re-appends at the same place.
    4: ["ALTER TABLE events ADD logged_at bigint"],
    # 5: an install's outcome entry, so that a later create (a retry, a
    # duplicate report) can write an entry the first create did not finish.
    5: ["ALTER TABLE installs ADD outcome blob"],
    # 6: an open's explanation, with its decision (an install's is in its record).
    6: ["ALTER TABLE decisions_by_id ADD explanation blob"],
    # 7: what an erasure finds by install id besides the record (its opens'
    # decisions ``d:<id>`` and events ``e:<id>``, with the time their log
    # entries were placed at), and the erasure requests (the pending ones
    # also in one small partition, to resume them).
    7: [
        f"""CREATE TABLE IF NOT EXISTS install_items (
            app_id text, install_id text, item text, at bigint,
            PRIMARY KEY ((app_id, install_id), item)
        ) WITH default_time_to_live = {(24 * 30 + 1) * DAY_S}""",
        """CREATE TABLE IF NOT EXISTS erasures (
            erasure_id text PRIMARY KEY, body blob
        )""",
        """CREATE TABLE IF NOT EXISTS erasures_pending (
            shard int, erasure_id text, PRIMARY KEY (shard, erasure_id)
        )""",
    ],
    # 8: links, by code (the public look-up) and by app (listing).
    8: [
        """CREATE TABLE IF NOT EXISTS links (code text PRIMARY KEY, app_id text, body blob)""",
        """CREATE TABLE IF NOT EXISTS links_by_app (
            app_id text, code text, body blob, PRIMARY KEY ((app_id), code)
        )""",
    ],
}

FIRST_WRITE_WINS = 1 << 62
"""Touches are written at write time ``FIRST_WRITE_WINS - now``: a later write of
the same click id has a lower time, so Cassandra keeps the first version.
(Touches are never updated or deleted; they leave by TTL, which does not
depend on write time. Compaction is size-tiered, which does not either.)"""

STATEMENTS: dict[str, str] = {
    "ping": "SELECT release_version FROM system.local",
    # Touches are written with an inverted write time (see FIRST_WRITE_WINS),
    # so the first version of a click id wins without a lightweight transaction.
    "put_touch": "INSERT INTO touches (app_id, click_id, engaged_at, body) VALUES (?, ?, ?, ?)"
    " USING TTL ? AND TIMESTAMP ?",
    "put_touch_key": "INSERT INTO touches_by_key (app_id, key, engaged_at, click_id, body)"
    " VALUES (?, ?, ?, ?, ?) USING TTL ? AND TIMESTAMP ?",
    # Reads by key name every key at once (``IN``): one request however
    # many partitions (the SHA-1 and MD5 forms of each identifier, the IP).
    "touches_by_keys": "SELECT body FROM touches_by_key WHERE app_id = ? AND key IN ?"
    " AND engaged_at >= ? AND engaged_at <= ?",
    "touches_by_ids": "SELECT body FROM touches WHERE app_id = ? AND click_id IN ?",
    "install_by_id": "SELECT body, reengagement FROM installs WHERE app_id = ? AND install_id = ?",
    "installs_by_keys": "SELECT install_id, body FROM installs_by_device"
    " WHERE app_id = ? AND key IN ? PER PARTITION LIMIT ?",
    "create_install": "INSERT INTO installs (app_id, install_id, installed_at, body, outcome)"
    " VALUES (?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?",
    "put_install_key": "INSERT INTO installs_by_device"
    " (app_id, key, installed_at, install_id, body) VALUES (?, ?, ?, ?, ?) USING TTL ?",
    "set_reengagement": "UPDATE installs USING TTL ? SET reengagement = ?"
    " WHERE app_id = ? AND install_id = ?",
    "create_event": "INSERT INTO events (app_id, event_id, body, attribution, logged_at)"
    " VALUES (?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?",
    "put_outcome": "INSERT INTO outcomes (app_id, bucket, position, body) VALUES (?, ?, ?, ?)"
    " USING TTL ?",
    "outcomes_after": "SELECT position, body FROM outcomes WHERE app_id = ? AND bucket = ?"
    " AND position > ? LIMIT ?",
    "outcomes_from": "SELECT position, body FROM outcomes WHERE app_id = ? AND bucket = ? LIMIT ?",
    "put_decision_by_day": "INSERT INTO decisions_by_day"
    " (app_id, bucket, decided_at, decision_id, body) VALUES (?, ?, ?, ?, ?) USING TTL ?",
    "put_decision_by_id": "INSERT INTO decisions_by_id (app_id, decision_id, body)"
    " VALUES (?, ?, ?) USING TTL ?",
    "decision_by_id": "SELECT body FROM decisions_by_id WHERE app_id = ? AND decision_id = ?",
    "set_explanation": "UPDATE decisions_by_id USING TTL ? SET explanation = ?"
    " WHERE app_id = ? AND decision_id = ?",
    "explanation_by_id": "SELECT explanation FROM decisions_by_id"
    " WHERE app_id = ? AND decision_id = ?",
    "decisions_before": "SELECT decided_at, decision_id, body FROM decisions_by_day"
    " WHERE app_id = ? AND bucket = ? AND (decided_at, decision_id) < (?, ?) LIMIT ?",
    "create_app": "INSERT INTO apps (app_id, version, body) VALUES (?, ?, ?) IF NOT EXISTS",
    "app_by_id": "SELECT body FROM apps WHERE app_id = ?",
    "apps_first": "SELECT app_id FROM apps LIMIT ?",
    "apps_after": "SELECT app_id FROM apps WHERE token(app_id) > token(?) LIMIT ?",
    "replace_app": "UPDATE apps SET version = ?, body = ? WHERE app_id = ? IF version = ?",
    # --- data subjects (erasure and access) ---
    "put_install_item": "INSERT INTO install_items (app_id, install_id, item, at)"
    " VALUES (?, ?, ?, ?) USING TTL ?",
    "install_items": "SELECT install_id, item, at FROM install_items"
    " WHERE app_id = ? AND install_id IN ?",
    "device_index_rows": "SELECT key, installed_at, install_id FROM installs_by_device"
    " WHERE app_id = ? AND key IN ?",
    "installs_by_ids": "SELECT install_id, body, reengagement FROM installs"
    " WHERE app_id = ? AND install_id IN ?",
    "touch_index_rows": "SELECT key, engaged_at, click_id FROM touches_by_key"
    " WHERE app_id = ? AND key IN ?",
    "events_by_ids": "SELECT event_id, body, attribution FROM events"
    " WHERE app_id = ? AND event_id IN ?",
    "decisions_by_ids": "SELECT decision_id, body, explanation FROM decisions_by_id"
    " WHERE app_id = ? AND decision_id IN ?",
    "outcomes_at": "SELECT position, body, TTL(body) AS ttl FROM outcomes"
    " WHERE app_id = ? AND bucket = ? AND position IN ?",
    # Touches were written at an inverted time (FIRST_WRITE_WINS - now): their
    # deletes must be later than any such write.
    "delete_touch": "DELETE FROM touches USING TIMESTAMP ? WHERE app_id = ? AND click_id = ?",
    "delete_touch_key": "DELETE FROM touches_by_key USING TIMESTAMP ?"
    " WHERE app_id = ? AND key = ? AND engaged_at = ? AND click_id = ?",
    "delete_install": "DELETE FROM installs WHERE app_id = ? AND install_id = ?",
    "delete_install_key": "DELETE FROM installs_by_device"
    " WHERE app_id = ? AND key = ? AND installed_at = ? AND install_id = ?",
    "delete_install_items": "DELETE FROM install_items WHERE app_id = ? AND install_id = ?",
    "delete_event": "DELETE FROM events WHERE app_id = ? AND event_id = ?",
    "delete_decision_by_id": "DELETE FROM decisions_by_id WHERE app_id = ? AND decision_id = ?",
    "delete_decision_by_day": "DELETE FROM decisions_by_day"
    " WHERE app_id = ? AND bucket = ? AND decided_at = ? AND decision_id = ?",
    "put_erasure": "INSERT INTO erasures (erasure_id, body) VALUES (?, ?)",
    "erasure_by_id": "SELECT body FROM erasures WHERE erasure_id = ?",
    "mark_erasure_pending": "INSERT INTO erasures_pending (shard, erasure_id) VALUES (0, ?)",
    "unmark_erasure_pending": "DELETE FROM erasures_pending WHERE shard = 0 AND erasure_id = ?",
    "pending_erasures": "SELECT erasure_id FROM erasures_pending WHERE shard = 0 LIMIT ?",
    # --- links ---
    "create_link": "INSERT INTO links (code, app_id, body) VALUES (?, ?, ?) IF NOT EXISTS",
    "replace_link": "INSERT INTO links (code, app_id, body) VALUES (?, ?, ?)",
    "put_link_by_app": "INSERT INTO links_by_app (app_id, code, body) VALUES (?, ?, ?)",
    "link_by_code": "SELECT body FROM links WHERE code = ?",
    "links_of_app": "SELECT body FROM links_by_app WHERE app_id = ? AND code > ? LIMIT ?",
}


_TABLE = re.compile(r"\b(FROM|INTO|UPDATE) (?!system\.)(\w+)\b")


def qualified(cql: str, keyspace: str) -> str:
    """``cql`` with its table names qualified by ``keyspace`` (no ``USE``:
    prepared statements must not depend on a session's keyspace)."""
    return _TABLE.sub(lambda m: f"{m.group(1)} {keyspace}.{m.group(2)}", cql)


def replication_map(spec: str) -> dict[str, str | int]:
    """``SimpleStrategy:1`` or ``NetworkTopologyStrategy:dc1=3,dc2=3``."""
    strategy, _, rest = spec.partition(":")
    if strategy == "SimpleStrategy":
        return {"class": "SimpleStrategy", "replication_factor": int(rest or 1)}
    if strategy == "NetworkTopologyStrategy":
        out: dict[str, str | int] = {"class": "NetworkTopologyStrategy"}
        for part in filter(None, rest.split(",")):
            dc, _, rf = part.partition("=")
            out[dc.strip()] = int(rf)
        return out
    raise ValueError(f"unknown replication {spec!r}")


class SchemaBehind(RuntimeError):
    """The keyspace lacks migrations this version of the store needs."""


def applied_versions(session: Session, keyspace: str) -> set[int]:
    """Migrations recorded in ``keyspace`` (empty if it has no schema yet)."""
    try:
        rows = session.execute(
            f"SELECT version FROM {keyspace}.schema_version WHERE component = 'store'"
        )
    except InvalidRequest:  # no keyspace or no table yet
        return set()
    return {row["version"] if isinstance(row, dict) else row.version for row in rows}


def require_current(session: Session, keyspace: str) -> None:
    """Raise :class:`SchemaBehind` unless every migration has been applied."""
    missing = sorted(set(MIGRATIONS) - applied_versions(session, keyspace))
    if missing:
        raise SchemaBehind(
            f"keyspace {keyspace!r} lacks schema versions {missing}: run `lookback migrate`"
            " with the store's Cassandra settings (or start with --cassandra-migrate true)"
        )


def migrate(session: Session, keyspace: str, replication: str) -> list[int]:
    """Create the keyspace and apply every migration not yet recorded
    (blocking: run it in a thread). Returns the versions applied now."""
    options = ", ".join(
        f"'{k}': {v!r}" if isinstance(v, str) else f"'{k}': {v}"
        for k, v in replication_map(replication).items()
    )
    session.execute(f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {{{options}}}")
    session.execute(
        f"CREATE TABLE IF NOT EXISTS {keyspace}.schema_version"
        " (component text, version int, applied_at timestamp, PRIMARY KEY (component, version))"
    )
    done = applied_versions(session, keyspace)
    applied = []
    for version in sorted(v for v in MIGRATIONS if v not in done):
        for statement in MIGRATIONS[version]:
            qualified = statement.replace(
                "CREATE TABLE IF NOT EXISTS ", f"CREATE TABLE IF NOT EXISTS {keyspace}."
            ).replace("ALTER TABLE ", f"ALTER TABLE {keyspace}.")
            try:
                session.execute(qualified)
            except InvalidRequest as exc:
                # Another replica applied this ALTER first: the column is there.
                if "conflicts with an existing column" not in str(exc):
                    raise
        session.execute(
            f"INSERT INTO {keyspace}.schema_version (component, version, applied_at)"
            " VALUES ('store', %s, toTimestamp(now())) IF NOT EXISTS",
            (version,),
        )
        log.info("applied store schema version %d", version)
        applied.append(version)
    return applied
