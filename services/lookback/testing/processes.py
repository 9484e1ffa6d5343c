"""Real processes for tests and benchmarks: start one (``lookback serve``,
``lookback up``, any ``python -m`` module) or the whole suite as one process
per service (:func:`serve_suite`, each with its own output), wait until it
says it is ready, keep its output, stop it; run a ``lookback`` command to
completion; wait for a server's health; find free loopback ports."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict, Unpack

from lookback.cli.readiness import wait_health, wait_http_ready
from lookback.cli.suite import PORT_OFFSETS, child_commands
from lookback.testing.keys import admin_env

__all__ = [
    "LISTENING",
    "UP_READY",
    "RunningProcess",
    "SuiteProcesses",
    "free_base_port",
    "free_ports",
    "python_module",
    "run_cli",
    "serve",
    "serve_suite",
    "start",
    "up",
    "wait_health",
    "wait_http_ready",
]

LISTENING = r"listening on (\S+)"
"""What a service (and the echo server, and the OTLP collector) prints once it listens."""
UP_READY = r"Press Ctrl-C to stop\."
"""What ``lookback up`` prints once every service is ready (and the demo, if any, has run)."""
LOOKBACK = (sys.executable, "-m", "lookback.cli.main")


class Options(TypedDict, total=False):
    """:func:`start`'s options, for the functions that call it."""

    timeout: float
    env: Mapping[str, str] | None
    capture_stderr: bool


class RunningProcess:
    """A started process: its output so far (``log``, kept while it runs)
    and the address it announced (``""`` if the ready pattern names none)."""

    def __init__(
        self,
        name: str,
        process: asyncio.subprocess.Process,
        ready: re.Match[str],
        log: list[str],
    ) -> None:
        self.name = name
        self.process = process
        self.address = ready.group(1) if ready.groups() else ""
        self.log = log
        self.drain = asyncio.create_task(self._drain())

    async def _drain(self) -> None:  # keep the pipe from filling up; keep the log
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.log.append(line.decode(errors="replace"))

    def output(self) -> str:
        return "".join(self.log)

    async def exited(self, timeout: float = 30.0) -> int:
        """Wait (up to ``timeout`` seconds, then kill it) for the process to
        end by itself; its exit code once its output is read."""
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        # A grandchild holding the pipe must not hold us.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drain, 10)
        assert self.process.returncode is not None
        return self.process.returncode

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send ``sig`` (unless it has exited), wait up to ``timeout`` seconds,
        then kill it; returns its exit code once its output is read."""
        if self.process.returncode is None:
            self.process.send_signal(sig)
        return await self.exited(timeout)


async def start(
    argv: Sequence[str],
    *,
    name: str = "",
    ready: str | re.Pattern[str] = LISTENING,
    timeout: float = 120.0,
    env: Mapping[str, str] | None = None,
    capture_stderr: bool = True,
) -> RunningProcess:
    """Start ``argv`` and wait (up to ``timeout`` seconds) for a line of its
    standard output matching ``ready``. ``env`` is added to this process's
    environment (and the test admin key, :mod:`lookback.testing.keys`, unless
    ``env`` names keys itself); with ``capture_stderr`` its standard error
    joins the log, otherwise it is inherited."""
    name = name or " ".join(argv[:3])
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if capture_stderr else None,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **admin_env(), **(env or {})},
    )
    assert process.stdout is not None
    pattern = re.compile(ready)
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        try:
            line = (await asyncio.wait_for(process.stdout.readline(), max(remaining, 0))).decode(
                errors="replace"
            )
        except TimeoutError:
            process.kill()
            await process.wait()
            tail = "".join(lines[-20:])
            raise TimeoutError(f"{name} not ready after {timeout:.0f} s:\n{tail}") from None
        if not line:
            await process.wait()
            raise RuntimeError(
                f"{name} exited ({process.returncode}) before ready:\n{''.join(lines)}"
            )
        lines.append(line)
        if match := pattern.search(line):
            return RunningProcess(name, process, match, lines)


async def python_module(module: str, *args: str, **options: Unpack[Options]) -> RunningProcess:
    """``python -m MODULE ARGS``, ready once it prints ``listening on ADDRESS``."""
    return await start([sys.executable, "-m", module, *args], name=module, **options)


def _allow(cidrs: str) -> list[str]:
    return ["--outbound-allow-cidrs", cidrs] if cidrs else []


async def serve(
    service: str,
    *args: str,
    grace_period: float = 2.0,
    outbound_allow_cidrs: str = "",
    **options: Unpack[Options],
) -> RunningProcess:
    """``lookback serve SERVICE --grace-period G ARGS``, ready once listening
    (``.address``). ``outbound_allow_cidrs`` (e.g.
    :data:`lookback.testing.http.LOCAL_CIDRS`) lets its postbacks and SRN
    queries reach those ranges (local receivers); by default public only."""
    argv = [*LOOKBACK, "serve", service, "--grace-period", str(grace_period)]
    return await start([*argv, *_allow(outbound_allow_cidrs), *args], name=service, **options)


async def up(
    data_dir: Path,
    *args: str,
    base_port: int = 0,
    outbound_allow_cidrs: str = "",
    **options: Unpack[Options],
) -> RunningProcess:
    """``lookback up ARGS`` with its data in ``data_dir``, gRPC ports from
    ``base_port`` (a free block if 0) and the gateway on ``base_port + 100``;
    ready once the whole suite is (stop it with SIGINT), within three minutes
    unless ``timeout`` says otherwise. ``outbound_allow_cidrs`` as for
    :func:`serve`, for every service."""
    base = base_port or free_base_port()
    argv = [*LOOKBACK, "up", "--base-port", str(base), "--http-port", str(base + 100)]
    argv += _allow(outbound_allow_cidrs)
    options.setdefault("timeout", 180.0)
    return await start(
        [*argv, "--data-dir", str(data_dir), *args], name="lookback up", ready=UP_READY, **options
    )


@dataclass
class SuiteProcesses:
    """The suite as ``lookback up`` runs it, one process per service, each
    with its own output (:func:`serve_suite`)."""

    processes: dict[str, RunningProcess]
    """By service name (``touchpoint_store``, ..., ``gateway``), in start order."""
    grpc: dict[str, str]
    """Each gRPC service's ``host:port``."""
    gateway_url: str
    commands: dict[str, list[str]] = field(default_factory=dict)
    """Each service's command line (to start it again)."""
    env: Mapping[str, str] | None = None
    timeout: float = 180.0

    def outputs(self) -> dict[str, str]:
        """Each service's standard output and error so far."""
        return {name: p.output() for name, p in self.processes.items()}

    async def kill(self, name: str) -> None:
        """SIGKILL one service (no shutdown of any kind) and reap it."""
        process = self.processes[name].process
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
        await process.wait()

    async def restart(self, name: str) -> RunningProcess:
        """Start a (killed or stopped) service again, on its own ports and data."""
        self.processes[name] = await start(
            self.commands[name], name=name, env=self.env, timeout=self.timeout
        )
        return self.processes[name]

    async def stop(self) -> dict[str, int]:
        """SIGTERM to every service, the last started first; their exit codes."""
        codes = {}
        for name in reversed(list(self.processes)):
            codes[name] = await self.processes[name].stop()
        return codes


async def serve_suite(
    data_dir: Path,
    *,
    base_port: int = 0,
    srn_endpoints: str = "",
    env: Mapping[str, str] | None = None,
    timeout: float = 180.0,
    cassandra: str = "",
    cassandra_keyspace: str = "lookback",
    redis: str = "",
) -> SuiteProcesses:
    """Every service as its own ``lookback serve`` process, with the flags
    ``lookback up`` gives it (data in ``data_dir``, gRPC ports from
    ``base_port``, a free block if 0, the gateway on ``base_port + 100``),
    started together; ready once each says it listens. Settings go in
    ``env`` (``LOOKBACK_LOG_LEVEL``, ``LOOKBACK_SIGNING_SECRETS``, ...): a
    service takes the variables of its own settings only. ``cassandra``
    (``host:port``) and ``redis`` (a URL) as for ``lookback up``."""
    base = base_port or free_base_port()
    ns = argparse.Namespace(
        host="127.0.0.1",
        base_port=base,
        http_port=base + 100,
        data_dir=str(data_dir),
        srn_endpoints=srn_endpoints,
        cassandra=cassandra,
        cassandra_keyspace=cassandra_keyspace,
        redis=redis,
        gateway_processes=1,
    )
    children = child_commands(ns)
    started = await asyncio.gather(
        *(start(c.argv, name=c.name, env=env, timeout=timeout) for c in children),
        return_exceptions=True,
    )
    running = [p for p in started if isinstance(p, RunningProcess)]
    failed = [e for e in started if isinstance(e, BaseException)]
    if failed:
        for process in running:
            await process.stop()
        raise failed[0]
    return SuiteProcesses(
        processes={c.name: p for c, p in zip(children, running, strict=True)},
        grpc={name: f"127.0.0.1:{base + offset}" for name, offset in PORT_OFFSETS.items()},
        gateway_url=f"http://127.0.0.1:{base + 100}",
        commands={c.name: list(c.argv) for c in children},
        env=env,
        timeout=timeout,
    )


async def run_cli(
    *argv: str, timeout: float = 120, env: Mapping[str, str] | None = None
) -> tuple[int, str, str]:
    """Run ``lookback ARGV...`` to completion: exit code, stdout, stderr.
    ``env`` is added to this process's environment."""
    process = await asyncio.create_subprocess_exec(
        *LOOKBACK,
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **admin_env(), **(env or {})},
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def _bind(ports: Sequence[int]) -> list[int]:
    """Bind every port at once on loopback (0: any free one) and release
    them; the port numbers bound. OSError if one is taken."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in ports]
        for sock, port in zip(socks, ports, strict=True):
            sock.bind(("127.0.0.1", port))
        return [sock.getsockname()[1] for sock in socks]


def free_ports(n: int) -> list[int]:
    """``n`` different loopback ports free right now."""
    return _bind([0] * n)


def free_base_port(start: int = 23_000) -> int:
    """A base port for ``lookback up`` whose service ports (base+1..base+5)
    and gateway port (base+100) are free right now."""
    for base in range(start, 60_000, 97):
        try:
            _bind([*(base + off for off in PORT_OFFSETS.values()), base + 100])
        except OSError:
            continue
        return base
    raise RuntimeError("no free block of ports")
