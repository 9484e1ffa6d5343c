"""The ``lookback`` command."""
