"""``lookback apps create|show|rotate-key``: the operator's commands, over
the decider's settings API, with the admin key."""

from __future__ import annotations

import json

import aiohttp

from lookback.testing.builders import new_app_id, new_gaid
from lookback.testing.keys import bearer
from lookback.testing.processes import run_cli
from lookback.testing.suite import SuiteAddresses


async def _get_app_status(suite: SuiteAddresses, app_id: str, key: str) -> int:
    body = {"app_id": app_id, "install_id": "cli-1", "device": {"gaid": new_gaid()}}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{suite.gateway_url}/v1/installs", json=body, headers=bearer(key)) as r,
    ):
        return r.status


async def test_create_show_and_rotate_an_app_from_the_command_line(suite: SuiteAddresses) -> None:
    app_id = new_app_id("com.cli")
    target = ("--target", suite.decider)
    code, out, err = await run_cli("apps", "create", app_id, "--platform", "android", *target)
    assert code == 0, err
    created = json.loads(out)
    sdk = created["keys"]["sdk"]
    assert sdk.startswith("lb-sdk-") and created["keys"]["s2s"].startswith("lb-s2s-")
    assert await _get_app_status(suite, app_id, sdk) == 200

    code, out, err = await run_cli("apps", "show", app_id, *target)
    assert code == 0, err
    shown = json.loads(out)
    assert sdk not in out  # hash prefixes only
    assert sorted(k["scope"] for k in shown["app"]["keys"]) == ["s2s", "sdk"]

    code, out, err = await run_cli(
        "apps", "rotate-key", app_id, "--scope", "sdk", "--grace", "0", *target
    )
    assert code == 0, err
    new_key = json.loads(out)["key"]
    assert await _get_app_status(suite, app_id, new_key) == 200

    # Without the admin key the command is refused, and says why.
    code, _, err = await run_cli(
        "apps", "show", app_id, *target, "--admin-key", "lb-admin-not-the-key-at-all"
    )
    assert code == 1 and "UNAUTHENTICATED" in err
