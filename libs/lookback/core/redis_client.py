"""How Redis clients (the postback queue, the deciders' settings channel)
connect: a URL, and credentials kept apart from it.

``redis://host:6379/0`` is plain text, ``rediss://host:6380/0`` TLS,
verified against ``tls_ca`` (else the system's CAs) with the host name
checked. The password comes from its own setting (a Secret), so the URL can
sit in a ConfigMap; a password in the URL wins over it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from lookback.core.config import ConfigError


def connect_options(
    url: str, *, username: str = "", password: str = "", tls_ca: str = ""
) -> dict[str, Any]:
    """The keyword arguments to give ``redis.asyncio.from_url(url, ...)``;
    ConfigError for a combination that cannot work."""
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        # (The URL itself is not repeated: it may carry a password.)
        raise ConfigError("redis_url must start with redis://, rediss:// or unix://")
    options: dict[str, Any] = {}
    if username:
        options["username"] = username
    if password:
        options["password"] = password
    if tls_ca:
        if scheme != "rediss":
            raise ConfigError("redis_tls_ca is set but redis_url is not rediss:// (TLS)")
        options["ssl_ca_certs"] = tls_ca
    if scheme == "rediss":
        options["ssl_cert_reqs"] = "required"
        options["ssl_check_hostname"] = True
    return options
