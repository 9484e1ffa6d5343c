"""``lookback up`` hands the allowed outbound ranges to every service it
starts: ``--outbound-allow-cidrs``, else its own
``LOOKBACK_OUTBOUND_ALLOW_CIDRS``; nothing when neither is set."""

from __future__ import annotations

import argparse

import pytest

from lookback.cli.suite import child_commands


def up_args(**extra: object) -> argparse.Namespace:
    return argparse.Namespace(
        host="127.0.0.1", base_port=7400, http_port=8080, data_dir="data", srn_endpoints="", **extra
    )


def test_lookback_up_hands_the_allowed_ranges_to_every_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LOOKBACK_OUTBOUND_ALLOW_CIDRS", raising=False)
    assert all("--outbound-allow-cidrs" not in c.argv for c in child_commands(up_args()))
    monkeypatch.setenv("LOOKBACK_OUTBOUND_ALLOW_CIDRS", "127.0.0.0/8")
    for child in child_commands(up_args()):
        at = child.argv.index("--outbound-allow-cidrs")
        assert child.argv[at + 1] == "127.0.0.0/8", child.name
    flagged = child_commands(up_args(outbound_allow_cidrs="10.0.0.0/8"))
    assert all(c.argv[c.argv.index("--outbound-allow-cidrs") + 1] == "10.0.0.0/8" for c in flagged)
