"""The real backends the tests need (Cassandra, Redis): ours, started with
the scripts in scripts/, or external ones (see tests/conftest.py)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from lookback.touchpoint_store.cassandra import CassandraSettings
from tests import REPO


@dataclass(frozen=True)
class CassandraNode:
    """A running Cassandra: ours (scripts/cassandra.sh) or an external one."""

    host: str
    port: int
    keyspace: str = "lookback_test"
    directory: Path | None = None

    def settings(self, **overrides: object) -> CassandraSettings:
        return CassandraSettings(
            hosts=(self.host,),
            port=self.port,
            keyspace=self.keyspace,
            **overrides,  # type: ignore[arg-type]
        )

    def script(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert self.directory is not None, "an external Cassandra is not ours to control"
        return subprocess.run(
            [str(REPO / "scripts" / "cassandra.sh"), *args, "--dir", str(self.directory)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


def start_backend(script: str, *args: str) -> None:
    """``scripts/SCRIPT start ARGS``; fails loudly (with its output) if it cannot."""
    started = subprocess.run(
        [str(REPO / "scripts" / script), "start", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if started.returncode != 0:
        raise RuntimeError(f"{script} start failed:\n{started.stdout}\n{started.stderr}")


@dataclass(frozen=True)
class LocalRedis:
    """A Redis of a test's own (scripts/redis.sh), in ``directory`` on ``port``,
    to start, stop and kill at will."""

    directory: Path
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def run(self, action: str) -> None:
        """``scripts/redis.sh ACTION`` (start, stop); raises if it fails."""
        subprocess.run(
            [
                str(REPO / "scripts" / "redis.sh"),
                action,
                "--dir",
                str(self.directory),
                "--port",
                str(self.port),
            ],
            check=True,
            timeout=60,
            capture_output=True,
        )

    def pid(self) -> int:
        return int((self.directory / "redis.pid").read_text())
