"""Running services as real processes in tests (``lookback serve``)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


class Service:
    """One ``lookback serve`` process."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        address: str,
        drain: asyncio.Task[None],
        log: list[str],
    ) -> None:
        self.process = process
        self.address = address
        self.drain = drain
        self.log = log

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def serve(name: str, *argv: str) -> Service:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lookback.cli.main",
        "serve",
        name,
        "--grace-period",
        "2",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            process.kill()
            raise AssertionError(f"{name} not listening after 120 s:\n" + "".join(lines[-20:]))
        line = (await asyncio.wait_for(process.stdout.readline(), remaining)).decode()
        assert line, f"{name} exited before listening:\n" + "".join(lines)
        lines.append(line)
        if match := re.search(r"listening on (\S+)", line):
            break

    async def drain() -> None:  # keep the pipe from filling up; keep the log
        assert process.stdout is not None
        while line := await process.stdout.readline():
            lines.append(line.decode())

    return Service(process, match.group(1), asyncio.create_task(drain()), lines)


async def wait_status(address: str, want: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == want:
                    return
            except grpc.aio.AioRpcError:
                pass
            assert time.monotonic() < deadline, f"{address} never reported {want}"
            await asyncio.sleep(0.2)


async def run_cli(*argv: str, timeout: float = 120) -> tuple[int, str, str]:
    """Run ``lookback ARGV...`` to completion: exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lookback.cli.main",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
