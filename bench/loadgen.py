"""The Go HTTP load generator (bench/loadgen/), built on first use and called
from Python.

    python -m bench.loadgen -url 'http://127.0.0.1:8080/v1/click?...' -c 16 -d 10s

passes its arguments to the binary (see ``-help``) and prints its JSON.
Benchmarks call :func:`run_loadgen`. The binary is built with the Go on PATH
(or /usr/local/go/bin/go) into ``~/.cache/lookback/bin/lookback-loadgen-<hash>``
(``$LOOKBACK_CACHE`` moves the cache), the hash being that of its sources:
it is rebuilt only when they change.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SOURCES = Path(__file__).resolve().parent / "loadgen"


def cache_dir() -> Path:
    """The project's tool cache, as scripts/cassandra.sh has it."""
    root = os.environ.get("LOOKBACK_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("HOME") or "/tmp") / ".cache" / "lookback"


def source_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(SOURCES.iterdir()):
        if path.name == "go.mod" or (path.suffix == ".go" and not path.name.endswith("_test.go")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _go() -> str:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).exists():
        raise RuntimeError("the load generator needs Go (go on PATH or /usr/local/go/bin/go)")
    return go


def binary() -> Path:
    """The load generator's binary, built now unless this version exists."""
    target = cache_dir() / "bin" / f"lookback-loadgen-{source_hash()}"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOWORK": "off"}
    if not any(env.get(k) for k in ("GOCACHE", "XDG_CACHE_HOME", "HOME")):
        env["GOCACHE"] = str(cache_dir() / "go-build")  # go refuses to build without one
    if not env.get("GOPATH") and not env.get("HOME"):
        env["GOPATH"] = str(cache_dir() / "go")
    # Build beside the target, then rename: a concurrent build never sees half a file.
    fd, tmp = tempfile.mkstemp(prefix=".lookback-loadgen-", dir=target.parent)
    os.close(fd)
    try:
        built = subprocess.run(
            [_go(), "build", "-trimpath", "-o", tmp, "."],
            cwd=SOURCES,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if built.returncode != 0:
            raise RuntimeError(f"building the load generator failed:\n{built.stderr}")
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


@dataclass(frozen=True)
class Latency:
    """Milliseconds."""

    p50: float
    p90: float
    p99: float
    p99_9: float
    max: float
    mean: float


@dataclass(frozen=True)
class LoadResult:
    """One run's figures; counts are of the measured window unless named otherwise."""

    mode: str  # "closed" or "open"
    concurrency: int  # closed: workers; open: the most workers allowed
    workers: int  # workers used (open loop: as many as the schedule needed)
    connections: int  # TCP connections opened (warm-up included)
    target_rate: float  # open loop: requests per second asked for
    duration_s: float
    warmup_s: float
    sent: int  # every request sent, warm-up included: what the server saw
    warmup_requests: int
    scheduled: int  # measured requests due (sent + unsent)
    requests: int  # measured requests sent
    first_seq: int  # the measured requests' {seq}: first_seq .. first_seq + scheduled - 1
    statuses: dict[int, int]  # answers per HTTP status
    answered: int
    errors: int  # transport errors (no answer), timeouts apart
    error_kinds: dict[str, int]
    timeouts: int
    late: int  # open loop: sent later than -late after the intended time
    unsent: int  # open loop: given up, never sent
    rate: float  # answers per second (any status)
    latency: Latency  # of the answers
    send_delay: Latency  # open loop: actual send time - intended send time
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def ok(self) -> int:
        """Answers with a 2xx status."""
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def ok_rate(self) -> float:
        return self.ok / self.duration_s

    @property
    def failed(self) -> int:
        """Requests not answered with a 2xx: other statuses, errors, timeouts, unsent."""
        return self.scheduled - self.ok

    @property
    def measured_seqs(self) -> range:
        return range(self.first_seq, self.first_seq + self.scheduled)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadResult:
        values = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        values["statuses"] = {int(k): v for k, v in (data.get("statuses") or {}).items()}
        values["error_kinds"] = dict(data.get("error_kinds") or {})
        values["latency"] = Latency(**data["latency_ms"])
        values["send_delay"] = Latency(**data["send_delay_ms"])
        return cls(**values, raw=data)


def _seconds(value: float) -> str:
    return f"{value * 1000:.3f}ms"


async def run_loadgen(
    url: str,
    *,
    method: str = "GET",
    body: str | None = None,
    concurrency: int | None = None,
    rate: float | None = None,
    duration: float,
    warmup: float = 0.0,
    prefix: str = "",
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
    late_after: float | None = None,
) -> LoadResult:
    """Run the load generator: a closed loop of ``concurrency`` workers, or an
    open loop at ``rate`` requests per second (``concurrency`` then caps the
    workers). ``url``, ``body`` and header values may hold ``{seq}``,
    ``{seq:N}``, ``{uuid}`` and ``{prefix}``."""
    exe = await asyncio.to_thread(binary)
    argv = [str(exe), "-url", url, "-method", method, "-prefix", prefix]
    argv += ["-d", _seconds(duration), "-warmup", _seconds(warmup), "-timeout", _seconds(timeout)]
    if body is not None:
        argv += ["-body", body]
    if concurrency is not None:
        argv += ["-c", str(concurrency)]
    if rate is not None:
        argv += ["-rate", repr(float(rate))]
    if late_after is not None:
        argv += ["-late", _seconds(late_after)]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the load generator failed ({process.returncode}): {err.decode()}")
    return LoadResult.from_json(json.loads(out))


def main() -> int:
    return subprocess.run([str(binary()), *sys.argv[1:]], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
