"""Device identifiers: normalising, hashing, and the match keys they index by.

A match key is an opaque string the store indexes touches and installs by.
Identifiers are indexed by their hash, never raw:

- ``sha1:gaid:<hex>``: the SHA-1 of the lower-cased raw value; a raw
  identifier is indexed by this form, and so is one given as SHA-1;
- ``md5:gaid:<hex>``: for an identifier known only by its MD5;
- ``ip:<address>``: probabilistic matching (see :mod:`lookback.domain.useragent`).

An install carries raw identifiers, so it is looked up by both the SHA-1 and
the MD5 of each: two partitions per identifier, whatever form a touch used.
The all-zero identifier means "not available" and yields no key at all.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from lookback.domain import addresses, useragent
from lookback.domain.model import Device

_ZERO = re.compile(r"^[0\-]+$")
HASH_ALGORITHMS = ("sha1", "md5")


def _digest(algorithm: str, value: str) -> str:
    return hashlib.new(algorithm, value.encode(), usedforsecurity=False).hexdigest()


def sha1_hex(value: str) -> str:
    """The SHA-1 (lower-case hex) of a raw identifier, as its keys use it."""
    return _digest("sha1", value.strip().lower())


def hex_digest(algorithm: str, value: str) -> str:
    """A raw identifier's hash (``sha1`` or ``md5``, lower-case hex), as its keys use it."""
    return _digest(algorithm, value.strip().lower())


def is_unavailable(value: str) -> bool:
    """True for an empty or all-zero identifier."""
    return not value or bool(_ZERO.match(value))


# Hashes of the all-zero identifier never match either.
_ZERO_HASHES = frozenset(
    _digest(a, "00000000-0000-0000-0000-000000000000") for a in HASH_ALGORITHMS
) | frozenset(_digest(a, "0000000000000000") for a in HASH_ALGORITHMS)


def hashed_key(algorithm: str, id_type: str, digest: str) -> str:
    return f"{algorithm}:{id_type}:{digest.strip().lower()}"


def touch_device_keys(device: Device) -> set[str]:
    """The keys a touch is stored under: the SHA-1 of each raw identifier, and
    each hashed identifier as given."""
    keys = {
        hashed_key("sha1", t, _digest("sha1", v.strip().lower()))
        for t, v in device.raw.items()
        if not is_unavailable(v)
    }
    keys |= {
        hashed_key(h.algorithm, h.id_type, h.value)
        for h in device.hashed
        if h.value.lower() not in _ZERO_HASHES
    }
    return keys


def install_device_keys(device: Device, exclude: Iterable[str] = ()) -> set[str]:
    """Every key that matches an install's device: the SHA-1 and MD5 forms of
    each raw identifier, and each hashed one as given (a stored install keeps
    both hashed forms instead of the raw value, so it has the same keys).

    ``exclude`` names identifier types that must not match (e.g. ``idfa``
    without ATT consent).
    """
    skip = set(exclude)
    keys: set[str] = set()
    for id_type, value in device.raw.items():
        if id_type in skip or is_unavailable(value):
            continue
        lowered = value.strip().lower()
        for algorithm in HASH_ALGORITHMS:
            keys.add(hashed_key(algorithm, id_type, _digest(algorithm, lowered)))
    keys |= {
        hashed_key(h.algorithm, h.id_type, h.value)
        for h in device.hashed
        if h.id_type not in skip and h.value.lower() not in _ZERO_HASHES
    }
    return keys


def install_keys(keys: Iterable[str]) -> list[str]:
    """The SHA-1 keys among ``keys``, sorted. Installs carry raw identifiers,
    so an install finds another install by one form alone."""
    return sorted(k for k in keys if k.startswith("sha1:"))


def touch_match_keys(device: Device, ip: str) -> list[str]:
    """Every key a touch is stored under: its device keys and, for
    probabilistic matching, its IP (see :func:`useragent.ip_key`)."""
    keys = touch_device_keys(device)
    # An address many devices share is never matched by, so not indexed either.
    if (ip_key := useragent.ip_key(ip)) and not addresses.shared_or_special(ip):
        keys.add(ip_key)
    return sorted(keys)


def erasure_keys(device: Device) -> set[str]:
    """Every key a device named by a data-subject request can be stored
    under: the SHA-1 and MD5 forms of each raw identifier, and each hashed
    identifier as given (its other hash cannot be computed from it)."""
    return install_device_keys(device) | touch_device_keys(device)
