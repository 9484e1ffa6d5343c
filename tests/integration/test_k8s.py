"""The Kubernetes manifests (k8s/), as kustomize builds the base and each
overlay: every port, probe, address and setting agrees with what the
services actually read and listen on (their config classes), and every pod
is locked down. Needs kustomize: scripts/k8s_check.sh builds the pinned one."""

from __future__ import annotations

import dataclasses
import posixpath
import re
from urllib.parse import urlsplit

import pytest
import yaml

from lookback.cli.main import SERVICE_NAMES, _specs
from lookback.core import config as cfg
from lookback.core.config import parse_map
from lookback.core.server import LIVENESS
from tests.integration.k8s_manifests import (
    IMAGE,
    K8S,
    Container,
    Manifests,
    Peer,
    build,
    data_of,
    kustomizations,
    selects,
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
    "reports_address": "postback",
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
        config = c.config()
        port = listening_port(c)
        # gRPC services: their port, and the plain-text health port the
        # probes use (the kubelet cannot present a client certificate, so
        # with mutual TLS on it could not probe the service's own port).
        health = int(config.health_port) if is_grpc(service) else 0
        if is_grpc(service):
            assert health and health != port, f"{c.name}: no health port of its own"
        assert [p["containerPort"] for p in c.spec["ports"]] == [
            port,
            *([health] if health else []),
        ]
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
                assert c.port_number(probe["grpc"]["port"]) == health, (c.name, kind)
                want = LIVENESS if kind == "livenessProbe" else ""
                assert probe["grpc"].get("service", "") == want, (c.name, kind)
            else:
                assert c.port_number(probe["httpGet"]["port"]) == port, (c.name, kind)
                # HTTPS exactly when the gateway has a certificate.
                scheme = "HTTPS" if config.tls_cert else "HTTP"
                assert probe["httpGet"].get("scheme", "HTTP") == scheme, (c.name, kind)
        if not is_grpc(service):
            assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz", c.name
            assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz", c.name
        (svc,) = m.services_selecting(c)
        assert svc["metadata"]["name"] == c.workload["metadata"]["name"], c.name
        if is_grpc(service):  # one address per pod for the clients' round_robin
            assert svc["spec"].get("clusterIP") == "None", c.name
        for p in svc["spec"]["ports"]:  # the Service offers the service, never the health port
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
    name = cfg.env_name("signing_secrets")
    for service in ("postback", "gateway"):  # postbacks; signed links
        c = m.lookback()[service]
        sources = {n: source for n, _, source in c.env_sources()}
        assert sources[name].startswith("Secret "), sources[name]
        assert parse_map(c.env[name])
    for service, other in m.lookback().items():
        if service not in ("postback", "gateway"):
            assert name not in other.env, other.name


def test_every_service_has_admin_keys_from_a_secret(m: Manifests) -> None:
    name = cfg.env_name("admin_keys")
    for service, c in m.lookback().items():
        sources = {n: source for n, _, source in c.env_sources()}
        assert sources.get(name, "").startswith("Secret "), (service, sources.get(name))
        assert len(c.env[name].split(",")[0]) >= 16


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


# --- network policies ----------------------------------------------------------

INGRESS_CONTROLLER = {"app.kubernetes.io/name": "ingress-nginx"}
INGESTION_CLIENT = {"lookback.io/ingestion-client": "true"}
POSTBACK_OPERATOR = {"lookback.io/postback-operator": "true"}
PUBLIC, METADATA, PRIVATE = "203.0.113.10", "169.254.169.254", "10.1.2.3"
REACHES_THE_INTERNET = ("postback", "srn_adapter")  # postbacks, SRN queries


def _calls(c: Container) -> set[str]:
    """The Lookback services a container's settings make it call."""
    config = c.config()
    return {target for field, target in ADDRESS_TARGETS.items() if getattr(config, field, "")}


def test_ingress_is_denied_by_default_and_every_pod_has_its_policy(m: Manifests) -> None:
    policies = m.of_kind("NetworkPolicy")
    assert [
        p["metadata"]["name"]
        for p in policies
        if p["spec"]["podSelector"] == {}
        and p["spec"]["policyTypes"] == ["Ingress"]
        and not p["spec"].get("ingress")
    ], "no default-deny ingress policy"
    for c in m.lookback().values():
        own = m.get("NetworkPolicy", c.workload["metadata"]["name"])
        assert np_selects(own, c), c.name
        assert set(own["spec"]["policyTypes"]) == {"Ingress", "Egress"}, c.name
    for w in m.workloads():  # the backends of the dev overlay too
        labels = w["spec"]["template"]["metadata"].get("labels", {})
        assert any(
            "Ingress" in p["spec"]["policyTypes"]
            and p["spec"]["podSelector"]
            and np_selects(p, labels)
            for p in policies
        ), w["metadata"]["name"]


def np_selects(policy: dict, target: Container | dict[str, str]) -> bool:
    labels = target.pod_labels if isinstance(target, Container) else target
    return selects(policy["spec"]["podSelector"], labels)


def test_each_service_is_reached_only_by_the_services_that_call_it(m: Manifests) -> None:
    """The matrix in docs/security.md, from what each service's settings
    make it call; no pod reaches a health port (probes come from the node)."""
    containers = m.lookback()
    assert _calls(containers["gateway"]) == {"decider", "touchpoint_store", "postback"}
    for caller, c in containers.items():
        calls = _calls(c)
        for callee, d in containers.items():
            if callee == caller:
                continue
            for sides in (("Ingress",), ("Egress",)):  # each end's policy on its own
                allowed = m.allows(c.peer(), d.peer(), listening_port(d), sides=sides)
                assert allowed == (callee in calls), f"k8s/{m.name}: {caller} -> {callee} {sides}"
            if is_grpc(callee):
                health = d.config().health_port
                assert not m.allows(c.peer(), d.peer(), health), (caller, callee, "health")


def test_callers_outside_the_suite(m: Manifests) -> None:
    containers = m.lookback()
    ns = m.namespace
    controller = Peer.pod("ingress-nginx", INGRESS_CONTROLLER)
    stranger = Peer.pod("elsewhere", {"app": "whatever"})
    neighbour = Peer.pod(ns, {"app": "whatever"})  # same namespace, not ours
    backend = Peer.pod("billing", INGESTION_CLIENT)  # an internal backend reporting events
    operator = Peer.pod(ns, POSTBACK_OPERATOR)
    allowed = {
        (controller, "gateway"),
        (backend, "ingestion"),
        (operator, "postback"),
    }
    for peer in (controller, stranger, neighbour, backend, operator):
        for service, d in containers.items():
            want = (peer, service) in allowed
            assert m.allows(peer, d.peer(), listening_port(d)) == want, (peer, service)
    # The controller's namespace and pods both count.
    assert not m.allows(Peer.pod("ingress-nginx", {}), containers["gateway"].peer(), 8080)
    assert not m.allows(Peer.pod(ns, INGRESS_CONTROLLER), containers["gateway"].peer(), 8080)


def test_every_lookback_pod_may_resolve_names_and_only_two_reach_the_internet(
    m: Manifests,
) -> None:
    dns = Peer.pod("kube-system", {"k8s-app": "kube-dns"})
    for service, c in m.lookback().items():
        for protocol in ("UDP", "TCP"):
            assert m.allows(c.peer(), dns, 53, protocol), (c.name, protocol)
        outside = m.allows(c.peer(), Peer.address(PUBLIC), 443)
        assert outside == (service in REACHES_THE_INTERNET), c.name
        assert m.allows(c.peer(), Peer.address("2001:db8::1"), 443) == outside, c.name
        for address in (METADATA, PRIVATE, "192.168.1.1", "100.64.0.1", "fd00::1"):
            assert not m.allows(c.peer(), Peer.address(address), 443), (c.name, address)


@pytest.mark.parametrize("name", OVERLAYS)
def test_backends_are_reached_by_their_clients_only(name: str) -> None:
    """Cassandra and Redis in the namespace (dev) are reached only by their
    clients; outside ones (prod) are allowed by address range and port."""
    m = build(name)
    clients: dict[tuple[str, int], set[str]] = {}
    for service, c in m.lookback().items():
        config = c.config()
        if service == "touchpoint_store" and config.cassandra_hosts:
            for host in config.cassandra_hosts.split(","):
                clients.setdefault((host.strip(), config.cassandra_port), set()).add(service)
        if getattr(config, "redis_url", ""):
            url = urlsplit(config.redis_url)
            clients.setdefault((url.hostname or "", url.port or 6379), set()).add(service)
    containers = m.lookback()
    for (host, port), users in clients.items():
        if "." not in host:
            svc = m.get("Service", host)
            (pod,) = [w for w in m.workloads() if svc_selects(svc, w)]
            target = Peer.pod(m.namespace, pod["spec"]["template"]["metadata"]["labels"])
            for service, c in containers.items():
                assert m.allows(c.peer(), target, port) == (service in users), (host, service)
            continue
        # Outside the cluster: the clients' egress names an address range on that port.
        for service in users:
            c = containers[service]
            ranges = [
                peer["ipBlock"]["cidr"]
                for p in m.of_kind("NetworkPolicy")
                if "Egress" in p["spec"]["policyTypes"] and np_selects(p, c)
                for rule in p["spec"].get("egress", [])
                if any(q.get("port") == port for q in rule.get("ports", []))
                for peer in rule.get("to", [])
                if "ipBlock" in peer
            ]
            assert ranges, f"k8s/{name}: {service} may not reach {host}:{port}"


# --- ingress, TLS --------------------------------------------------------------


def test_the_gateway_has_an_ingress_with_tls(m: Manifests) -> None:
    (ingress,) = m.of_kind("Ingress")
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"  # the controller the NetworkPolicy lets in
    tls_hosts = {h for t in spec["tls"] for h in t["hosts"]}
    assert all(t["secretName"] for t in spec["tls"])
    gateway = m.lookback()["gateway"]
    (svc,) = m.services_selecting(gateway)
    for rule in spec["rules"]:
        assert rule["host"] in tls_hosts, rule["host"]
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == svc["metadata"]["name"]
            assert backend["port"]["name"] in [p["name"] for p in svc["spec"]["ports"]]
    https = bool(gateway.config().tls_cert)
    annotations = ingress["metadata"].get("annotations", {})
    protocol = annotations.get("nginx.ingress.kubernetes.io/backend-protocol", "HTTP")
    assert protocol == ("HTTPS" if https else "HTTP")


def _certificates() -> dict[str, dict]:
    """The example cert-manager Certificates, by the Secret they fill."""
    docs = yaml.safe_load_all((K8S / "examples" / "cert-manager.yaml").read_text())
    return {d["spec"]["secretName"]: d for d in docs if d and d["kind"] == "Certificate"}


def test_base_and_dev_stay_plain_text() -> None:
    for name in ("base", "overlays/dev"):
        for c in build(name).lookback().values():
            config = c.config()
            assert not (config.tls_cert or config.tls_key or config.tls_ca), c.name


def test_prod_turns_mutual_tls_on_with_certificates_from_secrets() -> None:
    prod = build("overlays/prod")
    certificates = _certificates()
    for c in prod.lookback().values():
        config = c.config()
        name = c.workload["metadata"]["name"]
        secrets = set()
        for path in (config.tls_cert, config.tls_key, config.tls_ca):
            assert path, f"{c.name}: TLS is off"
            found = c.mount_of(path)
            assert found is not None, (c.name, path)
            mount, volume = found
            assert mount.get("readOnly") is True, (c.name, path)
            secrets.add(volume["secret"]["secretName"])
            assert posixpath.basename(path) in ("tls.crt", "tls.key", "ca.crt")
        assert secrets == {f"{name}-tls"}, c.name  # a certificate of its own
        # Issued (in the example) for the names it is called by, for both ends.
        cert = certificates[f"{name}-tls"]["spec"]
        assert {name, f"{name}.{prod.namespace}.svc"} <= set(cert["dnsNames"]), name
        assert {"server auth", "client auth"} <= set(cert["usages"]), name
    # The ingress controller verifies the gateway by a name its certificate has,
    # with a certificate of its own from the same CA.
    (ingress,) = prod.of_kind("Ingress")
    annotations = ingress["metadata"]["annotations"]
    gateway_names = certificates["gateway-tls"]["spec"]["dnsNames"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-ssl-name"] in gateway_names
    assert annotations["nginx.ingress.kubernetes.io/proxy-ssl-verify"] == "on"
    namespace, secret = annotations["nginx.ingress.kubernetes.io/proxy-ssl-secret"].split("/")
    assert namespace == prod.namespace and secret in certificates
    issuers = {
        c["spec"]["issuerRef"]["name"] for s, c in certificates.items() if s != "lookback-ca"
    }
    assert issuers == {"lookback-ca"}


def test_prod_backends_use_passwords_from_secrets_and_tls() -> None:
    prod = build("overlays/prod")
    containers = prod.lookback()
    checks = {
        "touchpoint_store": ("cassandra_password", "cassandra_tls_ca"),
        "decider": ("redis_password", "redis_tls_ca"),
        "postback": ("redis_password", "redis_tls_ca"),
    }
    for service, (password, ca) in checks.items():
        c = containers[service]
        config = c.config()
        sources = {name: source for name, _, source in c.env_sources()}
        assert sources[cfg.env_name(password)].startswith("Secret "), (c.name, password)
        assert getattr(config, password)
        path = getattr(config, ca)
        found = c.mount_of(path)
        assert found is not None and found[0].get("readOnly") is True, (c.name, path)
        if service != "touchpoint_store":
            assert urlsplit(config.redis_url).scheme == "rediss", c.name
        else:
            assert config.cassandra_username and config.cassandra_tls_check_hostname
    for service, c in containers.items():  # a password reaches only its user
        for password, _ in checks.values():
            if service not in checks or checks[service][0] != password:
                assert cfg.env_name(password) not in c.env, (c.name, password)
