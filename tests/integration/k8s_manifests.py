"""Reading the deployment files for tests: the Dockerfile, and the manifests
that ``kustomize build`` makes of ``k8s/base`` and each overlay.

The settings a container gets are resolved the way the kubelet does
(``envFrom`` in order, then ``env``) and read with the service's own config
class (:func:`lookback.core.config.load`), so the tests check what the
service would actually do, not a second copy of its naming rules.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import ipaddress
import json
import os
import posixpath
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from lookback.cli.main import _specs
from lookback.core import config as cfg
from tests import REPO

K8S = REPO / "k8s"
DOCKERFILE = REPO / "Dockerfile"
IMAGE = "ghcr.io/lookback/lookback"
# Where scripts/k8s_check.sh builds and caches the pinned kustomize.
KUSTOMIZE_CACHE = Path.home() / ".cache" / "lookback" / "bin" / "kustomize"

Obj = dict[str, Any]


# --- kustomize -------------------------------------------------------------


def kustomizations() -> list[str]:
    """``base`` and every overlay, as paths under k8s/."""
    overlays = sorted(
        f"overlays/{p.name}"
        for p in (K8S / "overlays").iterdir()
        if (p / "kustomization.yaml").is_file()
    )
    return ["base", *overlays]


def kustomize_binary() -> str | None:
    """$KUSTOMIZE, else the cached pinned build, else one on PATH."""
    for candidate in (os.environ.get("KUSTOMIZE"), str(KUSTOMIZE_CACHE), shutil.which("kustomize")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


@functools.cache
def build(name: str) -> Manifests:
    kustomize = kustomize_binary()
    if kustomize is None:
        raise RuntimeError(
            "no kustomize binary: run scripts/k8s_check.sh, which builds the pinned "
            f"version into {KUSTOMIZE_CACHE.parent} (or set KUSTOMIZE)"
        )
    done = subprocess.run(
        [kustomize, "build", str(K8S / name)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"kustomize build k8s/{name} failed:\n{done.stderr}")
    return Manifests(name, [o for o in yaml.safe_load_all(done.stdout) if o])


# --- the Dockerfile ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Dockerfile:
    """The instructions of the Dockerfile's final stage."""

    instructions: list[tuple[str, str]]

    @classmethod
    def read(cls, path: Path = DOCKERFILE) -> Dockerfile:
        logical: list[str] = []
        pending = ""
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            logical.append(pending + line)
            pending = ""
        assert not pending, "the Dockerfile ends in a line continuation"
        stage: list[tuple[str, str]] = []
        for line in logical:
            keyword, _, rest = line.partition(" ")
            if keyword.upper() == "FROM":
                stage = []
            stage.append((keyword.upper(), rest.strip()))
        return cls(stage)

    def values(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]

    @property
    def base_image(self) -> str:
        return self.values("FROM")[0].split()[0]

    @property
    def entrypoint(self) -> list[str]:
        (value,) = self.values("ENTRYPOINT")
        parsed = json.loads(value)  # the exec form: no shell in between
        assert isinstance(parsed, list), value
        return [str(p) for p in parsed]

    @property
    def user(self) -> str:
        return self.values("USER")[-1]

    @property
    def workdir(self) -> str:
        workdir = "/"
        for value in self.values("WORKDIR"):
            workdir = posixpath.join(workdir, value)
        return workdir

    @property
    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for value in self.values("ENV"):
            words = shlex.split(value)
            if "=" not in words[0]:  # the legacy ``ENV KEY value`` form
                env[words[0]] = " ".join(words[1:])
                continue
            for word in words:
                key, _, val = word.partition("=")
                env[key] = val
        return env


# --- the manifests -----------------------------------------------------------


@dataclasses.dataclass
class Container:
    """One container of a workload, with the settings it receives."""

    manifests: Manifests
    workload: Obj
    spec: Obj

    @property
    def name(self) -> str:
        return f"{self.workload['kind']}/{self.workload['metadata']['name']}/{self.spec['name']}"

    @property
    def pod(self) -> Obj:
        return self.workload["spec"]["template"]["spec"]

    @property
    def pod_labels(self) -> dict[str, str]:
        return self.workload["spec"]["template"]["metadata"].get("labels", {})

    @property
    def is_lookback(self) -> bool:
        return str(self.spec["image"]).split(":")[0] == IMAGE

    @property
    def service(self) -> str:
        """The Lookback service: the first argument after the entrypoint."""
        return str(self.spec.get("args", [""])[0])

    @property
    def argv(self) -> list[str]:
        return [str(a) for a in self.spec.get("args", [])[1:]]

    @property
    def config_class(self) -> type:
        return _specs()[self.service].config

    def env_sources(self) -> Iterator[tuple[str, str, str]]:
        """(name, value, where from) in the order the kubelet applies them."""
        for source in self.spec.get("envFrom", []):
            prefix = source.get("prefix", "")
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if key in source:
                    obj = self.manifests.get(kind, source[key]["name"])
                    for name, value in data_of(obj).items():
                        yield prefix + name, value, f"{kind} {obj['metadata']['name']}"
        for entry in self.spec.get("env", []):
            if "value" in entry:
                yield entry["name"], str(entry["value"]), "env"
                continue
            ref = entry.get("valueFrom", {})
            for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                if key in ref:
                    obj = self.manifests.get(kind, ref[key]["name"])
                    value = data_of(obj)[ref[key]["key"]]
                    yield entry["name"], value, f"{kind} {obj['metadata']['name']}"
                    break
            else:
                raise AssertionError(f"{self.name}: cannot resolve env {entry}")

    @property
    def env(self) -> dict[str, str]:
        return {name: value for name, value, _ in self.env_sources()}

    def config(self) -> Any:
        """The service's config as it would load it in this container."""
        return cfg.load(self.config_class, self.argv, env=self.env)

    def port_number(self, port: int | str) -> int:
        """A port given by number or by the name of one of the container's ports."""
        if isinstance(port, int):
            return port
        for p in self.spec.get("ports", []):
            if p.get("name") == port:
                return int(p["containerPort"])
        raise AssertionError(f"{self.name}: no port named {port!r}")

    def security(self, key: str) -> Any:
        """A security setting as it takes effect: the container's, else the pod's."""
        own = self.spec.get("securityContext", {})
        return own[key] if key in own else self.pod.get("securityContext", {}).get(key)

    def mount_of(self, path: str) -> tuple[Obj, Obj] | None:
        """The volume mount ``path`` is under (the deepest) and its volume."""
        volumes = {v["name"]: v for v in self.pod.get("volumes", [])}
        mounts = [m for m in self.spec.get("volumeMounts", []) if is_under(path, m["mountPath"])]
        if not mounts:
            return None
        mount = max(mounts, key=lambda m: len(m["mountPath"]))
        return mount, volumes.get(mount["name"], {})

    def peer(self) -> Peer:
        """This container's pod as a NetworkPolicy peer."""
        return Peer.pod(self.manifests.namespace, self.pod_labels)

    def writable_mounts(self) -> list[str]:
        """Mount paths of writable volumes (emptyDir, claims)."""
        volumes = {v["name"]: v for v in self.pod.get("volumes", [])}
        claims = {
            c["metadata"]["name"] for c in self.workload["spec"].get("volumeClaimTemplates", [])
        }
        out = []
        for mount in self.spec.get("volumeMounts", []):
            if mount.get("readOnly"):
                continue
            volume = volumes.get(mount["name"], {})
            if "emptyDir" in volume or "persistentVolumeClaim" in volume or mount["name"] in claims:
                out.append(mount["mountPath"])
        return out


# --- NetworkPolicies ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Peer:
    """One end of a connection: a pod (its namespace, that namespace's
    labels, its labels) or an address outside the cluster."""

    namespace: str = ""
    namespace_labels: tuple[tuple[str, str], ...] = ()
    pod_labels: tuple[tuple[str, str], ...] = ()
    ip: str = ""

    @classmethod
    def pod(cls, namespace: str, labels: dict[str, str], **ns_labels: str) -> Peer:
        ns = {"kubernetes.io/metadata.name": namespace, **ns_labels}
        return cls(namespace, tuple(sorted(ns.items())), tuple(sorted(labels.items())))

    @classmethod
    def address(cls, ip: str) -> Peer:
        return cls(ip=ip)

    @property
    def is_pod(self) -> bool:
        return not self.ip

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.pod_labels)


def policy_types(policy: Obj) -> list[str]:
    spec = policy["spec"]
    return list(spec.get("policyTypes") or ["Ingress", *(["Egress"] if "egress" in spec else [])])


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """A label selector (``matchLabels``, ``matchExpressions``) against labels."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def peer_matches(rule: Obj, peer: Peer, namespace: str) -> bool:
    if "ipBlock" in rule:
        if peer.is_pod:
            return False  # pod addresses are not modelled: rules name pods by label
        ip = ipaddress.ip_address(peer.ip)
        block = rule["ipBlock"]
        inside = ip in ipaddress.ip_network(block["cidr"])
        return inside and not any(
            ip in ipaddress.ip_network(e) for e in block.get("except", []) if _same_family(ip, e)
        )
    if not peer.is_pod:
        return False
    if "namespaceSelector" in rule:
        if not selects(rule["namespaceSelector"], dict(peer.namespace_labels)):
            return False
    elif peer.namespace != namespace:
        return False
    return "podSelector" not in rule or selects(rule["podSelector"], peer.labels)


def _same_family(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, cidr: str) -> bool:
    return ipaddress.ip_network(cidr).version == ip.version


def port_matches(ports: list[Obj] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        if "port" not in p:
            return True
        assert isinstance(p["port"], int), f"named port {p['port']!r}: use numbers"
        if p["port"] <= port <= p.get("endPort", p["port"]):
            return True
    return False


def data_of(obj: Obj) -> dict[str, str]:
    """A ConfigMap's or Secret's data as text."""
    data = {k: str(v) for k, v in (obj.get("data") or {}).items()}
    if obj["kind"] == "Secret":
        data = {k: base64.b64decode(v).decode() for k, v in data.items()}
        data.update({k: str(v) for k, v in (obj.get("stringData") or {}).items()})
    return data


def is_under(path: str, directory: str) -> bool:
    path, directory = posixpath.normpath(path), posixpath.normpath(directory)
    return path == directory or path.startswith(directory.rstrip("/") + "/")


@dataclasses.dataclass
class Manifests:
    """The objects one kustomization builds."""

    name: str
    objects: list[Obj]

    def of_kind(self, kind: str) -> list[Obj]:
        return [o for o in self.objects if o["kind"] == kind]

    def find(self, kind: str, name: str) -> Obj | None:
        for o in self.of_kind(kind):
            if o["metadata"]["name"] == name:
                return o
        return None

    def get(self, kind: str, name: str) -> Obj:
        obj = self.find(kind, name)
        assert obj is not None, f"k8s/{self.name}: no {kind} named {name!r}"
        return obj

    def workloads(self) -> list[Obj]:
        return [o for o in self.objects if o["kind"] in ("Deployment", "StatefulSet")]

    def containers(self) -> list[Container]:
        return [
            Container(self, w, c)
            for w in self.workloads()
            for c in [
                *w["spec"]["template"]["spec"].get("initContainers", []),
                *w["spec"]["template"]["spec"]["containers"],
            ]
        ]

    def lookback(self) -> dict[str, Container]:
        """The Lookback container of each service, by service name."""
        out: dict[str, Container] = {}
        for c in self.containers():
            if c.is_lookback:
                assert c.service not in out, f"k8s/{self.name}: two containers run {c.service}"
                out[c.service] = c
        return out

    @property
    def namespace(self) -> str:
        """The namespace the objects go to (``""``: whichever ``kubectl`` uses)."""
        names = {
            o["metadata"].get("namespace", "") for o in self.objects if o["kind"] != "Namespace"
        }
        assert len(names) == 1, f"k8s/{self.name}: objects in several namespaces: {names}"
        return names.pop()

    def allows(
        self,
        source: Peer,
        target: Peer,
        port: int,
        protocol: str = "TCP",
        sides: tuple[str, ...] = ("Ingress", "Egress"),
    ) -> bool:
        """Whether the NetworkPolicies let ``source`` open ``port`` on
        ``target``: the target's ingress policies (if it is a pod here) and
        the source's egress policies (if it is a pod here) must both allow it
        (``sides`` picks one of them, to check each policy on its own)."""
        return (
            "Ingress" not in sides or self._side("Ingress", target, source, port, protocol)
        ) and ("Egress" not in sides or self._side("Egress", source, target, port, protocol))

    def _side(self, kind: str, pod: Peer, other: Peer, port: int, protocol: str) -> bool:
        if not pod.is_pod or pod.namespace != self.namespace:
            return True  # not ours to police
        policies = [
            p
            for p in self.of_kind("NetworkPolicy")
            if kind in policy_types(p) and selects(p["spec"]["podSelector"], pod.labels)
        ]
        if not policies:
            return True
        key, peers_key = ("ingress", "from") if kind == "Ingress" else ("egress", "to")
        for policy in policies:
            for rule in policy["spec"].get(key, []):
                peers = rule.get(peers_key)
                if peers is not None and not any(
                    peer_matches(r, other, self.namespace) for r in peers
                ):
                    continue
                if port_matches(rule.get("ports"), port, protocol):
                    return True
        return False

    def services_selecting(self, container: Container) -> list[Obj]:
        """The Services whose selector picks the container's pods."""
        labels = container.pod_labels
        return [
            s
            for s in self.of_kind("Service")
            if s["spec"].get("selector")
            and all(labels.get(k) == v for k, v in s["spec"]["selector"].items())
        ]


# --- what a service writes ---------------------------------------------------

# Every config field naming a file a service writes; written_paths knows when
# each is used (tests fail when a new one appears, so that it gets a volume).
PATH_FIELDS = {("touchpoint_store", "sqlite_path"), ("postback", "queue_path")}


def written_paths(service: str, config: Any) -> list[str]:
    """The files ``service`` writes as configured: the embedded SQLite
    files, when the service's own factory picks the SQLite backend (it does
    when no Cassandra, or no Redis, is configured). Nothing is opened here."""
    if service == "touchpoint_store":
        from lookback.touchpoint_store.component import make_backend
        from lookback.touchpoint_store.sqlite import SqliteBackend

        return [config.sqlite_path] if isinstance(make_backend(config), SqliteBackend) else []
    if service == "postback":
        from lookback.postback.component import make_queue
        from lookback.postback.queue import SqliteQueue

        return [config.queue_path] if isinstance(make_queue(config), SqliteQueue) else []
    return []
