"""App settings: creation, reads through an LRU cache, updates by field mask
with versions, and cache coherence across decider replicas."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from google.protobuf import field_mask_pb2

from lookback.api.types.v1 import app_pb2
from lookback.core import auth, convert
from lookback.core.clock import Clock, now_micros
from lookback.core.errors import Aborted, NotFound, Violations
from lookback.core.outbound import OutboundPolicy
from lookback.core.validation import validate_app
from lookback.decider.cache import LruCache, SingleFlight
from lookback.domain.model import Settings

UPDATABLE = ("platform", "settings")
"""Top-level app fields an update may name (the id and versions are the service's)."""


@dataclass(frozen=True)
class CachedApp:
    app: app_pb2.App
    settings: Settings
    """The app's settings with every default applied."""


class AppStore(Protocol):
    """Where apps are stored."""

    async def create_app(self, app: app_pb2.App) -> app_pb2.App:
        """Raises :class:`~lookback.core.errors.AlreadyExists`."""
        ...

    async def get_app(self, app_id: str) -> app_pb2.App:
        """Raises :class:`~lookback.core.errors.NotFound`."""
        ...

    async def replace_app(self, app: app_pb2.App, expected_version: int) -> app_pb2.App:
        """Raises :class:`~lookback.core.errors.Aborted` on a version mismatch."""
        ...


MAX_GRACE_SECONDS = 30 * 86400
"""Longest grace period of a rotation."""


@dataclass(frozen=True)
class Rotation:
    """What a key rotation gives back."""

    key: str
    """The new key, in clear (answered once)."""
    app: app_pb2.App
    """The app after the rotation."""
    previous_expire: int
    """When the previous keys of the scope stop working (micros)."""


def _issue(app: app_pb2.App, scope: int, now: int) -> str:
    """Add a new key of ``scope`` to ``app``; return it in clear."""
    key = auth.new_app_key(app.app_id, scope)
    app.keys.add(key_sha256=auth.hash_key(key), scope=scope, create_time=convert.micros_to_ts(now))
    return key


def _stamp(app: app_pb2.App, micros: int) -> None:
    app.update_time.CopyFrom(convert.micros_to_ts(micros))


class AppSettings:
    """Apps are validated here (postback destinations included: public
    addresses only, unless ``outbound`` allows more) and stored by the store;
    reads are cached."""

    def __init__(
        self,
        store: AppStore,
        cache: LruCache[str, CachedApp],
        clock: Clock = now_micros,
        outbound: OutboundPolicy | None = None,
    ) -> None:
        self.store = store
        self.cache = cache
        self.clock = clock
        self.outbound = outbound or OutboundPolicy()
        self._reads: SingleFlight[CachedApp] = SingleFlight()
        self.on_change: Callable[[str], Awaitable[None]] | None = None
        """Called with the app id after this replica changed an app (e.g. to
        tell other replicas to drop their cached copy)."""

    async def get(self, app_id: str) -> CachedApp:
        cached = self.cache.get(app_id)
        if cached is None:
            # Decisions of one app in flight together read its settings once.
            cached, _ = await self._reads.run(app_id, lambda: self._read(app_id))
        return cached

    async def _read(self, app_id: str) -> CachedApp:
        return self.remember(await self.store.get_app(app_id))

    def remember(self, app: app_pb2.App) -> CachedApp:
        cached = CachedApp(app, convert.settings(app))
        self.cache.put(app.app_id, cached)
        return cached

    async def app_keys(self, app_id: str, fresh: bool = False) -> Sequence[app_pb2.AppKey] | None:
        """The app's key hashes (an :class:`~lookback.core.auth.AppKeySource`).
        ``fresh`` is not needed here: this replica's own changes are cached at
        once, other replicas' within the cache's coherence bound."""
        try:
            return (await self.get(app_id)).app.keys
        except NotFound:
            return None

    async def create(self, request: app_pb2.App) -> tuple[app_pb2.App, dict[int, str]]:
        """Store a new app with its first ``sdk`` and ``s2s`` keys; returns the
        app and the keys in clear, by scope."""
        await validate_app(request, self.outbound)
        app = app_pb2.App()
        app.CopyFrom(request)
        app.version = 1
        now = self.clock()
        _stamp(app, now)
        app.create_time.CopyFrom(app.update_time)
        del app.keys[:]
        keys = {scope: _issue(app, scope, now) for scope in (auth.SDK, auth.S2S)}
        stored = await self.store.create_app(app)
        self.remember(stored)
        return stored, keys

    async def rotate_key(self, app_id: str, scope: int, grace_micros: int) -> Rotation:
        """Issue a new key of ``scope``; the app's other keys of that scope
        stop working ``grace_micros`` from now (keys already past their end
        are dropped)."""
        v = Violations()
        v.require(app_id, "app_id")
        if scope not in auth.SCOPE_NAMES:
            v.add("scope", "must be sdk or s2s")
        if not 0 <= grace_micros <= MAX_GRACE_SECONDS * 1_000_000:
            v.add("grace_period", f"must be between 0 and {MAX_GRACE_SECONDS} seconds")
        v.raise_if_any()
        current = await self.store.get_app(app_id)
        now = self.clock()
        expire = now + grace_micros
        updated = app_pb2.App()
        updated.CopyFrom(current)
        del updated.keys[:]
        for k in current.keys:
            ends = convert.ts_to_micros(k.expire_time) if k.HasField("expire_time") else None
            if ends is not None and ends <= now:
                continue
            kept = updated.keys.add()
            kept.CopyFrom(k)
            if k.scope == scope and (ends is None or ends > expire):
                kept.expire_time.CopyFrom(convert.micros_to_ts(expire))
        key = _issue(updated, scope, now)
        updated.version = current.version + 1
        _stamp(updated, now)
        stored = await self.store.replace_app(updated, current.version)
        self.remember(stored)
        if self.on_change is not None:
            await self.on_change(app_id)
        return Rotation(key, stored, expire)

    async def update(
        self, request: app_pb2.App, mask: field_mask_pb2.FieldMask, expected_version: int
    ) -> app_pb2.App:
        """Replace the fields ``mask`` names (all updatable ones when empty),
        if the app is still at ``expected_version`` (0: any)."""
        app_id = request.app_id
        current = await self.store.get_app(app_id)
        if expected_version and expected_version != current.version:
            raise Aborted(f"app {app_id!r} is at version {current.version}, not {expected_version}")
        updated = await self.changed(current, request, mask)
        updated.version = current.version + 1
        _stamp(updated, self.clock())
        stored = await self.store.replace_app(updated, current.version)
        self.remember(stored)
        if self.on_change is not None:
            await self.on_change(app_id)
        return stored

    async def changed(
        self, current: app_pb2.App, request: app_pb2.App, mask: field_mask_pb2.FieldMask
    ) -> app_pb2.App:
        """``current`` with the fields ``mask`` names taken from ``request``
        (platform and settings when empty), validated; nothing is stored."""
        updated = app_pb2.App()
        updated.CopyFrom(current)
        if mask.paths:
            v = Violations()
            for path in mask.paths:
                if path.split(".")[0] not in UPDATABLE:
                    v.add("update_mask", f"cannot update {path!r}; only platform and settings")
                elif not field_mask_pb2.FieldMask(paths=[path]).IsValidForDescriptor(
                    app_pb2.App.DESCRIPTOR
                ):
                    v.add("update_mask", f"{path!r} is not a field of an app")
            v.raise_if_any()
            # Replace (not merge) the named fields, so repeated and map fields
            # are set to exactly what the caller sent.
            mask.MergeMessage(
                request, updated, replace_message_field=True, replace_repeated_field=True
            )
        else:
            updated.platform = request.platform
            updated.settings.CopyFrom(request.settings)
        await validate_app(updated, self.outbound)
        return updated
