"""Who is calling, and what they may do: the same rules over HTTP and gRPC.

Three kinds of key (see docs/security.md):

- **admin keys**, the operator's (and the services' own, which present the
  first admin key to each other): everything. Given by flag, environment or
  file; only their SHA-256 is kept in memory, compared in constant time.
- **app keys** of scope ``sdk`` (shipped inside the app): installs, opens and
  events of that app only.
- **app keys** of scope ``s2s`` (the app's backend): everything ``sdk`` may,
  plus touch batches and reading the app's own outcomes.

An app key reads ``lb-<scope>-<64 hex>-<app id>``: the app id lets a service
find the app's key hashes (kept in the app, :class:`AppKeySource`) without a
global index. The key's secret part is 256 random bits.

Every endpoint has a :class:`Rule`: public, admin only, or an app scope with
a function naming the apps a request touches. :meth:`Authenticator.authenticate`
turns a presented key into a :class:`Principal` (or raises
:class:`~lookback.core.errors.Unauthenticated`); :func:`authorize` checks the
principal against the rule and the request (or raises
:class:`~lookback.core.errors.PermissionDenied`). Neither says whether an app
exists.

This module knows nothing of gRPC or HTTP; the server bootstrap and the
gateway read the key from metadata or the ``Authorization`` header.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lookback.api.types.v1 import app_pb2
from lookback.core.clock import Clock, now_micros
from lookback.core.config import ConfigError
from lookback.core.convert import ts_to_micros
from lookback.core.errors import PermissionDenied, Unauthenticated

SDK: int = app_pb2.KEY_SCOPE_SDK
S2S: int = app_pb2.KEY_SCOPE_S2S
SCOPE_NAMES: dict[int, str] = {SDK: "sdk", S2S: "s2s"}
SCOPES_BY_NAME = {v: k for k, v in SCOPE_NAMES.items()}

METADATA_KEY = "authorization"
"""The gRPC metadata (and HTTP header, case-insensitively) carrying ``Bearer <key>``."""

DEFAULT_GRACE_SECONDS = 24 * 3600
"""How long an app's previous keys keep working after a rotation, by default."""

_APP_KEY_PREFIX = "lb-"
_SECRET_HEX = 64


def hash_key(key: str) -> bytes:
    """The SHA-256 a key is kept as."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def new_admin_key() -> str:
    """A fresh admin key (for ``lookback up`` and tests)."""
    return f"lb-admin-{secrets.token_hex(_SECRET_HEX // 2)}"


def new_app_key(app_id: str, scope: int) -> str:
    """A fresh app key of ``scope`` for ``app_id``."""
    return f"{_APP_KEY_PREFIX}{SCOPE_NAMES[scope]}-{secrets.token_hex(_SECRET_HEX // 2)}-{app_id}"


def app_of(key: str) -> str | None:
    """The app id an app key names, or None if ``key`` is not shaped like one."""
    parts = key.split("-", 3)
    if len(parts) != 4 or parts[0] != "lb" or parts[1] not in SCOPES_BY_NAME:
        return None
    if len(parts[2]) != _SECRET_HEX or not parts[3]:
        return None
    return parts[3]


def bearer(header: str | None) -> str:
    """The key in an ``Authorization: Bearer <key>`` value ('' when absent)."""
    if not header:
        return ""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return token.strip()


def read_admin_keys(keys: str, keys_file: str = "") -> list[str]:
    """Admin keys from a comma-separated list and an optional file (one per
    line, ``#`` comments); the first is the one this process presents."""
    out = [k.strip() for k in keys.split(",") if k.strip()]
    if keys_file:
        try:
            text = Path(keys_file).read_text()
        except OSError as exc:
            raise ConfigError(f"admin_keys_file: cannot read {keys_file!r}: {exc}") from exc
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                out.append(line)
    for k in out:
        if len(k) < 16:
            raise ConfigError("admin keys must be at least 16 characters")
    return out


@dataclass(frozen=True)
class Principal:
    """Who a request comes from."""

    admin: bool = False
    """An admin key (the operator or another service)."""
    app_id: str = ""
    """The app of an app key."""
    scope: int = 0
    """The scope of an app key (:data:`SDK` or :data:`S2S`)."""

    @property
    def keyed(self) -> bool:
        """Whether the caller presented a valid key at all."""
        return self.admin or bool(self.app_id)


ADMIN = Principal(admin=True)
ANONYMOUS = Principal()

AppIds = Callable[[Any], Iterable[str]]


@dataclass(frozen=True)
class Rule:
    """Who may call one endpoint."""

    kind: str
    """``public``, ``admin`` or ``app``."""
    scope: int = 0
    """For ``app``: the least scope (``sdk`` allows ``s2s`` keys too)."""
    app_ids: AppIds | None = field(default=None, compare=False)
    """For ``app``: the apps a request touches (all must be the key's)."""


PUBLIC = Rule("public")
"""Anyone (health probes, attribution links)."""
ADMIN_ONLY = Rule("admin")
"""Admin keys only."""


def app_rule(scope: int, app_ids: AppIds) -> Rule:
    """App keys of at least ``scope`` for the apps ``app_ids(request)`` names, or admin."""
    return Rule("app", scope, app_ids)


def authorize(principal: Principal, rule: Rule, request: Any = None) -> None:
    """Raise :class:`PermissionDenied` unless ``principal`` may make ``request``."""
    if rule.kind == "public" or principal.admin:
        return
    if not principal.keyed:
        raise Unauthenticated("a valid key is required")
    if rule.kind == "app":
        if rule.scope == S2S and principal.scope != S2S:
            raise PermissionDenied("this key's scope does not allow this request")
        if rule.app_ids is not None and request is not None:
            for app_id in rule.app_ids(request):
                if app_id != principal.app_id:
                    raise PermissionDenied("this key does not allow this request")
        return
    raise PermissionDenied("this key does not allow this request")


class AppKeySource(Protocol):
    """Where an app's key hashes are read (cached by the implementation)."""

    async def app_keys(self, app_id: str, fresh: bool = False) -> Sequence[app_pb2.AppKey] | None:
        """The app's keys; None when there is no such app. ``fresh`` asks to
        bypass a cache (a key not found might have just been issued)."""
        ...


class Authenticator:
    """Turns presented keys into principals."""

    def __init__(
        self,
        admin_keys: Iterable[str],
        apps: AppKeySource | None = None,
        enabled: bool = True,
        clock: Clock = now_micros,
    ) -> None:
        self._admin = [hash_key(k) for k in admin_keys]
        self.apps = apps
        self.enabled = enabled
        self.clock = clock

    async def authenticate(self, key: str) -> Principal:
        """The principal ``key`` stands for; :class:`Unauthenticated` when it
        is missing, unknown or expired. With checks off, everyone is admin."""
        if not self.enabled:
            return ADMIN
        if not key:
            raise Unauthenticated("a valid key is required")
        digest = hash_key(key)
        admin = False
        for known in self._admin:  # every one compared: constant time over the list
            admin |= hmac.compare_digest(digest, known)
        if admin:
            return ADMIN
        app_id = app_of(key)
        if app_id is not None and self.apps is not None:
            principal = self._match(app_id, digest, await self.apps.app_keys(app_id))
            if principal is None:
                principal = self._match(
                    app_id, digest, await self.apps.app_keys(app_id, fresh=True)
                )
            if principal is not None:
                return principal
        raise Unauthenticated("a valid key is required")

    def _match(
        self, app_id: str, digest: bytes, keys: Sequence[app_pb2.AppKey] | None
    ) -> Principal | None:
        if not keys:
            return None
        now = self.clock()
        found: Principal | None = None
        for k in keys:
            if hmac.compare_digest(digest, k.key_sha256) and (
                not k.HasField("expire_time") or ts_to_micros(k.expire_time) > now
            ):
                found = Principal(app_id=app_id, scope=k.scope)
        return found


def rules_for(service: Any, **rules: Rule) -> dict[str, Rule]:
    """One rule per method of a service descriptor, by full method path
    (``/pkg.Service/Method``); a missing or unknown method name is an error,
    so a new RPC cannot go without a rule."""
    names = {m.name for m in service.methods}
    missing = names - rules.keys()
    extra = rules.keys() - names
    if missing or extra:
        raise ValueError(
            f"{service.full_name}: rules missing for {sorted(missing)}, unknown {sorted(extra)}"
        )
    return {f"/{service.full_name}/{name}": rule for name, rule in rules.items()}


def admin_rules(service: Any) -> dict[str, Rule]:
    """Every method of a service descriptor for admin keys only (the
    internal services: the store, the SRN adapter, the postback dispatcher)."""
    return rules_for(service, **{m.name: ADMIN_ONLY for m in service.methods})
