"""Config: defaults, then environment, then flags; each field documented."""

from __future__ import annotations

import pytest

from lookback.core import config
from lookback.decider.config import DeciderConfig
from lookback.srn_adapter.config import SrnConfig


def test_flags_beat_environment_beat_defaults() -> None:
    env = {"LOOKBACK_PORT": "7000", "LOOKBACK_SRN_BUDGET_MS": "80"}
    loaded = config.load(DeciderConfig, ["--srn-budget-ms", "50"], env)
    assert loaded.port == 7000
    assert loaded.srn_budget_ms == 50
    assert loaded.store_address == DeciderConfig().store_address


def test_maps_and_bad_values() -> None:
    loaded = config.load(SrnConfig, ["--srn-endpoints", "a=http://x:1, b=http://y:2"], {})
    assert loaded.srn_endpoints == {"a": "http://x:1", "b": "http://y:2"}
    with pytest.raises(config.ConfigError):
        config.load(DeciderConfig, ["--port", "many"], {})
    with pytest.raises(config.ConfigError):
        config.load(DeciderConfig, ["--no-such-flag", "1"], {})


def test_a_bad_secret_is_not_echoed_in_the_error() -> None:
    from lookback.postback.config import PostbackConfig

    with pytest.raises(config.ConfigError) as bad:
        config.load(PostbackConfig, ["--signing-secrets", "k1=fine,hunter2-no-equals"], {})
    assert "signing_secrets" in str(bad.value) and "hunter2" not in str(bad.value)


def test_every_field_has_a_docstring() -> None:
    import dataclasses

    for cls in (DeciderConfig, SrnConfig):
        docs = config.field_docs(cls)
        assert {f.name for f in dataclasses.fields(cls)} <= set(docs)
