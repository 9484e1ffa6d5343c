"""Configuration as frozen dataclasses, read from flags and the environment.

Every service has one config class. Each field has a default, a docstring
(shown by ``--help``) and two external names: the flag ``--field-name`` and the
environment variable ``LOOKBACK_FIELD_NAME``. A flag beats the environment,
which beats the default.

Supported field types: ``str``, ``int``, ``float``, ``bool`` and
``dict[str, str]`` (written ``key=value,key=value``).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import os
import textwrap
import typing
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any, TypeVar

T = TypeVar("T")

ENV_PREFIX = "LOOKBACK_"


class ConfigError(ValueError):
    """A configuration value could not be read."""


def env_name(field_name: str) -> str:
    """The environment variable that sets ``field_name``."""
    return ENV_PREFIX + field_name.upper()


def flag_name(field_name: str) -> str:
    """The command-line flag that sets ``field_name``."""
    return "--" + field_name.replace("_", "-")


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass (the string literal after a field)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def parse_map(text: str) -> dict[str, str]:
    """Parse ``a=1,b=2`` into a dict; empty text gives an empty dict."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"expected key=value, got {part!r}")
        out[key.strip()] = value.strip()
    return out


def _secret(name: str) -> bool:
    """Fields whose values must not be echoed in an error (and so a log)."""
    words = name.split("_")
    return bool({"secret", "secrets", "key", "keys", "password", "token"} & set(words))


def _convert(name: str, kind: Any, raw: str) -> Any:
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is str:
            return raw
        if typing.get_origin(kind) is dict:
            return parse_map(raw)
    except ValueError as exc:
        if _secret(name):
            raise ConfigError(f"{name}: cannot read the value (not shown: a secret)") from None
        raise ConfigError(f"{name}: cannot read {raw!r}: {exc}") from exc
    raise ConfigError(f"{name}: unsupported config type {kind!r}")


def load(
    cls: type[T],
    argv: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> T:
    """Build ``cls`` from defaults, then ``env``, then ``argv``, then ``overrides``."""
    env = os.environ if env is None else env
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    parser = argparse.ArgumentParser(add_help=False)
    for f in fields:
        parser.add_argument(flag_name(f.name), dest=f.name, default=None)
    parsed, unknown = parser.parse_known_args(list(argv))
    if unknown:
        raise ConfigError(f"unknown arguments: {' '.join(unknown)}")
    values: dict[str, Any] = {}
    for f in fields:
        raw = getattr(parsed, f.name)
        if raw is None:
            raw = env.get(env_name(f.name))
        if raw is not None:
            values[f.name] = _convert(f.name, hints[f.name], raw)
    values.update(overrides)
    return cls(**values)


def describe(cls: type) -> str:
    """Help text listing every field with its flag, variable, default and doc."""
    docs = field_docs(cls)
    lines = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else "(computed)"
        lines.append(f"  {flag_name(f.name)} / {env_name(f.name)}  [default: {default!r}]")
        if f.name in docs:
            lines.append(f"      {docs[f.name]}")
    return "\n".join(lines)
