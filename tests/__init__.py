"""Lookback's tests: ``unit/`` (pure and fast), ``contract/`` (each backend
against the same tests), ``integration/`` (real processes, servers and
backends); ``scenarios/`` holds the scenario files. Support code shared with
benchmarks and the scenario runner is in :mod:`lookback.testing`."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
"""The repository's root."""
