"""Data-subject requests (``lookback.privacy.v1.PrivacyService``): erasure
and access, served by the decider (docs/privacy.md).

An erasure runs in the background, in two passes over the store:

1. every chunk of devices is erased (``EraseDevices``: touches, install
   records, decisions, events, index rows; log entries keep counts only),
   their postbacks are cancelled at the dispatcher, and every decider's
   install cache forgets their installs (the coherence channel);
2. after ``settle`` seconds (longer than a decision takes from reading its
   facts to writing its record), the same again, with the install and click
   ids the first pass found: a decision of one of the devices that was in
   flight during the first pass has landed by then, and goes too.

Only then is the request ``completed``. Its id is derived from the app and
the devices' keys, so the same request is the same request; it is stored
with its keys until it completes, and resumed by any decider when its
runner stops reporting progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from lookback.api.postback.v1 import postback_dispatcher_service_pb2 as postback_pb
from lookback.api.postback.v1 import postback_dispatcher_service_pb2_grpc as postback_grpc
from lookback.api.privacy.v1 import privacy_service_pb2 as pb
from lookback.api.privacy.v1 import privacy_service_pb2_grpc as pb_grpc
from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.api.types.v1 import device_pb2, erasure_pb2
from lookback.core import auth, convert
from lookback.core import validation as check
from lookback.core.clock import now_micros
from lookback.core.errors import LookbackError, NotFound, Violations
from lookback.core.tasks import cancel_and_wait
from lookback.domain import devices
from lookback.touchpoint_store.logreader import app_ids

log = logging.getLogger("lookback.decider.privacy")

RULES = auth.rules_for(
    pb.DESCRIPTOR.services_by_name["PrivacyService"],
    CreateErasure=auth.app_rule(auth.S2S, lambda r: (r.app_id,)),
    GetErasure=auth.app_rule(auth.S2S, lambda r: (r.app_id,)),
    AccessDevices=auth.app_rule(auth.S2S, lambda r: (r.app_id,)),
)
"""An app's own backend (``s2s``) erases and reads its app's devices; the
admin any app's, and every app's at once (an empty app id: admin only)."""

MAX_ERASURE_DEVICES = 10_000
MAX_ACCESS_DEVICES = 100
IDS_PER_CALL = 10_000
"""Install or click ids named by one second-pass call at most (the store's limit)."""
PENDING = erasure_pb2.ERASURE_STATE_PENDING
COMPLETED = erasure_pb2.ERASURE_STATE_COMPLETED


def device_keys(d: device_pb2.DeviceIdentifiers) -> list[str]:
    """The keys a device is stored under (see :func:`devices.erasure_keys`)."""
    return sorted(devices.erasure_keys(convert.device(d)))


def erasure_id(app_id: str, all_apps: bool, keys: Sequence[Sequence[str]]) -> str:
    """The request's id: a hash of the app (or of "every app") and the set
    of devices, each as its sorted keys."""
    h = hashlib.sha256(("*" if all_apps else app_id).encode())
    for device in sorted({"\n".join(sorted(k)) for k in keys}):
        h.update(b"\0" + device.encode())
    return "er-" + h.hexdigest()[:32]


def check_devices(
    v: Violations, ds: Sequence[device_pb2.DeviceIdentifiers], limit: int
) -> list[list[str]]:
    """Each device's keys; a device that names no usable identifier is an error."""
    if not ds:
        v.add("devices", "name at least one device")
        return []
    if len(ds) > limit:
        v.add("devices", f"at most {limit} devices at once")
        return []
    out = []
    for n, d in enumerate(ds):
        check.check_device(v, d, f"devices[{n}]")
        keys = device_keys(d)
        if not keys:
            v.add(f"devices[{n}]", "names no identifier (raw or hashed)")
        out.append(keys)
    return out


def _summed(a: erasure_pb2.ErasureCounts, b: erasure_pb2.ErasureCounts) -> None:
    for name in ("touches", "installs", "decisions", "events", "postbacks"):
        setattr(a, name, getattr(a, name) + getattr(b, name))


@dataclass
class Eraser:
    """Runs erasure requests. ``forget`` makes every decider's install cache
    drop install ids (this one's directly, the others' over the coherence
    channel when there is one)."""

    store: store_grpc.TouchpointStoreServiceStub
    postbacks: postback_grpc.PostbackDispatcherServiceStub
    forget: Callable[[str, Sequence[str]], Awaitable[None]]
    settle: float = 10.0
    devices_per_call: int = 100
    chunks_at_once: int = 2
    """Store calls an erasure has in flight at once."""
    lease: float = 60.0
    """A pending request whose runner reported nothing this long is resumed."""
    progress_every: float = 2.0
    retry_after: float = 5.0
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _resumer: asyncio.Task[None] | None = None
    _spent: dict[str, float] = field(default_factory=dict)
    """Seconds the running erasure spent in the store, the dispatcher and the caches."""

    async def get(self, erasure_id: str) -> erasure_pb2.StoredErasure | None:
        try:
            answer = await self.store.GetErasure(store_pb.GetErasureRequest(erasure_id=erasure_id))
        except NotFound:
            return None
        return answer.erasure

    async def create(
        self, app_id: str, all_apps: bool, keys: Sequence[Sequence[str]]
    ) -> erasure_pb2.Erasure:
        ident = erasure_id(app_id, all_apps, keys)
        stored = await self.get(ident)
        now = now_micros()
        if stored is not None and stored.erasure.state == PENDING:
            if ident not in self._tasks and self._stale(stored, now):
                self._start(stored)
            return stored.erasure
        erasure = erasure_pb2.Erasure(
            erasure_id=ident,
            app_id=app_id,
            all_apps=all_apps,
            state=PENDING,
            devices=len(keys),
            runs=1,
        )
        if stored is not None:  # completed: run again
            erasure.create_time.CopyFrom(stored.erasure.create_time)
            erasure.erased.CopyFrom(stored.erasure.erased)
            erasure.runs = stored.erasure.runs + 1
        else:
            erasure.create_time.CopyFrom(convert.micros_to_ts(now))
        erasure.start_time.CopyFrom(convert.micros_to_ts(now))
        fresh = erasure_pb2.StoredErasure(
            erasure=erasure,
            devices=[erasure_pb2.DeviceKeys(keys=k) for k in keys],
            heartbeat_time=convert.micros_to_ts(now),
        )
        await self._put(fresh)
        self._start(fresh)
        return erasure

    def _stale(self, stored: erasure_pb2.StoredErasure, now: int) -> bool:
        beat = convert.ts_to_micros(stored.heartbeat_time)
        return now - beat > self.lease * 1_000_000

    def _start(self, stored: erasure_pb2.StoredErasure) -> None:
        ident = stored.erasure.erasure_id
        task = asyncio.create_task(self._run(stored), name=f"erasure {ident}")
        self._tasks[ident] = task
        task.add_done_callback(lambda _: self._tasks.pop(ident, None))

    async def _put(self, stored: erasure_pb2.StoredErasure) -> None:
        await self.store.PutErasure(store_pb.PutErasureRequest(erasure=stored))

    async def _run(self, stored: erasure_pb2.StoredErasure) -> None:
        """Until it completes (a failure is retried; nothing about the
        devices is logged, only the request id)."""
        ident = stored.erasure.erasure_id
        while True:
            try:
                await self._execute(stored)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "erasure %s: %s; retrying in %.0fs", ident, type(exc).__name__, self.retry_after
                )
                await asyncio.sleep(self.retry_after)

    async def _execute(self, stored: erasure_pb2.StoredErasure) -> None:
        e = stored.erasure
        started = time.monotonic()
        apps = [a async for a in app_ids(self.store)] if e.all_apps else [e.app_id]
        groups = [list(d.keys) for d in stored.devices]
        chunks = [
            groups[i : i + self.devices_per_call]
            for i in range(0, len(groups), self.devices_per_call)
        ]
        work = [(app, chunk) for app in apps for chunk in chunks]
        counts = erasure_pb2.ErasureCounts()
        last_beat = 0.0
        self._spent = {"store": 0.0, "postbacks": 0.0, "caches": 0.0}

        async def beat(done: int) -> None:
            nonlocal last_beat
            if time.monotonic() - last_beat < self.progress_every:
                return
            last_beat = time.monotonic()
            e.devices_done = done
            stored.heartbeat_time.CopyFrom(convert.micros_to_ts(now_micros()))
            await self._put(stored)

        e.devices_done = 0
        passed = 0
        first_pass = 0.0
        limit = asyncio.Semaphore(self.chunks_at_once)

        async def chunk_erased(app: str, chunk: list[list[str]]) -> None:
            nonlocal passed, first_pass
            keys = sorted({k for device in chunk for k in device})
            async with limit:
                found = await self._store_erase(store_pb.EraseDevicesRequest(app_id=app, keys=keys))
                await self._after(app, found, counts)
            erased_at = time.monotonic()
            passed += 1
            first_pass = erased_at - started
            await beat(e.devices * passed // len(work))
            # A decision of these devices in flight during the first pass
            # has landed ``settle`` seconds later; the second pass erases it.
            await asyncio.sleep(max(0.0, erased_at + self.settle - time.monotonic()))
            installs = list(found.install_ids)
            clicks = list(found.click_ids)
            while True:
                async with limit:
                    again = await self._store_erase(
                        store_pb.EraseDevicesRequest(
                            app_id=app,
                            keys=keys,
                            install_ids=installs[:IDS_PER_CALL],
                            click_ids=clicks[:IDS_PER_CALL],
                        )
                    )
                    await self._after(app, again, counts)
                installs, clicks = installs[IDS_PER_CALL:], clicks[IDS_PER_CALL:]
                keys = []
                if not (installs or clicks):
                    break

        # Every chunk's first pass before any second pass (the semaphore is
        # fair: the first passes queued first go first).
        await asyncio.gather(*(chunk_erased(app, chunk) for app, chunk in work))
        _summed(e.erased, counts)
        e.state = COMPLETED
        e.devices_done = e.devices
        e.complete_time.CopyFrom(convert.micros_to_ts(now_micros()))
        del stored.devices[:]  # the keys are not kept once erased
        stored.heartbeat_time.CopyFrom(convert.micros_to_ts(now_micros()))
        await self._put(stored)
        log.info(
            "erasure %s of %d devices completed in %.1fs (first pass %.1fs; store %.1fs,"
            " postbacks %.1fs, caches %.1fs)",
            e.erasure_id,
            e.devices,
            time.monotonic() - started,
            first_pass,
            self._spent["store"],
            self._spent["postbacks"],
            self._spent["caches"],
        )

    async def _store_erase(
        self, request: store_pb.EraseDevicesRequest
    ) -> store_pb.EraseDevicesResponse:
        began = time.monotonic()
        try:
            return await self.store.EraseDevices(request)
        finally:
            self._spent["store"] = self._spent.get("store", 0.0) + time.monotonic() - began

    async def _after(
        self, app: str, found: store_pb.EraseDevicesResponse, counts: erasure_pb2.ErasureCounts
    ) -> None:
        """Cancel the erased records' postbacks; make every cache forget them."""
        sources = list(found.decision_ids) + list(found.event_ids)
        began = time.monotonic()
        if found.job_ids or sources:
            cancelled = await self.postbacks.CancelPostbacks(
                postback_pb.CancelPostbacksRequest(job_ids=found.job_ids, source_ids=sources)
            )
            counts.postbacks += cancelled.cancelled
        cancelled_at = time.monotonic()
        if found.install_ids:
            await self.forget(app, list(found.install_ids))
        spent = self._spent
        spent["postbacks"] = spent.get("postbacks", 0.0) + cancelled_at - began
        spent["caches"] = spent.get("caches", 0.0) + time.monotonic() - cancelled_at
        _summed(counts, found.counts)

    async def resume_stale(self) -> int:
        """Start the pending requests whose runner stopped; how many."""
        answer = await self.store.ListPendingErasures(store_pb.ListPendingErasuresRequest())
        started = 0
        now = now_micros()
        for e in answer.erasures:
            if e.erasure_id in self._tasks:
                continue
            stored = await self.get(e.erasure_id)
            if stored is not None and stored.erasure.state == PENDING and self._stale(stored, now):
                self._start(stored)
                started += 1
        return started

    async def start(self) -> None:
        self._resumer = asyncio.create_task(self._resume_loop())

    async def _resume_loop(self) -> None:
        while True:
            with contextlib.suppress(LookbackError):  # the store away: next round
                await self.resume_stale()
            await asyncio.sleep(self.lease)

    async def stop(self) -> None:
        await cancel_and_wait(self._resumer)
        for task in list(self._tasks.values()):
            await cancel_and_wait(task)

    async def wait_idle(self) -> None:
        """Until every erasure this runner started has ended (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)


@dataclass
class PrivacyServicer(pb_grpc.PrivacyServiceServicer):
    eraser: Eraser

    async def CreateErasure(
        self, request: pb.CreateErasureRequest, context: object
    ) -> pb.CreateErasureResponse:
        v = Violations()
        if request.all_apps:
            if request.app_id:
                v.add("app_id", "must be empty with all_apps")
        else:
            check.check_id(v, request.app_id, "app_id")
        keys = check_devices(v, request.devices, MAX_ERASURE_DEVICES)
        v.raise_if_any()
        erasure = await self.eraser.create(request.app_id, request.all_apps, keys)
        return pb.CreateErasureResponse(erasure=erasure)

    async def GetErasure(
        self, request: pb.GetErasureRequest, context: object
    ) -> pb.GetErasureResponse:
        v = Violations()
        if request.app_id:
            check.check_id(v, request.app_id, "app_id")
        check.check_id(v, request.erasure_id, "erasure_id")
        v.raise_if_any()
        stored = await self.eraser.get(request.erasure_id)
        # Another app's request is as unknown as none (an app key sees its own).
        if stored is None or stored.erasure.app_id != request.app_id:
            raise NotFound(f"no erasure {request.erasure_id!r} for app {request.app_id!r}")
        return pb.GetErasureResponse(erasure=stored.erasure)

    async def AccessDevices(
        self, request: pb.AccessDevicesRequest, context: object
    ) -> pb.AccessDevicesResponse:
        v = Violations()
        check.check_id(v, request.app_id, "app_id")
        keys = check_devices(v, request.devices, MAX_ACCESS_DEVICES)
        v.raise_if_any()
        answer = await self.eraser.store.ReadDeviceRecords(
            store_pb.ReadDeviceRecordsRequest(
                app_id=request.app_id, keys=sorted({k for d in keys for k in d})
            )
        )
        return pb.AccessDevicesResponse(records=answer.records)
