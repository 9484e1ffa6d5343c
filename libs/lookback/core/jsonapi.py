"""Friendly JSON for protobuf messages, used by the HTTP gateway and the CLI.

Compared with plain proto JSON:

- enums are written by their short lower-case name: ``"click"`` for
  ``TOUCH_TYPE_CLICK``, ``"authorized"`` for ``ATT_STATUS_AUTHORIZED``;
- durations accept ``30s``, ``90m``, ``24h``, ``7d``, ``3mo`` or ``0`` and are
  written the same way;
- field names are the proto names (``install_id``);
- a parse error names the field (``install.installed_at``) in an
  :class:`~lookback.core.errors.InvalidArgument`.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from lookback.core import fastjson
from lookback.core.convert import enum_prefix
from lookback.core.errors import FieldViolation, InvalidArgument
from lookback.domain.durations import SECOND, format_duration, parse_duration

M = TypeVar("M", bound=Message)

_DURATION = "google.protobuf.Duration"
_FIELD_ERR = re.compile(r"Failed to parse (\w+) field: ")
_NO_FIELD = re.compile(r'has no field named "([^"]+)"')


def _is_map(field: FieldDescriptor) -> bool:
    return bool(field.message_type and field.message_type.GetOptions().map_entry)


def _in_value(field: FieldDescriptor, value: Any, path: str) -> Any:
    if field.enum_type is not None and isinstance(value, str):
        prefix = enum_prefix(field.enum_type)
        upper = value.strip().upper()
        return upper if upper.startswith(prefix) else prefix + upper
    if field.message_type is not None:
        if field.message_type.full_name == _DURATION and isinstance(value, str):
            try:
                micros = parse_duration(value)
            except ValueError as exc:
                raise InvalidArgument([FieldViolation(path, str(exc))]) from exc
            return f"{micros / SECOND:f}s"
        if isinstance(value, dict):
            return _to_proto_json(field.message_type, value, f"{path}.")
    return value


def _to_proto_json(desc: Any, data: dict[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        field = desc.fields_by_name.get(key)
        path = f"{prefix}{key}"
        if field is None:
            out[key] = value
        elif _is_map(field) and isinstance(value, dict):
            value_field = field.message_type.fields_by_name["value"]  # type: ignore[union-attr]
            out[key] = {k: _in_value(value_field, v, f"{path}[{k}]") for k, v in value.items()}
        elif field.is_repeated and isinstance(value, list):
            out[key] = [_in_value(field, v, f"{path}[{i}]") for i, v in enumerate(value)]
        else:
            out[key] = _in_value(field, value, path)
    return out


def _surrogate_path(data: Any, path: str) -> str | None:
    """The path of the first string (key or value) that is not valid Unicode."""
    if isinstance(data, str):
        try:
            data.encode()
        except UnicodeEncodeError:
            return path
        return None
    items: list[tuple[str, Any]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if _surrogate_path(key, "") is not None:
                return path.rstrip(".") or "body"
            items.append((f"{path}{key}", value))
    elif isinstance(data, list):
        items = [(f"{path.rstrip('.')}[{i}]", v) for i, v in enumerate(data)]
    for sub, value in items:
        found = _surrogate_path(value, sub + "." if isinstance(value, dict) else sub)
        if found is not None:
            return found.rstrip(".")
    return None


def _not_unicode(data: Any, prefix: str) -> InvalidArgument:
    path = _surrogate_path(data, prefix) or prefix.rstrip(".") or "body"
    return InvalidArgument([FieldViolation(path, "is not valid Unicode (a lone surrogate)")])


def parse(cls: type[M], data: Any, prefix: str = "") -> M:
    """Build ``cls`` from friendly JSON; errors name the field (``prefix`` first)."""
    if not isinstance(data, dict):
        raise InvalidArgument(
            [FieldViolation(prefix.rstrip(".") or "body", "must be a JSON object")]
        )
    message = cls()
    try:
        fastjson.fill(message, data)
        return message
    except fastjson.Unsupported:
        message = cls()  # the general path, which names what is wrong
    except UnicodeEncodeError as exc:
        raise _not_unicode(data, prefix) from exc
    if _surrogate_path(data, prefix) is not None:
        raise _not_unicode(data, prefix)
    try:
        json_format.ParseDict(_to_proto_json(message.DESCRIPTOR, data, prefix), message)
    except UnicodeEncodeError as exc:
        raise _not_unicode(data, prefix) from exc
    except json_format.ParseError as exc:
        text = str(exc)
        names = _FIELD_ERR.findall(text)
        unknown = _NO_FIELD.search(text)
        if unknown:
            names.append(unknown.group(1))
            description = "is not a known field"
        else:
            description = _FIELD_ERR.sub("", text)
        path = prefix + ".".join(names) if names else (prefix.rstrip(".") or "body")
        raise InvalidArgument([FieldViolation(path, description)]) from exc
    return message


def _out_value(field: FieldDescriptor, value: Any) -> Any:
    if field.enum_type is not None and isinstance(value, str):
        return value.removeprefix(enum_prefix(field.enum_type)).lower()
    if field.message_type is not None:
        if field.message_type.full_name == _DURATION and isinstance(value, str):
            return format_duration(round(float(value.rstrip("s")) * SECOND))
        if isinstance(value, dict):
            return _from_proto_json(field.message_type, value)
    return value


def _from_proto_json(desc: Any, data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        field = desc.fields_by_name.get(key)
        if field is None:
            out[key] = value
        elif _is_map(field):
            value_field = field.message_type.fields_by_name["value"]  # type: ignore[union-attr]
            out[key] = {k: _out_value(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            out[key] = [_out_value(field, v) for v in value]
        else:
            out[key] = _out_value(field, value)
    return out


def dump(message: Message, defaults: bool = False) -> dict[str, Any]:
    """Friendly JSON for ``message``; ``defaults`` also writes unset scalars."""
    try:
        return fastjson.dump(message, defaults)
    except fastjson.Unsupported:
        pass
    data = json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=defaults,
    )
    return _from_proto_json(message.DESCRIPTOR, data)
