"""The Kubernetes manifests (k8s/), as kustomize builds the base and each
overlay: every port, probe, address and setting agrees with what the
services actually read and listen on (their config classes), and every pod
is locked down. Needs kustomize: scripts/k8s_check.sh builds the pinned one."""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import urlsplit

import pytest

from lookback.cli.main import SERVICE_NAMES, _specs
from lookback.core import config as cfg
from lookback.core.config import parse_map
from lookback.core.server import LIVENESS
from tests.integration.k8s_manifests import (
    IMAGE,
    Container,
    Manifests,
    build,
    data_of,
    kustomizations,
)

BUILDS = kustomizations()
OVERLAYS = [b for b in BUILDS if b != "base"]
AUTOSCALED = ("decider", "ingestion", "gateway")
# The service each ``*_address`` setting must lead to.
ADDRESS_TARGETS = {
    "store_address": "touchpoint_store",
    "srn_address": "srn_adapter",
    "postback_address": "postback",
    "decider_address": "decider",
}
# Third-party images whose entrypoint writes to their own filesystem.
WRITABLE_ROOT_ALLOWED = {("StatefulSet", "cassandra")}


@pytest.fixture(scope="module", params=BUILDS)
def m(request: pytest.FixtureRequest) -> Manifests:
    return build(request.param)


def listening_port(c: Container) -> int:
    """The port the service binds, as its config reads it in the container."""
    config = c.config()
    port = int(config.http_port if hasattr(config, "http_port") else config.port)
    assert port != 0, f"{c.name}: no fixed port (0 picks a free one)"
    return port


def is_grpc(service: str) -> bool:
    """Served over gRPC (the gateway's API is HTTP; its gRPC port has health only)."""
    return not hasattr(_specs()[service].config, "http_port")


def test_every_service_is_deployed_once(m: Manifests) -> None:
    containers = m.lookback()
    assert sorted(containers) == sorted(SERVICE_NAMES)
    for c in containers.values():
        assert c.workload["kind"] == "Deployment", c.name
        assert c.spec["image"].startswith(IMAGE + ":"), c.name
        assert c.spec["image"].rsplit(":", 1)[1] not in ("", "latest"), c.name


def test_ports_and_probes_match_what_each_service_listens_on(m: Manifests) -> None:
    for service, c in m.lookback().items():
        port = listening_port(c)
        assert [p["containerPort"] for p in c.spec["ports"]] == [port], c.name
        probes = {
            k: c.spec[k] for k in ("startupProbe", "readinessProbe", "livenessProbe") if k in c.spec
        }
        assert {"readinessProbe", "livenessProbe"} <= set(probes), c.name
        for kind, probe in probes.items():
            if is_grpc(service):
                # Native gRPC probes: readiness (and start-up) on the whole
                # server, which follows the backend; liveness on the name that
                # stays SERVING while the process runs (no restarts for an
                # outage elsewhere).
                assert c.port_number(probe["grpc"]["port"]) == port, (c.name, kind)
                want = LIVENESS if kind == "livenessProbe" else ""
                assert probe["grpc"].get("service", "") == want, (c.name, kind)
            else:
                assert c.port_number(probe["httpGet"]["port"]) == port, (c.name, kind)
        if not is_grpc(service):
            assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz", c.name
            assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz", c.name
        (svc,) = m.services_selecting(c)
        assert svc["metadata"]["name"] == c.workload["metadata"]["name"], c.name
        if is_grpc(service):  # one address per pod for the clients' round_robin
            assert svc["spec"].get("clusterIP") == "None", c.name
        for p in svc["spec"]["ports"]:
            assert c.port_number(p.get("targetPort", p["port"])) == port, (c.name, p)


def test_store_waits_for_its_backend_in_a_startup_probe(m: Manifests) -> None:
    assert "startupProbe" in m.lookback()["touchpoint_store"].spec


def test_every_setting_is_read_by_the_service_that_gets_it(m: Manifests) -> None:
    for service, c in m.lookback().items():
        read = {cfg.env_name(f.name) for f in dataclasses.fields(c.config_class)}
        for name, _value, source in c.env_sources():
            if name.startswith(cfg.ENV_PREFIX) or source != "env":
                assert name in read, (
                    f"k8s/{m.name} {c.name}: {service} does not read {name} ({source})"
                )
        assert c.pod.get("enableServiceLinks") is False, c.name  # no stray *_PORT variables
        c.config()  # and every value parses


def test_every_config_map_and_secret_is_used(m: Manifests) -> None:
    used = {
        (kind, obj["metadata"]["name"])
        for c in m.containers()
        for source in [
            *c.spec.get("envFrom", []),
            *(e.get("valueFrom", {}) for e in c.spec.get("env", [])),
        ]
        for kind, key in (
            ("ConfigMap", "configMapRef"),
            ("Secret", "secretRef"),
            ("ConfigMap", "configMapKeyRef"),
            ("Secret", "secretKeyRef"),
        )
        if key in source
        for obj in [m.get(kind, source[key]["name"])]
    }
    for obj in [*m.of_kind("ConfigMap"), *m.of_kind("Secret")]:
        assert (obj["kind"], obj["metadata"]["name"]) in used, obj["metadata"]["name"]


def test_service_addresses_name_a_service_and_its_port(m: Manifests) -> None:
    fields = {f.name for s in _specs().values() for f in dataclasses.fields(s.config)}
    assert {f for f in fields if f.endswith("_address")} == set(ADDRESS_TARGETS)
    containers = m.lookback()
    for c in containers.values():
        config = c.config()
        for field in ADDRESS_TARGETS.keys() & {f.name for f in dataclasses.fields(config)}:
            address = getattr(config, field)
            host, _, port = address.rpartition(":")
            svc = m.find("Service", host)
            assert svc is not None, f"k8s/{m.name} {c.name}: {field}={address}: no Service {host!r}"
            target = containers[ADDRESS_TARGETS[field]]
            assert svc in m.services_selecting(target), (c.name, field, address)
            (p,) = [p for p in svc["spec"]["ports"] if p["port"] == int(port)]
            assert target.port_number(p.get("targetPort", p["port"])) == listening_port(target)


def test_config_maps_only_carry_lookback_settings(m: Manifests) -> None:
    for c in m.lookback().values():
        for source in c.spec.get("envFrom", []):
            if "configMapRef" in source:
                data = data_of(m.get("ConfigMap", source["configMapRef"]["name"]))
                assert all(k.startswith(cfg.ENV_PREFIX) for k in data), data


@pytest.mark.parametrize("name", OVERLAYS)
def test_in_cluster_backends_name_a_service_and_its_port(name: str) -> None:
    """A Cassandra or Redis host without a domain is a Service of the overlay
    (dev); one with a domain is outside the cluster (prod)."""
    m = build(name)
    endpoints: list[tuple[str, int]] = []
    for service, c in m.lookback().items():
        config = c.config()
        if service == "touchpoint_store" and config.cassandra_hosts:
            hosts = [h.strip() for h in config.cassandra_hosts.split(",") if h.strip()]
            endpoints += [(h, config.cassandra_port) for h in hosts]
        if getattr(config, "redis_url", ""):
            url = urlsplit(config.redis_url)
            assert url.hostname, config.redis_url
            endpoints.append((url.hostname, url.port or 6379))
    assert endpoints, "the store and the queue should use Cassandra and Redis"
    for host, port in endpoints:
        if "." in host:
            continue
        svc = m.find("Service", host)
        assert svc is not None, f"k8s/{name}: no Service {host!r}"
        assert port in [p["port"] for p in svc["spec"]["ports"]], (host, port)
        assert [w for w in m.workloads() if svc_selects(svc, w)], f"{host}: selects no pods"


def svc_selects(svc: dict, workload: dict) -> bool:
    labels = workload["spec"]["template"]["metadata"].get("labels", {})
    selector = svc["spec"].get("selector") or {}
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def test_termination_grace_outlasts_the_servers_grace(m: Manifests) -> None:
    for c in m.lookback().values():
        grace = c.config().grace_period
        assert c.pod["terminationGracePeriodSeconds"] > grace, c.name


def test_every_container_is_locked_down(m: Manifests) -> None:
    for c in m.containers():
        assert c.security("runAsNonRoot") is True, c.name
        uid = c.security("runAsUser")
        assert isinstance(uid, int) and uid > 0, c.name
        assert c.security("allowPrivilegeEscalation") is False, c.name
        assert c.security("privileged") in (None, False), c.name
        assert "ALL" in c.security("capabilities")["drop"], c.name
        assert not c.security("capabilities").get("add"), c.name
        assert c.security("seccompProfile") == {"type": "RuntimeDefault"}, c.name
        kind_name = (c.workload["kind"], c.workload["metadata"]["name"])
        if kind_name not in WRITABLE_ROOT_ALLOWED:
            assert c.security("readOnlyRootFilesystem") is True, c.name
        assert "/tmp" in c.writable_mounts() or not c.is_lookback, c.name


def test_no_service_account_token_is_mounted(m: Manifests) -> None:
    for w in m.workloads():
        pod = w["spec"]["template"]["spec"]
        account = pod.get("serviceAccountName")
        if account is None:
            assert pod.get("automountServiceAccountToken") is False, w["metadata"]["name"]
            continue
        sa = m.get("ServiceAccount", account)
        assert sa.get("automountServiceAccountToken") is False, account
        assert pod.get("automountServiceAccountToken") in (None, False), account
    for c in m.lookback().values():
        assert c.pod.get("serviceAccountName") == c.workload["metadata"]["name"], c.name


_UNITS = {"m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def quantity(text: str | int) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(text)).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def test_every_container_has_requests_within_limits(m: Manifests) -> None:
    for c in m.containers():
        resources = c.spec["resources"]
        for resource in ("cpu", "memory"):
            request = quantity(resources["requests"][resource])
            limit = quantity(resources["limits"][resource])
            assert 0 < request <= limit, (c.name, resource)


def test_request_path_services_autoscale_on_cpu_with_a_disruption_budget(m: Manifests) -> None:
    containers = m.lookback()
    for service in AUTOSCALED:
        c = containers[service]
        name = c.workload["metadata"]["name"]
        # The autoscaler owns the replica count: `kubectl apply` must not reset it.
        assert "replicas" not in c.workload["spec"], name
        (hpa,) = [
            h
            for h in m.of_kind("HorizontalPodAutoscaler")
            if h["spec"]["scaleTargetRef"]["name"] == name
        ]
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu", name
        assert metric["resource"]["target"]["type"] == "Utilization", name
        assert "cpu" in c.spec["resources"]["requests"], name
        (pdb,) = [
            p
            for p in m.of_kind("PodDisruptionBudget")
            if all(
                c.pod_labels.get(k) == v for k, v in p["spec"]["selector"]["matchLabels"].items()
            )
        ]
        # maxUnavailable, not minAvailable: a single-replica dev pod can still be drained.
        assert pdb["spec"].get("maxUnavailable") == 1, name
    autoscaled = {h["spec"]["scaleTargetRef"]["name"] for h in m.of_kind("HorizontalPodAutoscaler")}
    assert autoscaled == {containers[s].workload["metadata"]["name"] for s in AUTOSCALED}


def test_signing_keys_come_from_a_secret(m: Manifests) -> None:
    c = m.lookback()["postback"]
    sources = {name: source for name, _, source in c.env_sources()}
    name = cfg.env_name("signing_secrets")
    assert sources[name].startswith("Secret "), sources[name]
    assert parse_map(c.env[name])
    for service, other in m.lookback().items():
        if service != "postback":
            assert name not in other.env, other.name


def _replicas(m: Manifests) -> dict[str, tuple[int, int]]:
    """(min, max) replicas of each Lookback service."""
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in m.of_kind("HorizontalPodAutoscaler")}
    out = {}
    for service, c in m.lookback().items():
        name = c.workload["metadata"]["name"]
        if name in hpas:
            out[service] = (hpas[name]["spec"]["minReplicas"], hpas[name]["spec"]["maxReplicas"])
        else:
            count = c.workload["spec"].get("replicas", 1)
            out[service] = (count, count)
    return out


def test_dev_runs_one_replica_of_everything() -> None:
    dev = build("overlays/dev")
    assert set(_replicas(dev).values()) == {(1, 1)}
    assert all(w["spec"].get("replicas", 1) == 1 for w in dev.workloads())


def test_prod_runs_more_replicas_than_the_base() -> None:
    base, prod = _replicas(build("base")), _replicas(build("overlays/prod"))
    for service in SERVICE_NAMES:
        assert prod[service][0] >= base[service][0], service
        assert prod[service][1] >= base[service][1], service
    for service in AUTOSCALED:
        assert prod[service][0] > base[service][0] and prod[service][1] > base[service][1]
    for service, (low, _) in prod.items():
        assert low >= 2, f"{service}: a single replica in production"
