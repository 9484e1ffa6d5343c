"""The fast path of :mod:`lookback.core.jsonapi`: friendly JSON to and from
messages by walking their descriptors directly, for the shapes the API uses
(strings, booleans, integers, enums by short name, nested and repeated
messages, string maps, timestamps, friendly durations).

It is exact or it gives up: anything it does not handle, or any value that
is not exactly right, raises :class:`Unsupported`, and the caller falls back
to the general (``json_format``) path, which also names the bad field. A
unit test checks both paths give the same answers.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from lookback.core.convert import enum_prefix
from lookback.domain.durations import format_duration, parse_duration

_TIMESTAMP = "google.protobuf.Timestamp"
_DURATION = "google.protobuf.Duration"
_WELL_KNOWN = (_TIMESTAMP, _DURATION)
_INTS = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_SFIXED32,
    }
)
_LONGS = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


_INT_RANGES = {
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
"""What each integer type holds (a value outside is for the general path,
which names the field; only ASCII digits are a number there)."""


class Unsupported(Exception):
    """Not for the fast path: use the general one."""


@cache
def _map_entry(message_type: Any) -> bool:
    return bool(message_type.GetOptions().map_entry)


def _is_map(f: Field) -> bool:
    return f.message_type is not None and _map_entry(f.message_type)


@cache
def _prefix(enum: Any) -> str:
    return enum_prefix(enum)


Field = Any
"""A field descriptor (typed loosely: the upb and pure-Python descriptor
classes differ for the type checker, and optional parts are checked here)."""


# --- JSON to message --------------------------------------------------------------


def _scalar_in(f: Field, value: Any) -> Any:
    t = f.type
    if t == FieldDescriptor.TYPE_STRING and isinstance(value, str):
        return value
    if t == FieldDescriptor.TYPE_BOOL and isinstance(value, bool):
        return value
    if (t in _INTS or t in _LONGS) and not isinstance(value, bool):
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
            value = int(value)
        if isinstance(value, int) and _INT_RANGES[t][0] <= value <= _INT_RANGES[t][1]:
            return value
    if t == FieldDescriptor.TYPE_ENUM and isinstance(value, str) and value.isascii():
        prefix = _prefix(f.enum_type)
        name = value.strip().upper()
        found = f.enum_type.values_by_name.get(name if name.startswith(prefix) else prefix + name)
        if found is not None:
            return found.number
    raise Unsupported(f.name)


def _message_in(msg: Message, value: Any) -> None:
    full = msg.DESCRIPTOR.full_name
    try:
        if full == _TIMESTAMP and isinstance(value, str):
            msg.FromJsonString(value)  # type: ignore[attr-defined]
            return
        if full == _DURATION and isinstance(value, str):
            msg.FromMicroseconds(parse_duration(value))  # type: ignore[attr-defined]
            return
    except ValueError as exc:
        raise Unsupported(full) from exc
    if full in _WELL_KNOWN or not isinstance(value, dict):
        raise Unsupported(full)
    msg.SetInParent()
    fill(msg, value)


def fill(msg: Message, data: dict[str, Any]) -> None:
    """Set ``msg``'s fields from friendly JSON, or raise :class:`Unsupported`."""
    fields: dict[str, Field] = msg.DESCRIPTOR.fields_by_name  # type: ignore[assignment]
    for key, value in data.items():
        f = fields.get(key) if key.isascii() else None  # field names are ASCII
        if f is None or value is None:
            raise Unsupported(key)
        target = getattr(msg, key)
        if _is_map(f):
            if not isinstance(value, dict):
                raise Unsupported(key)
            value_field = f.message_type.fields_by_name["value"]
            for k, v in value.items():
                if value_field.message_type is not None:
                    _message_in(target[k], v)
                else:
                    target[k] = _scalar_in(value_field, v)
        elif f.is_repeated:
            if not isinstance(value, list):
                raise Unsupported(key)
            if f.message_type is not None:
                for v in value:
                    _message_in(target.add(), v)
            else:
                target.extend(_scalar_in(f, v) for v in value)
        elif f.message_type is not None:
            _message_in(target, value)
        else:
            setattr(msg, key, _scalar_in(f, value))


# --- message to JSON --------------------------------------------------------------


def _scalar_out(f: Field, value: Any) -> Any:
    t = f.type
    if t == FieldDescriptor.TYPE_ENUM:
        found = f.enum_type.values_by_number.get(value)
        if found is None:
            return value
        return found.name.removeprefix(_prefix(f.enum_type)).lower()
    if t in _LONGS:
        return str(value)
    if t in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BOOL) or t in _INTS:
        return value
    raise Unsupported(f.name)


def _message_out(msg: Message, defaults: bool) -> Any:
    full = msg.DESCRIPTOR.full_name
    if full == _TIMESTAMP:
        return msg.ToJsonString()  # type: ignore[attr-defined]
    if full == _DURATION:
        return format_duration(msg.ToMicroseconds())  # type: ignore[attr-defined]
    return dump(msg, defaults)


def _value_out(f: Field, value: Any, defaults: bool) -> Any:
    if _is_map(f):
        value_field = f.message_type.fields_by_name["value"]
        if value_field.message_type is not None:
            return {str(k): _message_out(v, defaults) for k, v in value.items()}
        return {str(k): _scalar_out(value_field, v) for k, v in value.items()}
    if f.is_repeated:
        if f.message_type is not None:
            return [_message_out(v, defaults) for v in value]
        return [_scalar_out(f, v) for v in value]
    if f.message_type is not None:
        return _message_out(value, defaults)
    return _scalar_out(f, value)


def _default_out(f: Field) -> Any:
    if _is_map(f):
        return {}
    if f.is_repeated:
        return []
    return _scalar_out(f, f.default_value)


def dump(msg: Message, defaults: bool = False) -> dict[str, Any]:
    """Friendly JSON for ``msg``; ``defaults`` also writes unset fields without
    presence. Raises :class:`Unsupported` for what it does not handle."""
    out: dict[str, Any] = {}
    desc: Any = msg.DESCRIPTOR
    if desc.full_name in _WELL_KNOWN:
        raise Unsupported(desc.full_name)
    for f, value in msg.ListFields():
        out[f.name] = _value_out(f, value, defaults)
    if defaults:
        for f in desc.fields:
            if f.name not in out and not f.has_presence:
                out[f.name] = _default_out(f)
    return out
