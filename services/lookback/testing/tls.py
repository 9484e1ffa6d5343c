"""Certificates for tests: a throw-away CA and certificates it signs, made
with the ``openssl`` command (no Python crypto package needed).

    pki = TestPki.create(tmp_path)          # a CA
    server = pki.issue("decider")           # names localhost and 127.0.0.1 too
    config = StoreConfig(**server.server_settings(pki))   # tls_cert/tls_key/tls_ca
    client = ClientTls(pki.ca_cert, *server.pair)

Keys are ECDSA P-256 (quick to make), certificates valid for a day and
usable both as server and as client certificates, like the ones the prod
overlay's cert-manager example issues.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lookback.core.tls import ClientTls

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
"""Names every certificate carries besides its own (tests call 127.0.0.1)."""


def _openssl(*args: str, cwd: Path) -> None:
    if shutil.which("openssl") is None:
        raise RuntimeError("the openssl command is needed to make test certificates")
    done = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{done.stderr}")


def _san(name: str) -> str:
    kind = "IP" if name.replace(".", "").isdigit() or ":" in name else "DNS"
    return f"{kind}:{name}"


@dataclass(frozen=True)
class Identity:
    """A certificate and its key (PEM files)."""

    cert: str
    key: str

    @property
    def pair(self) -> tuple[str, str]:
        return self.cert, self.key

    def server_settings(self, pki: TestPki | None = None) -> dict[str, str]:
        """``tls_cert``/``tls_key`` (and ``tls_ca``: mutual TLS, when given
        the CA) for a service's config."""
        settings = {"tls_cert": self.cert, "tls_key": self.key}
        if pki is not None:
            settings["tls_ca"] = pki.ca_cert
        return settings

    def env(self, pki: TestPki | None = None) -> dict[str, str]:
        """The same as ``LOOKBACK_TLS_*`` variables (``lookback up``, ``lookback serve``)."""
        return {f"LOOKBACK_{k.upper()}": v for k, v in self.server_settings(pki).items()}

    def client(self, pki: TestPki) -> ClientTls:
        """A client presenting this certificate and trusting ``pki``'s CA."""
        return ClientTls(pki.ca_cert, self.cert, self.key)


@dataclass(frozen=True)
class TestPki:
    """A CA in ``directory`` (``ca.crt``, ``ca.key``)."""

    __test__ = False  # not a pytest test class

    directory: Path
    name: str = "Lookback test CA"

    @property
    def ca_cert(self) -> str:
        return str(self.directory / "ca.crt")

    @property
    def ca_key(self) -> str:
        return str(self.directory / "ca.key")

    @classmethod
    def create(cls, directory: Path, name: str = "Lookback test CA") -> TestPki:
        directory.mkdir(parents=True, exist_ok=True)
        pki = cls(directory, name)
        _openssl(
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={name}",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            pki.ca_key,
            "-out",
            pki.ca_cert,
            cwd=directory,
        )
        return pki

    def issue(self, name: str, *names: str, loopback: bool = True) -> Identity:
        """A certificate for ``name`` (its common name and first DNS name),
        ``names`` and, with ``loopback``, localhost and the loopback addresses."""
        sans = list(dict.fromkeys([name, *names, *(LOOPBACK_NAMES if loopback else ())]))
        base = self.directory / name
        ext = base.with_suffix(".ext")
        ext.write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth,clientAuth\n"
            f"subjectAltName={','.join(_san(n) for n in sans)}\n"
        )
        key, csr, cert = (str(base.with_suffix(s)) for s in (".key", ".csr", ".crt"))
        _openssl(
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            key,
            "-out",
            csr,
            cwd=self.directory,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            self.ca_cert,
            "-CAkey",
            self.ca_key,
            "-set_serial",
            str(secrets.randbits(63)),
            "-days",
            "1",
            "-extfile",
            str(ext),
            "-out",
            cert,
            cwd=self.directory,
        )
        return Identity(cert, key)
