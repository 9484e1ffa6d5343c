"""The container image, as far as it can be checked without a Docker engine:
the Dockerfile's entrypoint runs every service, the user is numeric and not
root, and nothing a service writes (as configured by the manifests in k8s/)
lands on the read-only root filesystem."""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import posixpath
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from lookback.cli.main import SERVICE_NAMES, _specs
from lookback.postback.config import PostbackConfig
from lookback.touchpoint_store.config import StoreConfig
from tests import REPO
from tests.integration.k8s_manifests import (
    PATH_FIELDS,
    Dockerfile,
    build,
    is_under,
    kustomizations,
    written_paths,
)

DOCKERFILE = Dockerfile.read()
BUILDS = kustomizations()


def test_one_slim_python_311_image_for_every_service() -> None:
    assert DOCKERFILE.base_image == "python:3.11-slim"
    assert DOCKERFILE.entrypoint == ["lookback", "serve"]
    # Installed as a package, not editable, with pip.
    (install,) = [r for r in DOCKERFILE.values("RUN") if "pip install" in r]
    assert " -e " not in f" {install} " and "--editable" not in install
    assert DOCKERFILE.env.get("PYTHONDONTWRITEBYTECODE") == "1"
    # Reproducible: every runtime dependency comes from the pinned constraints.
    assert "-c /src/constraints.txt" in install


def test_the_constraints_pin_every_runtime_dependency_within_its_range() -> None:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line}"
            pins[canonicalize_name(name)] = Version(version)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"]:
        requirement = Requirement(spec)
        pinned = pins.get(canonicalize_name(requirement.name))
        assert pinned is not None, f"{requirement.name} is not pinned: scripts/gen_constraints.py"
        assert requirement.specifier.contains(pinned), (spec, str(pinned))
        for extra in requirement.extras:  # e.g. redis[hiredis] needs hiredis pinned too
            assert extra in pins, f"{extra} (extra of {requirement.name}) is not pinned"


@functools.cache
def _run_entrypoint(*args: str) -> subprocess.CompletedProcess[str]:
    """The image's entrypoint plus ``args``, with the entrypoint's program
    taken from this virtualenv (where the package is installed)."""
    program, *rest = DOCKERFILE.entrypoint
    exe = Path(sys.executable).parent / program
    return subprocess.run(
        [str(exe), *rest, *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_entrypoint_and_service_name_are_a_valid_command(service: str) -> None:
    done = _run_entrypoint(service, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"lookback serve {service} "), done.stdout


@pytest.mark.parametrize("name", BUILDS)
def test_entrypoint_and_container_args_are_a_valid_command(name: str) -> None:
    for service, c in build(name).lookback().items():
        assert service in SERVICE_NAMES, c.name
        done = _run_entrypoint(*c.spec["args"], "--help")
        assert done.returncode == 0, (c.name, done.stderr)
        assert done.stdout.startswith(f"lookback serve {service} "), done.stdout


def test_entrypoint_rejects_an_unknown_service() -> None:
    done = _run_entrypoint("touchpoint-store", "--help")  # the Service's name, not the service's
    assert done.returncode == 2
    assert "invalid choice" in done.stderr


def test_user_is_numeric_and_not_root_and_matches_the_manifests() -> None:
    uid, _, gid = DOCKERFILE.user.partition(":")
    assert uid.isdigit() and int(uid) > 0, DOCKERFILE.user
    assert not gid or gid.isdigit(), DOCKERFILE.user
    for name in BUILDS:
        for c in build(name).lookback().values():
            assert c.security("runAsUser") == int(uid), c.name
            if gid:
                assert c.security("runAsGroup") == int(gid), c.name


def _must_be_writable(service: str, config: object, env: dict[str, str]) -> list[str]:
    """Absolute paths the service writes in the container: its SQLite files
    if used, and HOME."""
    home = env.get("HOME", DOCKERFILE.env.get("HOME", "/root"))
    paths = [*written_paths(service, config), home]
    return [posixpath.join(DOCKERFILE.workdir, p) for p in paths]


@pytest.mark.parametrize("name", BUILDS)
def test_everything_written_is_on_a_writable_volume(name: str) -> None:
    for service, c in build(name).lookback().items():
        assert c.security("readOnlyRootFilesystem") is True, c.name
        mounts = c.writable_mounts()
        env = {**DOCKERFILE.env, **c.env}
        for path in _must_be_writable(service, c.config(), env):
            assert any(is_under(path, m) for m in mounts), (
                f"k8s/{name} {c.name}: {path} is not on a writable volume ({mounts})"
            )


def test_written_paths_follow_the_configured_backend() -> None:
    """The check above knows when each SQLite file is written."""
    configured = {
        (service, f.name)
        for service, spec in _specs().items()
        for f in dataclasses.fields(spec.config)
        if f.name.endswith("_path")
    }
    assert configured == PATH_FIELDS
    embedded = StoreConfig(sqlite_path="s.sqlite3")
    assert written_paths("touchpoint_store", embedded) == ["s.sqlite3"]
    assert written_paths("touchpoint_store", StoreConfig(cassandra_hosts="cassandra")) == []
    assert written_paths("postback", PostbackConfig(queue_path="q.sqlite3")) == ["q.sqlite3"]
    assert written_paths("postback", PostbackConfig(redis_url="redis://redis:6379/0")) == []
    # An embedded store in the image would write under WORKDIR, which the
    # manifests do not mount: the check would catch it.
    (path, _home) = _must_be_writable("touchpoint_store", embedded, {"HOME": "/tmp"})
    assert path == posixpath.join(DOCKERFILE.workdir, "s.sqlite3")
    for name in BUILDS:
        mounts = build(name).lookback()["touchpoint_store"].writable_mounts()
        assert not any(is_under(path, m) for m in mounts)


def _dockerignored(entry: str, patterns: list[str]) -> bool:
    """Whether a top-level entry of the build context is left out (the last
    matching pattern wins; ``!`` takes an entry back)."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        if fnmatch.fnmatchcase(entry, pattern.removeprefix("!").strip("/")):
            ignored = not negate
    return ignored


def test_build_context_holds_what_pip_install_reads() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    needed = {"pyproject.toml", project["project"]["readme"], *(p.split("/")[0] for p in packages)}
    for entry in needed:
        assert (REPO / entry).exists(), entry
        assert not _dockerignored(entry, patterns), f"{entry} is left out of the build context"
    for entry in (".venv", ".git", ".lookback", "tests", "k8s", "docs"):
        assert _dockerignored(entry, patterns), f"{entry} is sent to the image build"
