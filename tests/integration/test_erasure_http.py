"""Data-subject erasure and access through the gateway and the CLI
(ATTRIBUTION_RULES.md section 9, docs/http-api.md): a device's click and
install are erased, the request answered at once and completed in the
background, access finds nothing afterwards and a later install is decided
as new; ``lookback erase --wait`` does the same; only the app's ``s2s`` key
(or admin) may ask, and only admin for every app."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from lookback.testing import builders
from lookback.testing.keys import admin_headers, bearer
from lookback.testing.processes import run_cli
from lookback.testing.suite import SuiteAddresses

UA = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36"
WAIT = 90.0
"""Seconds an erasure may take here (its two passes are 10 s apart)."""


async def _request(
    http: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str], body: Any = None
) -> tuple[int, Any]:
    async with http.request(method, url, json=body, headers=headers) as r:
        return r.status, await r.json()


async def _click_and_install(
    http: aiohttp.ClientSession, base: str, app_id: str, keys: Any, gaid: str, install_id: str
) -> dict[str, Any]:
    """A networka click on the device, then its install (won by that click)."""
    click = {
        "app_id": app_id,
        "type": "click",
        "media_source": "networka",
        "campaign": "spring",
        "click_id": f"c-{install_id}",
        "engaged_at": builders.iso_ago(3600),
        "device": {"gaid": gaid},
    }
    status, answer = await _request(
        http, "POST", f"{base}/v1/touches", bearer(keys.s2s), {"touches": [click]}
    )
    assert status == 200, answer
    install = {
        "app_id": app_id,
        "install_id": install_id,
        "device": {"gaid": gaid},
        "user_agent": UA,
        "os_version": "14",
    }
    status, answer = await _request(http, "POST", f"{base}/v1/installs", bearer(keys.sdk), install)
    assert status == 200, answer
    decision: dict[str, Any] = answer["decision"]
    return decision


async def _until_completed(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT
    while True:
        status, answer = await _request(http, "GET", url, headers)
        assert status == 200, answer
        if answer["state"] == "completed":
            return dict(answer)
        assert answer["state"] == "pending", answer
        assert 0 <= answer["devices_done"] <= answer["devices"]
        assert time.monotonic() < deadline, f"not completed within {WAIT}s: {answer}"
        await asyncio.sleep(0.2)


async def test_a_device_is_erased_and_then_found_nowhere(suite: SuiteAddresses) -> None:
    app_id, keys = await builders.keyed_app(suite.decider, "com.erase")
    base = suite.gateway_url
    gaid = builders.new_gaid()
    devices = {"devices": [{"gaid": gaid}]}
    own = bearer(keys.s2s)
    async with aiohttp.ClientSession() as http:
        made = await _click_and_install(http, base, app_id, keys, gaid, "i1")
        assert (made["kind"], made["media_source"]) == ("install", "networka")
        access = f"{base}/v1/apps/{app_id}/devices:access"
        status, found = await _request(http, "POST", access, own, devices)
        assert status == 200, found
        assert [t["click_id"] for t in found["touches"]] == ["c-i1"]
        assert [r["install"]["install_id"] for r in found["installs"]] == ["i1"]
        assert found["installs"][0]["decision"]["media_source"] == "networka"
        assert gaid not in json.dumps(found["touches"])  # touches keep hashed forms only

        status, erasure = await _request(
            http, "POST", f"{base}/v1/apps/{app_id}/erasures", own, devices
        )
        assert status == 202, erasure
        assert erasure["app_id"] == app_id and erasure["all_apps"] is False
        assert erasure["devices"] == 1 and erasure["runs"] == 1
        assert erasure["create_time"] and erasure["start_time"]
        if erasure["state"] == "pending":
            assert erasure["complete_time"] is None
            # Asked again while pending: the same request, its progress.
            status, again = await _request(
                http, "POST", f"{base}/v1/apps/{app_id}/erasures", own, devices
            )
            assert status == 202 and again["erasure_id"] == erasure["erasure_id"]
            assert again["runs"] == 1
        url = f"{base}/v1/apps/{app_id}/erasures/{erasure['erasure_id']}"
        done = await _until_completed(http, url, own)
        assert done["devices_done"] == 1 and done["complete_time"]
        assert done["erased"]["touches"] == 1
        assert done["erased"]["installs"] == 1
        assert done["erased"]["decisions"] >= 1
        # An admin reads it too; under no other app, nor as an every-app request.
        assert (await _request(http, "GET", url, admin_headers()))[0] == 200
        other_app, _ = await builders.keyed_app(suite.decider, "com.erase")
        elsewhere = f"{base}/v1/apps/{other_app}/erasures/{erasure['erasure_id']}"
        assert (await _request(http, "GET", elsewhere, admin_headers()))[0] == 404
        everywhere = f"{base}/v1/erasures/{erasure['erasure_id']}"
        assert (await _request(http, "GET", everywhere, admin_headers()))[0] == 404

        status, found = await _request(http, "POST", access, own, devices)
        assert status == 200
        assert found == {"touches": [], "installs": [], "decisions": [], "events": []}
        status, answer = await _request(http, "GET", f"{base}/v1/apps/{app_id}/installs/i1", own)
        assert status == 404, answer
        # The device is new again: no prior install, no click to win it.
        later = {
            "app_id": app_id,
            "install_id": "i2",
            "device": {"gaid": gaid},
            "user_agent": UA,
        }
        status, answer = await _request(
            http, "POST", f"{base}/v1/installs", bearer(keys.sdk), later
        )
        assert status == 200, answer
        assert (answer["decision"]["kind"], answer["decision"]["media_source"]) == (
            "install",
            "organic",
        )


async def test_erasure_and_access_need_the_apps_s2s_key_or_admin(suite: SuiteAddresses) -> None:
    app_id, keys = await builders.keyed_app(suite.decider, "com.erase")
    _, other = await builders.keyed_app(suite.decider, "com.erase")
    base = suite.gateway_url
    devices = {"devices": [{"gaid": builders.new_gaid()}]}
    routes = [
        ("POST", f"{base}/v1/apps/{app_id}/erasures", devices),
        ("GET", f"{base}/v1/apps/{app_id}/erasures/er-unknown", None),
        ("POST", f"{base}/v1/apps/{app_id}/devices:access", devices),
    ]
    async with aiohttp.ClientSession() as http:
        for method, url, body in routes:
            assert (await _request(http, method, url, {}, body))[0] == 401, url
            for key in (keys.sdk, other.s2s, other.sdk):
                status, answer = await _request(http, method, url, bearer(key), body)
                assert status == 403, (url, answer)
                assert answer["error"]["code"] == "PERMISSION_DENIED"
        # Every app's: admin only, whatever app key.
        for method, url, body in (
            ("POST", f"{base}/v1/erasures", devices),
            ("GET", f"{base}/v1/erasures/er-unknown", None),
        ):
            for key in (keys.s2s, keys.sdk):
                assert (await _request(http, method, url, bearer(key), body))[0] == 403, url
        status, answer = await _request(http, "GET", routes[1][1], bearer(keys.s2s))
        assert status == 404 and answer["error"]["code"] == "NOT_FOUND"
        status, answer = await _request(http, "GET", routes[1][1], admin_headers())
        assert status == 404


async def test_bad_devices_are_400s_naming_the_field(suite: SuiteAddresses) -> None:
    app_id, keys = await builders.keyed_app(suite.decider, "com.erase")
    base = suite.gateway_url
    cases = [
        ({"devices": [{"gaid": builders.new_gaid()}, {"gaid": "zzz"}]}, "devices[1].gaid"),
        (
            {"devices": [{"hashed": [{"type": "gaid", "algorithm": "sha1", "value": "abc"}]}]},
            "devices[0].hashed[0].value",
        ),
        ({"devices": [{}]}, "devices[0]"),
        # All-zero: "not available", never a key of anything.
        ({"devices": [{"gaid": "00000000-0000-0000-0000-000000000000"}]}, "devices[0]"),
        ({"devices": []}, "devices"),
        ({"device": {"gaid": builders.new_gaid()}}, "device"),
    ]
    async with aiohttp.ClientSession() as http:
        for path in (f"/v1/apps/{app_id}/erasures", f"/v1/apps/{app_id}/devices:access"):
            for body, field in cases:
                status, answer = await _request(http, "POST", base + path, bearer(keys.s2s), body)
                assert status == 400, (path, body, answer)
                fields = {v["field"] for v in answer["error"]["field_violations"]}
                assert field in fields, (path, body, answer)
        too_many = {"devices": [{"gaid": builders.new_gaid()} for _ in range(101)]}
        status, answer = await _request(
            http, "POST", f"{base}/v1/apps/{app_id}/devices:access", bearer(keys.s2s), too_many
        )
        assert status == 400 and answer["error"]["field_violations"][0]["field"] == "devices"


async def test_every_apps_erasure_needs_admin_and_erases_everywhere(
    suite: SuiteAddresses,
) -> None:
    base = suite.gateway_url
    gaid = builders.new_gaid()
    devices = {"devices": [{"gaid": gaid}]}
    apps = [await builders.keyed_app(suite.decider, "com.erase") for _ in range(2)]
    async with aiohttp.ClientSession() as http:
        for n, (app_id, keys) in enumerate(apps):
            await _click_and_install(http, base, app_id, keys, gaid, f"i-all-{n}")
        status, erasure = await _request(
            http, "POST", f"{base}/v1/erasures", admin_headers(), devices
        )
        assert status == 202, erasure
        assert erasure["all_apps"] is True and erasure["app_id"] == ""
        url = f"{base}/v1/erasures/{erasure['erasure_id']}"
        done = await _until_completed(http, url, admin_headers())
        assert done["erased"]["installs"] >= 2 and done["erased"]["touches"] >= 2
        for app_id, keys in apps:
            status, found = await _request(
                http, "POST", f"{base}/v1/apps/{app_id}/devices:access", bearer(keys.s2s), devices
            )
            assert status == 200
            assert found == {"touches": [], "installs": [], "decisions": [], "events": []}


async def test_lookback_erase_waits_and_access_shows_nothing_after(
    suite: SuiteAddresses,
) -> None:
    app_id, keys = await builders.keyed_app(suite.decider, "com.erase")
    gaid = builders.new_gaid()
    async with aiohttp.ClientSession() as http:
        await _click_and_install(http, suite.gateway_url, app_id, keys, gaid, "i-cli")
    target = ("--target", suite.decider)
    code, out, err = await run_cli("access", app_id, "--gaid", gaid, *target)
    assert code == 0, err
    assert [r["install"]["install_id"] for r in json.loads(out)["installs"]] == ["i-cli"]

    # The app's own s2s key works as --admin-key for its app.
    code, out, err = await run_cli(
        "erase", app_id, "--gaid", gaid, "--wait", *target, env={"LOOKBACK_ADMIN_KEY": keys.s2s}
    )
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.startswith("erasure er-") and f"(app {app_id})" in first
    assert f"app {app_id}): completed, 1/1 devices" in out
    assert "erased: 1 touches, 1 installs," in out
    assert "1/1 devices erased" in err
    erasure_id = first.split()[1]

    code, out, err = await run_cli("erasure", app_id, erasure_id, "--json", *target)
    assert code == 0, err
    shown = json.loads(out)
    assert (shown["erasure_id"], shown["state"]) == (erasure_id, "completed")
    code, out, err = await run_cli("access", app_id, "--gaid", gaid, *target)
    assert code == 0, err
    assert json.loads(out) == {"touches": [], "installs": [], "decisions": [], "events": []}

    # An sdk key may not; nor may an app key ask for every app.
    code, _, err = await run_cli(
        "erase", app_id, "--gaid", gaid, *target, env={"LOOKBACK_ADMIN_KEY": keys.sdk}
    )
    assert code == 1 and "PERMISSION_DENIED" in err
    code, _, err = await run_cli(
        "erase", "--all-apps", "--gaid", gaid, *target, env={"LOOKBACK_ADMIN_KEY": keys.s2s}
    )
    assert code == 1 and "PERMISSION_DENIED" in err
    code, _, err = await run_cli("erase", app_id, "--gaid", "nope", *target)
    assert code == 2 and "devices[0].gaid" in err
