"""The scenario runner's contract: exit codes, messages naming file, step
and field, and --json output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

GOOD = {
    "name": "organic without touches",
    "app": {"app_id": "com.runner.test", "platform": "android"},
    "steps": [
        {
            "at": "2026-06-01T12:00:00Z",
            "install": {
                "install_id": "i1",
                "device": {"gaid": "38400000-8cf0-11bd-b23e-10b96e4f0001"},
            },
            "expect": {"kind": "install", "media_source": "organic", "method": "none"},
        },
    ],
}


def run(tmp_path: Path, files: dict[str, Any], *flags: str) -> subprocess.CompletedProcess[str]:
    for name, content in files.items():
        (tmp_path / name).write_text(content if isinstance(content, str) else json.dumps(content))
    return subprocess.run(
        [sys.executable, "-m", "lookback.cli.main", "scenario", "run", str(tmp_path), *flags],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_passing_scenarios_exit_0_and_json_reports_each(tmp_path: Path) -> None:
    result = run(tmp_path, {"good.json": GOOD}, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    (line,) = result.stdout.strip().splitlines()
    report = json.loads(line)
    assert report == {
        "file": str(tmp_path / "good.json"),
        "name": GOOD["name"],
        "passed": True,
        "failures": [],
    }


def test_a_failed_expectation_exits_1_naming_file_step_and_field(tmp_path: Path) -> None:
    bad = json.loads(json.dumps(GOOD))
    bad["steps"][0]["expect"]["media_source"] = "networka"
    result = run(tmp_path, {"wrong.json": bad})
    assert result.returncode == 1
    assert "wrong.json: step 0: media_source: expected 'networka', got 'organic'" in result.stdout
    assert "scenarios: 0 passed, 1 failed" in result.stdout


def test_an_invalid_file_exits_2_and_is_not_run(tmp_path: Path) -> None:
    invalid = json.loads(json.dumps(GOOD))
    invalid["steps"][0]["at"] = "yesterday"
    result = run(tmp_path, {"invalid.json": invalid, "good.json": GOOD})
    assert result.returncode == 2
    assert "invalid.json: step 0.at:" in result.stderr
    assert "PASS" in result.stdout and "invalid.json" not in result.stdout


def test_structure_errors_name_the_field(tmp_path: Path) -> None:
    cases = {
        "two_kinds.json": {**GOOD, "steps": [{**GOOD["steps"][0], "click": {}}]},
        "bad_expect.json": {**GOOD, "steps": [{**GOOD["steps"][0], "expect": {"colour": "red"}}]},
        "bad_setting.json": {
            **GOOD,
            "app": {"app_id": "x", "settings": {"click_lookback": "7 weeks"}},
        },
        "not_json.json": "{",
    }
    result = run(tmp_path, cases)
    assert result.returncode == 2
    assert "two_kinds.json: step 0: must have exactly one of" in result.stderr
    assert "bad_expect.json: step 0.expect.colour: is not a known expectation" in result.stderr
    assert "bad_setting.json: app.settings.click_lookback:" in result.stderr
    assert "not_json.json: file: cannot read JSON" in result.stderr


def test_an_error_expectation_sends_the_step_as_written(tmp_path: Path) -> None:
    scenario = {
        "name": "install without install_id is refused",
        "app": {"app_id": "com.runner.err"},
        "steps": [
            {
                "at": "2026-06-01T12:00:00Z",
                "install": {"install_id": ""},
                "expect": {"error": "INVALID_ARGUMENT"},
            }
        ],
    }
    result = run(tmp_path, {"err.json": scenario})
    assert result.returncode == 0, result.stdout + result.stderr
