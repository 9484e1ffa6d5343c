"""Signed attribution links: the canonical query string, signing and checking.

A partner whose links must be signed (its ``click_signing`` is ``required``)
appends ``ts`` (Unix seconds, now) and ``sig`` to each link: the lower-case
hex HMAC-SHA256, under the partner's signing secret, of the link's canonical
query string:

- every parameter except ``sig`` (``ts`` included), with its value decoded
  from the URL;
- sorted by name, then by value (a repeated parameter keeps every value);
- each name and each value percent-encoded as RFC 3986 says: the unreserved
  characters ``A-Z a-z 0-9 - . _ ~`` as they are, every other byte of the
  UTF-8 encoding as ``%XX`` (upper-case hex), so a space is ``%20``;
- joined as ``name=value`` with ``&``.

For example ``app_id=com.example.game&campaign=spring%20sale&media_source=adnet&ts=1767225600``.
:func:`sign` gives the parameters to append; :func:`verify` checks a link.
Pure functions: no clock, no I/O (``now`` is passed in).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from urllib.parse import quote

from lookback.core.errors import FieldViolation, Unauthenticated

SIG = "sig"
"""The parameter carrying the signature."""
TS = "ts"
"""The parameter carrying the signing time (Unix seconds)."""
MAX_SKEW = 300
"""Seconds a link's ``ts`` may be away from now, either way."""

Params = Mapping[str, str] | Iterable[tuple[str, str]]


class LinkSignatureError(Unauthenticated):
    """A link's signature is missing, wrong or stale; ``violations`` names
    the parameter (``sig`` or ``ts``)."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"the link's signature is not valid: {field} {description}")
        self.violations = [FieldViolation(field, description)]


def _pairs(params: Params) -> list[tuple[str, str]]:
    if isinstance(params, Mapping):
        return [(str(k), str(v)) for k, v in params.items()]
    return [(str(k), str(v)) for k, v in params]


def _encode(text: str) -> str:
    # quote() keeps exactly the RFC 3986 unreserved set when nothing else is safe.
    return quote(text, safe="", encoding="utf-8", errors="surrogatepass")


def canonical_query(params: Params) -> str:
    """The string a link's signature is computed over (``sig`` left out)."""
    pairs = sorted((k, v) for k, v in _pairs(params) if k != SIG)
    return "&".join(f"{_encode(k)}={_encode(v)}" for k, v in pairs)


def signature(params: Params, secret: str) -> str:
    """The lower-case hex HMAC-SHA256 of the canonical query under ``secret``."""
    message = canonical_query(params).encode("ascii")
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign(params: Params, secret: str, ts: int) -> list[tuple[str, str]]:
    """``params`` with ``ts`` and ``sig`` set, ready to put in a link
    (``urllib.parse.urlencode(sign(...))``). A ``ts`` or ``sig`` already in
    ``params`` is replaced."""
    pairs = [(k, v) for k, v in _pairs(params) if k not in (SIG, TS)]
    pairs.append((TS, str(int(ts))))
    pairs.append((SIG, signature(pairs, secret)))
    return pairs


def verify(params: Params, secret: str, now: float, max_skew: float = MAX_SKEW) -> None:
    """Raise :class:`LinkSignatureError` unless ``params`` carry one ``sig``
    that is the signature under ``secret`` and one ``ts`` within ``max_skew``
    seconds of ``now``."""
    pairs = _pairs(params)
    sigs = [v for k, v in pairs if k == SIG]
    stamps = [v for k, v in pairs if k == TS]
    if not sigs:
        raise LinkSignatureError(SIG, "is required: this partner's links must be signed")
    if len(sigs) > 1:
        raise LinkSignatureError(SIG, "must be given once")
    if not stamps:
        raise LinkSignatureError(TS, "is required with sig")
    stamp = stamps[0] if len(stamps) == 1 else ""
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
        raise LinkSignatureError(TS, "must be one Unix time in seconds")
    if abs(int(stamp) - now) > max_skew:
        raise LinkSignatureError(TS, f"must be within {int(max_skew)} seconds of now")
    expected = signature(pairs, secret)
    if not hmac.compare_digest(expected.encode(), sigs[0].encode("utf-8", "surrogatepass")):
        raise LinkSignatureError(SIG, "does not match the link")
