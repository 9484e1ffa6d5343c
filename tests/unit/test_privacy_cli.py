"""``lookback erase``/``erasure``/``access`` and the scenario runner's
``erase`` step without a suite: how devices are named (flags, a file), how
bad ones are refused, how an erasure is shown and waited for, and how
scenario files with erase steps are validated."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from lookback.api.privacy.v1 import privacy_service_pb2 as pb
from lookback.api.types.v1 import device_pb2, erasure_pb2
from lookback.cli import privacy
from lookback.cli.scenario_files import InvalidScenario, validate

GAID = "38400000-8cf0-11bd-b23e-10b96e40000d"
SHA1 = "b" * 40
MD5 = "c" * 32


def _ns(argv: list[str], devices: str = "") -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    privacy._add_device_flags(parser)
    ns = parser.parse_args(argv)
    if devices:
        ns.devices = devices
    return ns


def test_the_flags_name_one_device_raw_and_hashed() -> None:
    ns = _ns(["--gaid", GAID, "--sha1-idfa", SHA1, "--md5-android-id", MD5])
    assert privacy.device_of_flags(ns) == {
        "gaid": GAID,
        "hashed": [
            {"type": "idfa", "algorithm": "sha1", "value": SHA1},
            {"type": "android_id", "algorithm": "md5", "value": MD5},
        ],
    }
    (device,) = privacy.devices_of(ns, 10)
    assert device.gaid == GAID
    assert [(h.type, h.algorithm) for h in device.hashed] == [
        (device_pb2.DEVICE_ID_TYPE_IDFA, device_pb2.HASH_ALGORITHM_SHA1),
        (device_pb2.DEVICE_ID_TYPE_ANDROID_ID, device_pb2.HASH_ALGORITHM_MD5),
    ]


def test_a_devices_file_comes_first_then_the_flags_device(tmp_path: Path) -> None:
    listed = tmp_path / "devices.json"
    listed.write_text(json.dumps([{"idfa": GAID}, {"oaid": "abc-123"}]))
    ds = privacy.devices_of(_ns(["--imei", "490154203237518"], str(listed)), 10)
    assert [d.idfa or d.oaid or d.imei for d in ds] == [GAID, "abc-123", "490154203237518"]
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"devices": [{"gaid": GAID}]}))
    assert privacy.devices_of(_ns([], str(body)), 10)[0].gaid == GAID


@pytest.mark.parametrize(
    ("argv", "content", "message"),
    [
        ([], None, "name a device"),
        (["--gaid", "nope"], None, "devices[0].gaid: must be a UUID"),
        (["--sha1-gaid", "abc"], None, "devices[0].hashed[0].value: must be 40 hex digits"),
        ([], '[{"gaid": 42}]', "devices[0].gaid"),
        ([], '{"gaid": "x"}', "must be a JSON list of devices"),
        ([], "[", "cannot read JSON"),
        ([], "[{}]", "devices[0]: must name at least one identifier"),
    ],
)
def test_bad_devices_are_named(
    tmp_path: Path, argv: list[str], content: str | None, message: str
) -> None:
    path = ""
    if content is not None:
        (tmp_path / "d.json").write_text(content)
        path = str(tmp_path / "d.json")
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        privacy.devices_of(_ns(argv, path), 10)


def test_too_many_devices() -> None:
    with pytest.raises(ValueError, match="at most 0 devices"):
        privacy.devices_of(_ns(["--gaid", GAID]), 0)


def _erasure(state: Any, done: int, **counts: int) -> erasure_pb2.Erasure:
    e = erasure_pb2.Erasure(
        erasure_id="er-1", app_id="com.x", state=state, devices=2, devices_done=done, runs=1
    )
    for name, value in counts.items():
        setattr(e.erased, name, value)
    return e


def test_describe() -> None:
    pending = _erasure(erasure_pb2.ERASURE_STATE_PENDING, 1)
    assert privacy.describe(pending) == "erasure er-1 (app com.x): pending, 1/2 devices"
    done = _erasure(erasure_pb2.ERASURE_STATE_COMPLETED, 2, touches=3, installs=1)
    assert privacy.describe(done) == (
        "erasure er-1 (app com.x): completed, 2/2 devices\n"
        "  erased: 3 touches, 1 installs, 0 decisions, 0 events, 0 postbacks"
    )
    everywhere = erasure_pb2.Erasure(erasure_id="er-2", all_apps=True, runs=2)
    assert privacy.describe(everywhere).startswith("erasure er-2 (every app): unspecified")
    assert "(run 2)" in privacy.describe(everywhere)


class Polled:
    def __init__(self, answers: list[erasure_pb2.Erasure]) -> None:
        self.answers = answers
        self.requests: list[pb.GetErasureRequest] = []

    async def GetErasure(self, request: pb.GetErasureRequest) -> pb.GetErasureResponse:
        self.requests.append(request)
        return pb.GetErasureResponse(erasure=self.answers.pop(0))


async def test_wait_reads_again_until_completed_showing_progress(
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = _erasure(erasure_pb2.ERASURE_STATE_PENDING, 0)
    stub = Polled(
        [
            _erasure(erasure_pb2.ERASURE_STATE_PENDING, 1),
            _erasure(erasure_pb2.ERASURE_STATE_COMPLETED, 2, installs=1),
        ]
    )
    done = await privacy.wait_for(stub, first, timeout=5, interval=0.001)
    assert done.state == erasure_pb2.ERASURE_STATE_COMPLETED and done.erased.installs == 1
    assert [(r.app_id, r.erasure_id) for r in stub.requests] == [("com.x", "er-1")] * 2
    err = capsys.readouterr().err
    assert "0/2 devices erased" in err and "1/2 devices erased" in err
    assert err.endswith("2/2 devices erased\n")


async def test_wait_gives_up_after_its_timeout() -> None:
    pending = _erasure(erasure_pb2.ERASURE_STATE_PENDING, 0)
    stub = Polled([pending] * 1000)
    with pytest.raises(TimeoutError) as info:
        await privacy.wait_for(stub, pending, timeout=0.05, interval=0.01, progress=False)
    assert info.value.args[0].state == erasure_pb2.ERASURE_STATE_PENDING


def test_erase_needs_an_app_or_all_apps(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--gaid", GAID], ["com.x", "--all-apps", "--gaid", GAID]):
        with pytest.raises(SystemExit) as info:
            privacy.erase_main(argv)
        assert info.value.code == 2
    assert "give APP_ID or --all-apps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        privacy.erasure_main(["--all-apps", "com.x", "er-1"])


def test_a_bad_device_exits_2_before_calling(capsys: pytest.CaptureFixture[str]) -> None:
    # Port 9 (discard) is never called: the device is refused first.
    code = privacy.erase_main(["com.x", "--gaid", "nope", "--target", "127.0.0.1:9"])
    assert code == 2
    assert "devices[0].gaid" in capsys.readouterr().err


# --- scenario files ----------------------------------------------------------


def _scenario(step: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "erase",
        "app": {"app_id": "com.x"},
        "steps": [{"at": "2026-06-01T12:00:00Z", **step}],
    }


def test_an_erase_step_is_valid() -> None:
    ok = {
        "erase": {"device": {"gaid": GAID, "sha1_idfa": SHA1}},
        "expect": {"erased": {"installs": 1, "touches": 2}},
    }
    assert validate("f.json", _scenario(ok)).steps[0]["erase"]["device"]["gaid"] == GAID
    validate("f.json", _scenario({"erase": {"device": {"gaid": "x"}}, "expect": {"error": "X"}}))


@pytest.mark.parametrize(
    ("step", "where"),
    [
        ({"erase": {}}, "step 0.erase.device: is required"),
        ({"erase": {"device": "x"}}, "step 0.erase.device: is required"),
        ({"erase": {"device": {"gaid": GAID}, "app_id": "y"}}, "step 0.erase.app_id"),
        (
            {"erase": {"device": {"gaid": GAID}}, "expect": {"erased": {"clicks": 1}}},
            "step 0.expect.erased.clicks: is not one of",
        ),
        (
            {"erase": {"device": {"gaid": GAID}}, "expect": {"erased": {"installs": "1"}}},
            "step 0.expect.erased.installs: must be a whole number",
        ),
        (
            {"erase": {"device": {"gaid": GAID}}, "expect": {"erased": [1]}},
            "step 0.expect.erased: must map",
        ),
        (
            {"erase": {"device": {"gaid": GAID}}, "expect": {"kind": "install"}},
            "step 0.expect.kind: is not checked on erase steps",
        ),
        (
            {"install": {"install_id": "i1"}, "expect": {"erased": {"installs": 1}}},
            "step 0.expect.erased: is only for erase steps",
        ),
    ],
)
def test_bad_erase_steps_are_named(step: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidScenario, match=where.replace("[", r"\[")):
        validate("f.json", _scenario(step))
