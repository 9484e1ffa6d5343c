"""Hypothesis strategies for fuzzing the suite's inputs: protobuf requests
built field by field from their descriptors, friendly JSON bodies shaped
like a message (or not), and raw bytes. Used by ``tests/integration/test_fuzz.py``;
needs ``hypothesis`` (the ``dev`` extra).

Every strategy leans towards what breaks parsers and validators: empty and
huge strings, control characters, invisible and right-to-left characters,
lone surrogates (JSON only: a protobuf string cannot hold one), digits that
are not ASCII, boundary integers, NaN and infinities, far past and far
future times, negative durations, unknown enum numbers, unknown fields,
repeated fields of random (sometimes huge) size, deep nesting, truncated
and invalid UTF-8 bytes.

``fields`` (by field name) replaces the strategy of a field wherever it
appears, e.g. ``{"app_id": st.sampled_from([mine, "x"])}`` so that requests
name an app the caller's key may act on and get past the key check.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Mapping
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

Fields = Mapping[str, st.SearchStrategy[Any]]

_TIMESTAMP = "google.protobuf.Timestamp"
_DURATION = "google.protobuf.Duration"
_FIELD_MASK = "google.protobuf.FieldMask"

INT_RANGES: dict[int, tuple[int, int]] = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}

NASTY_STRINGS: tuple[str, ...] = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\n",
    "abc\n",
    "\r\n",
    "\t",
    "\x1b[31m",
    "\x7f",
    "\u200b",
    "\u202eevil",
    "\ufeff",
    "\uffff",
    "\U0010ffff",
    "💥",
    "é",
    "e\u0301",
    "١٢٣",
    "²",
    "\uff11\uff12\uff13",
    "0",
    "-1",
    "1e309",
    "NaN",
    "Infinity",
    "null",
    "true",
    "../../etc/passwd",
    "%00",
    "%ff",
    "{click_id}",
    "{nope}",
    "{{",
    "' OR 1=1 --",
    "<script>alert(1)</script>",
    "\\",
    '"',
    "http://",
    "http://127.0.0.1:1/x",
    "javascript:alert(1)",
    "com.example.app",
    "networka",
    "click",
    "sdk",
    "7d",
    "2020-01-01T00:00:00Z",
    "38400000-8cf0-11bd-b23e-10b96e40000d",
)
"""Strings that have broken parsers and validators somewhere."""

NOW = int(time.time())
"""The time the strategies take as now (fixed when imported: a strategy must
not change between the examples of a run)."""

LONG_SIZES = (100, 101, 128, 129, 200, 201, 500, 501, 2000, 2001, 4001, 20_000)
"""Lengths around the limits the validators enforce, and beyond."""


def texts(*, surrogates: bool = False, max_size: int = 30) -> st.SearchStrategy[str]:
    """Adversarial strings; lone surrogates only when ``surrogates`` (JSON)."""
    alphabet = st.characters() if surrogates else st.characters(codec="utf-8")
    long = st.tuples(st.sampled_from(("x", "é", "\x00", "9", "💥")), st.sampled_from(LONG_SIZES))
    parts: list[st.SearchStrategy[str]] = [
        st.sampled_from(NASTY_STRINGS),
        st.text(alphabet, max_size=max_size),
        long.map(lambda t: t[0] * t[1]),
    ]
    if surrogates:
        parts.append(st.sampled_from(("\ud800", "a\udc00b", "\udfff\ud800")))
    return st.one_of(parts)


def integers(low: int = -(2**63), high: int = 2**64 - 1) -> st.SearchStrategy[int]:
    """Integers in ``[low, high]``, often at the edges."""
    edges = [
        v
        for v in (0, 1, -1, 2**31 - 1, -(2**31), 2**32 - 1, 2**53 + 1, 2**63 - 1, -(2**63))
        if low <= v <= high
    ]
    edges += [low, high]
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def times() -> st.SearchStrategy[tuple[int, int]]:
    """(seconds, nanos) of a timestamp: recent, long ago, future, malformed."""
    return st.tuples(
        st.one_of(
            st.integers(NOW - 40 * 86400, NOW),
            st.sampled_from((0, 1, -1, 946_684_799, NOW + 3 * 3600, 253_402_300_800)),
            integers(-(2**63), 2**63 - 1),
        ),
        st.one_of(st.just(0), st.integers(0, 999_999_999), integers(-(2**31), 2**31 - 1)),
    )


def durations() -> st.SearchStrategy[tuple[int, int]]:
    """(seconds, nanos) of a duration: in the usual ranges, negative, huge."""
    return st.tuples(
        st.one_of(
            st.sampled_from((0, 1, 3600, 86400, 7 * 86400, 30 * 86400, 3 * 2_592_000, -1)),
            integers(-(2**63), 2**63 - 1),
        ),
        st.one_of(st.just(0), integers(-(2**31), 2**31 - 1)),
    )


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return texts()
    if t == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    if t == FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]  # type: ignore[union-attr]
        return st.one_of(st.sampled_from(known), integers(-(2**31), 2**31 - 1))
    low, high = INT_RANGES[t]
    return integers(low, high)


HUGE_SIZES = (101, 1000, 1001, 5000)
"""Sizes of the one huge repeated field a generated message may have."""
HUGE_BYTES = 1_000_000
"""A huge repeated field is cut to about this many bytes (the server's limit
is 4 MB; beyond it the transport refuses, before the service sees it)."""


def _weight(value: Any) -> int:
    if isinstance(value, Message):
        return value.ByteSize() + 2
    if isinstance(value, str | bytes):
        return len(value) + 2
    try:
        return len(json.dumps(value, default=repr)) + 1
    except (TypeError, ValueError):
        return 10


@st.composite
def _repeated(
    draw: st.DrawFn, element: st.SearchStrategy[Any], max_size: int, huge: list[int]
) -> list[Any]:
    """A few elements; or, once per message (``huge`` is the budget left),
    very many: a few drawn ones, repeated (cheap to make and to shrink)."""
    if not huge[0] or draw(st.integers(0, 7)):
        return [draw(element) for _ in range(draw(st.integers(0, max_size)))]
    huge[0] -= 1
    n = draw(st.sampled_from(HUGE_SIZES))
    few = [draw(element) for _ in range(draw(st.integers(1, 3)))]
    n = min(n, max(max_size, HUGE_BYTES * len(few) // sum(_weight(e) for e in few)))
    return [few[i % len(few)] for i in range(n)]


def _is_map(field: Any) -> bool:
    return bool(field.message_type is not None and field.message_type.GetOptions().map_entry)


@st.composite
def _fill(
    draw: st.DrawFn,
    message: Message,
    fields: Fields,
    depth: int,
    max_repeated: int,
    huge: list[int],
) -> None:
    """Set some of ``message``'s fields (each with even odds)."""
    desc: Any = message.DESCRIPTOR  # upb and pure-Python descriptors differ for mypy
    full = desc.full_name
    if full in (_TIMESTAMP, _DURATION):
        seconds, nanos = draw(times() if full == _TIMESTAMP else durations())
        message.seconds = seconds  # type: ignore[attr-defined]
        message.nanos = nanos  # type: ignore[attr-defined]
        return
    if full == _FIELD_MASK:
        paths = st.one_of(
            st.sampled_from(MASK_PATHS),
            st.builds("{}.{}".format, st.sampled_from(MASK_PATHS), st.sampled_from(MASK_PATHS)),
            texts(),
        )
        message.paths.extend(draw(st.lists(paths, max_size=4)))  # type: ignore[attr-defined]
        return
    for field in desc.fields:
        if draw(st.booleans()):
            draw(_set(message, field, fields, depth, max_repeated, huge))


MASK_PATHS = (
    "platform",
    "settings",
    "settings.click_lookback",
    "settings.postbacks",
    "settings.no_such_setting",
    "settings.click_lookback.seconds",
    "settings.srn_networks.x",
    "platform.x",
    "app_id",
    "keys",
    "version",
    "",
    ".",
    "settings..click_lookback",
    "Settings",
)
"""Field mask paths: right, unknown, malformed, and of fields not to be changed."""


@st.composite
def _set(
    draw: st.DrawFn,
    message: Message,
    field: Any,
    fields: Fields,
    depth: int,
    max_repeated: int,
    huge: list[int],
) -> None:
    """Give one field of ``message`` an adversarial value (of its type)."""
    name = field.name
    target = getattr(message, name)
    if _is_map(field):
        entry = field.message_type
        key_f, value_f = entry.fields_by_name["key"], entry.fields_by_name["value"]
        keys = draw(st.lists(fields.get(name, _scalar(key_f)), max_size=max_repeated))
        for k in keys:
            if value_f.message_type is not None:
                if depth > 0:
                    draw(_fill(target[k], fields, depth - 1, max_repeated, huge))
            else:
                target[k] = draw(_scalar(value_f))
    elif field.message_type is not None:
        if depth <= 0:
            return
        if field.is_repeated:
            sub = _built(field.message_type, fields, depth - 1, max_repeated, huge)
            target.extend(draw(_repeated(sub, max_repeated, huge)))
        else:
            target.SetInParent()
            draw(_fill(target, fields, depth - 1, max_repeated, huge))
    elif field.is_repeated:
        element = fields.get(name, _scalar(field))
        target.extend(draw(_repeated(element, max_repeated, huge)))
    else:
        setattr(message, name, draw(fields.get(name, _scalar(field))))


def _built(
    descriptor: Descriptor, fields: Fields, depth: int, max_repeated: int, huge: list[int]
) -> st.SearchStrategy[Message]:
    cls = message_factory.GetMessageClass(descriptor)

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        message = cls()
        draw(_fill(message, fields, depth, max_repeated, huge))
        return message

    return build()


def messages(
    descriptor: Descriptor,
    fields: Fields | None = None,
    depth: int = 4,
    max_repeated: int = 4,
) -> st.SearchStrategy[Message]:
    """Messages of ``descriptor``'s type, built field by field: each field set
    or not, with adversarial values of its type (unknown enum numbers, edge
    integers, odd strings, far or malformed times), nested messages down to
    ``depth``, repeated and map fields of random size (one of them, sometimes,
    with thousands of elements)."""

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        # A fresh budget per message: at most one huge repeated field in it.
        return draw(_built(descriptor, fields or {}, depth, max_repeated, [1]))

    return build()


@st.composite
def _mutate(draw: st.DrawFn, message: Message, fields: Fields, depth: int) -> None:
    """Replace one field somewhere in ``message`` (going down into the
    messages it has) with an adversarial value, or clear it."""
    desc: Any = message.DESCRIPTOR
    if desc.full_name in (_TIMESTAMP, _DURATION, _FIELD_MASK):
        message.Clear()
        draw(_fill(message, fields, 0, 4, [1]))
        return
    field = draw(st.sampled_from(list(desc.fields)))
    name = field.name
    inside = field.message_type is not None and not field.is_repeated and message.HasField(name)
    if inside and depth > 0 and draw(st.booleans()):
        draw(_mutate(getattr(message, name), fields, depth - 1))
        return
    message.ClearField(name)
    if draw(st.integers(0, 4)):  # else: left cleared
        draw(_set(message, field, fields, 3, 4, [1]))


def mutations(
    base: Message, fields: Fields | None = None, max_changes: int = 3
) -> st.SearchStrategy[Message]:
    """``base`` (a valid request) with one to ``max_changes`` fields, anywhere
    in it, replaced by adversarial values or cleared: requests that get past
    most checks, to find the one that is missing."""

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        message = type(base)()
        message.CopyFrom(base)
        for _ in range(draw(st.integers(1, max_changes))):
            draw(_mutate(message, fields or {}, 4))
        return message

    return build()


def set_everywhere(message: Message, name: str, value: Any) -> None:
    """Set every field called ``name`` in ``message``, in the messages it has
    and in each element of its repeated message fields, to ``value`` (e.g.
    every ``app_id``, so that a request names the caller's own app)."""
    desc: Any = message.DESCRIPTOR
    for field in desc.fields:
        if field.name == name and not field.is_repeated and field.message_type is None:
            setattr(message, name, value)
    for field, current in message.ListFields():
        if field.message_type is None or _is_map(field):
            continue
        for sub in current if field.is_repeated else [current]:
            set_everywhere(sub, name, value)


# --- raw bytes ---------------------------------------------------------------


def mutated_bytes(data: bytes) -> st.SearchStrategy[bytes]:
    """``data`` truncated, with bytes flipped, inserted or appended."""

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            op = draw(st.sampled_from(("truncate", "flip", "insert", "append")))
            at = draw(st.integers(0, len(out)))
            if op == "truncate":
                del out[at:]
            elif op == "flip" and at < len(out):
                out[at] ^= draw(st.integers(1, 255))
            elif op == "insert":
                out[at:at] = draw(st.binary(min_size=1, max_size=8))
            else:
                out += draw(st.binary(min_size=1, max_size=8))
        return bytes(out)

    return mutate()


INVALID_UTF8 = (b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\x80")
"""Bytes that are not UTF-8: a bare continuation, truncated sequences, an
encoded surrogate, beyond U+10FFFF, an overlong encoding."""


def proto_bytes(descriptor: Descriptor, fields: Fields | None = None) -> st.SearchStrategy[bytes]:
    """Bytes sent as a serialized ``descriptor`` message: random bytes, an
    encoded message mutated, or one with a string that is not UTF-8."""
    encoded = messages(descriptor, fields, depth=2).map(lambda m: m.SerializeToString())

    def bad_string(prefix: bytes, junk: bytes) -> bytes:
        # Field 1 as length-delimited (a string or message in every request).
        return prefix + b"\x0a" + bytes([len(junk)]) + junk

    return st.one_of(
        st.binary(max_size=200),
        encoded.flatmap(mutated_bytes),
        st.builds(bad_string, encoded, st.sampled_from(INVALID_UTF8)),
        st.builds(lambda n: b"\x0a" + b"\xff" * n, st.integers(1, 12)),
    )


# --- JSON --------------------------------------------------------------------

JSON_NUMBERS: tuple[Any, ...] = (
    0,
    -1,
    1.5,
    -0.0,
    2**63,
    -(2**63) - 1,
    2**64,
    10**30,
    10**400,
    1e308,
    float("inf"),
    float("-inf"),
    float("nan"),
)
"""Numbers JSON can carry and a protobuf field cannot (``json.dumps``
writes the non-finite ones as ``Infinity`` and ``NaN``, which Python's
``json.loads`` accepts)."""


def json_leaves() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.sampled_from(JSON_NUMBERS),
        st.integers(),
        st.floats(),
        texts(surrogates=True),
    )


def json_values(max_leaves: int = 10) -> st.SearchStrategy[Any]:
    """Any JSON value, lone surrogates and non-finite numbers included."""
    return st.recursive(
        json_leaves(),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(texts(surrogates=True, max_size=10), inner, max_size=4),
        ),
        max_leaves=max_leaves,
    )


FRIENDLY_TIMES = (
    "2020-01-01T00:00:00Z",
    "1999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999999Z",
    "10000-01-01T00:00:00Z",
    "2020-02-30T00:00:00Z",
    "2020-01-01T00:00:00+25:00",
    "2020-01-01T00:00:00.1234567891Z",
    "2020-01-01",
    "yesterday",
    "",
)
FRIENDLY_DURATIONS = (
    "0",
    "30s",
    "1.5h",
    "7d",
    "3mo",
    "-5s",
    "-7d",
    "1e3s",
    "1e400s",
    "9" * 30 + "d",
    "9" * 400 + "mo",
    "0.0000001s",
    "7 d",
    "7D",
    "",
    "d",
)


def _friendly(
    field: FieldDescriptor, fields: Fields, depth: int, huge: list[int]
) -> st.SearchStrategy[Any]:
    """A friendly-JSON value for one (non-repeated) element of ``field``:
    often of the right shape, sometimes anything."""
    anything = json_values(max_leaves=4)
    if field.name in fields:
        return st.one_of(fields[field.name], fields[field.name], anything)
    mt = field.message_type
    if mt is not None:
        if mt.full_name == _TIMESTAMP:
            recent = st.integers(NOW - 30 * 86400, NOW + 7200).map(
                lambda s: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s))
            )
            return st.one_of(recent, st.sampled_from(FRIENDLY_TIMES), anything)
        if mt.full_name == _DURATION:
            return st.one_of(st.sampled_from(FRIENDLY_DURATIONS), anything)
        if depth <= 0:
            return anything
        return st.one_of(_objects(mt, fields, depth - 1, huge), anything)
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        right: st.SearchStrategy[Any] = texts(surrogates=True)
    elif t == FieldDescriptor.TYPE_BOOL:
        right = st.booleans()
    elif t == FieldDescriptor.TYPE_ENUM:
        enum = field.enum_type
        assert enum is not None
        names = [v.name for v in enum.values]
        short = [n.split("_")[-1].lower() for n in names]
        right = st.one_of(
            st.sampled_from(names + short),
            st.sampled_from(short).map(lambda s: f" {s.upper()} "),
            st.sampled_from([v.number for v in enum.values] + [99, -1]),
            texts(surrogates=True),
        )
    elif t in INT_RANGES:
        low, high = INT_RANGES[t]
        ints = integers(low - 1, high + 1)
        right = st.one_of(ints, ints.map(str), st.sampled_from(("١٢٣", "²", "\uff11", " 1", "1.0")))
    else:
        right = st.floats()
    return st.one_of(right, right, anything)


def json_objects(
    descriptor: Descriptor, fields: Fields | None = None, depth: int = 3
) -> st.SearchStrategy[dict[str, Any]]:
    """Friendly-JSON objects shaped like ``descriptor``'s messages (field
    names, enum short names, friendly durations, RFC 3339 times), with
    wrong-typed values, nulls and unknown fields mixed in; at most one array
    in each has thousands of elements."""

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        return draw(_objects(descriptor, fields or {}, depth, [1]))

    return build()


def _objects(
    descriptor: Descriptor, fields: Fields, depth: int, huge: list[int]
) -> st.SearchStrategy[dict[str, Any]]:
    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field in descriptor.fields:
            if not draw(st.booleans()):
                continue
            element = _friendly(field, fields, depth, huge)
            if _is_map(field):
                entry = field.message_type
                assert entry is not None
                value = _friendly(entry.fields_by_name["value"], fields, depth, huge)
                keys = texts(surrogates=True, max_size=10)
                out[field.name] = draw(
                    st.one_of(st.dictionaries(keys, value, max_size=3), json_leaves())
                )
            elif field.is_repeated:
                out[field.name] = draw(st.one_of(_repeated(element, 3, huge), element))
            else:
                out[field.name] = draw(element)
        if draw(st.integers(0, 5)) == 0:
            out[draw(texts(surrogates=True, max_size=10))] = draw(json_leaves())
        return out

    return build()


def json_mutations(
    base: dict[str, Any],
    descriptor: Descriptor,
    fields: Fields | None = None,
    max_changes: int = 3,
) -> st.SearchStrategy[dict[str, Any]]:
    """``base`` (a valid friendly-JSON body of ``descriptor``'s message) with
    one to ``max_changes`` values, anywhere in it, replaced by adversarial
    ones (of the right shape or not), removed, or unknown keys added."""

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        data = copy.deepcopy(base)
        for _ in range(draw(st.integers(1, max_changes))):
            draw(_json_mutate(data, descriptor, fields or {}, 4))
        return data

    return build()


@st.composite
def _json_mutate(
    draw: st.DrawFn, data: dict[str, Any], desc: Any, fields: Fields, depth: int
) -> None:
    field = draw(st.sampled_from(list(desc.fields)))
    name = field.name
    value = data.get(name)
    mt = field.message_type
    if depth > 0 and mt is not None and not _is_map(field) and draw(st.booleans()):
        if isinstance(value, dict) and mt.full_name not in (_TIMESTAMP, _DURATION):
            draw(_json_mutate(value, mt, fields, depth - 1))
            return
        objects = [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
        if objects:
            draw(_json_mutate(draw(st.sampled_from(objects)), mt, fields, depth - 1))
            return
    op = draw(st.integers(0, 5))
    if op == 0:
        data.pop(name, None)
    elif op == 1:
        data[draw(texts(surrogates=True, max_size=10))] = draw(json_values(max_leaves=4))
    elif _is_map(field):
        value_f = field.message_type.fields_by_name["value"]
        entries = st.dictionaries(
            texts(surrogates=True, max_size=10), _friendly(value_f, fields, 2, [1]), max_size=3
        )
        data[name] = draw(st.one_of(entries, json_leaves()))
    elif field.is_repeated:
        element = _friendly(field, fields, 2, [1])
        data[name] = draw(st.one_of(_repeated(element, 3, [1]), element))
    else:
        data[name] = draw(_friendly(field, fields, 2, [1]))


def json_bytes(value: Any) -> st.SearchStrategy[bytes]:
    """``value`` written as JSON bytes: ASCII-escaped or not (a lone surrogate
    then cannot be UTF-8 and is written as ``\\udxxx`` escapes, or replaced by
    bytes that are not UTF-8), sometimes with a BOM or mutated."""
    escaped = json.dumps(value).encode()
    raw = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return st.one_of(
        st.just(escaped),
        st.just(raw),
        st.just(b"\xef\xbb\xbf" + escaped),
        mutated_bytes(escaped),
        st.sampled_from(INVALID_UTF8).map(lambda junk: escaped[:-1] + junk + escaped[-1:]),
    )


def nested(depth: int, kind: str = "[") -> bytes:
    """``depth`` nested arrays (``[``) or objects (``{``) as JSON bytes."""
    if kind == "[":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth
