"""Options the operator commands share."""

from __future__ import annotations

import argparse
import os
import sys

from lookback.core.errors import LookbackError

ADMIN_KEY_ENV = "LOOKBACK_ADMIN_KEY"


def add_admin_key(parser: argparse.ArgumentParser) -> None:
    """``--admin-key`` (default: ``LOOKBACK_ADMIN_KEY``): the key the command presents."""
    parser.add_argument(
        "--admin-key",
        default=os.environ.get(ADMIN_KEY_ENV, ""),
        help=f"admin key to present (default: ${ADMIN_KEY_ENV}; `lookback up` prints one)",
    )


def admin_key(ns: argparse.Namespace, command: str) -> str:
    """The admin key given, or exit with a clear message."""
    key = str(getattr(ns, "admin_key", "") or "")
    if not key:
        raise SystemExit(f"{command}: an admin key is required (--admin-key or ${ADMIN_KEY_ENV})")
    return key


def report_failure(command: str, exc: LookbackError) -> int:
    """Say on stderr why a call was refused (its code, message and each bad
    field); the exit code of a refused call."""
    print(f"{command}: {exc.code.name}: {exc.message}", file=sys.stderr)
    for v in getattr(exc, "violations", ()):
        print(f"  {v.field}: {v.description}", file=sys.stderr)
    return 1
