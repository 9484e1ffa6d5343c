"""Backend credentials are built from the config: Cassandra's auth provider
and TLS context, Redis' password and TLS options; and no password shows in
a config's or a settings object's repr (what a log line would print)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from cassandra.auth import PlainTextAuthProvider

from lookback.core.config import ConfigError, load
from lookback.core.redis_client import connect_options
from lookback.decider.config import DeciderConfig
from lookback.postback.component import make_queue
from lookback.postback.config import PostbackConfig
from lookback.postback.redis_queue import RedisQueue
from lookback.testing.tls import TestPki
from lookback.touchpoint_store.cassandra import CassandraBackend, auth_provider, ssl_context
from lookback.touchpoint_store.component import make_backend
from lookback.touchpoint_store.config import StoreConfig

PASSWORD = "hunter2-not-in-logs"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> str:
    return TestPki.create(tmp_path_factory.mktemp("ca")).ca_cert


def _cassandra(**settings: object) -> CassandraBackend:
    backend = make_backend(StoreConfig(cassandra_hosts="db1,db2", **settings))  # type: ignore[arg-type]
    assert isinstance(backend, CassandraBackend)
    return backend


def test_cassandra_without_credentials_is_plain_and_anonymous() -> None:
    s = _cassandra().settings
    assert auth_provider(s) is None
    assert ssl_context(s) is None


def test_cassandra_user_and_password_make_a_plain_text_auth_provider() -> None:
    config = load(
        StoreConfig,
        env={
            "LOOKBACK_CASSANDRA_HOSTS": "db1",
            "LOOKBACK_CASSANDRA_USERNAME": "lookback",
            "LOOKBACK_CASSANDRA_PASSWORD": PASSWORD,
        },
    )
    backend = make_backend(config)
    assert isinstance(backend, CassandraBackend)
    provider = auth_provider(backend.settings)
    assert isinstance(provider, PlainTextAuthProvider)
    assert (provider.username, provider.password) == ("lookback", PASSWORD)
    assert PASSWORD not in repr(config) and PASSWORD not in repr(backend.settings)


def test_cassandra_tls_verifies_against_the_ca(ca: str) -> None:
    context = ssl_context(_cassandra(cassandra_tls_ca=ca).settings)  # a CA turns TLS on
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "Lookback test CA"),),)
    ]
    backend = _cassandra(cassandra_tls=True, cassandra_tls_check_hostname=False)
    relaxed = ssl_context(backend.settings)
    assert relaxed is not None  # the system's CAs, the chain still verified
    assert relaxed.verify_mode == ssl.CERT_REQUIRED and not relaxed.check_hostname


def test_redis_password_and_tls_options(ca: str) -> None:
    assert connect_options("redis://r:6379/0") == {}
    options = connect_options(
        "rediss://r:6380/0", username="lookback", password=PASSWORD, tls_ca=ca
    )
    assert options == {
        "username": "lookback",
        "password": PASSWORD,
        "ssl_ca_certs": ca,
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
    }
    # What redis-py makes of them: a TLS connection, verified, with the password.
    pool = aioredis.from_url("rediss://r:6380/0", **options).connection_pool
    assert pool.connection_class.__name__ == "SSLConnection"
    assert pool.connection_kwargs["password"] == PASSWORD
    assert pool.connection_kwargs["ssl_ca_certs"] == ca
    with pytest.raises(ConfigError, match="rediss"):
        connect_options("redis://r:6379/0", tls_ca=ca)  # a CA without TLS: a mistake
    with pytest.raises(ConfigError) as raised:
        connect_options(f"http://user:{PASSWORD}@r")
    assert PASSWORD not in str(raised.value)


def test_the_queue_and_the_decider_take_redis_credentials_from_their_config(ca: str) -> None:
    env = {
        "LOOKBACK_REDIS_URL": "rediss://redis.example.internal:6380/0",
        "LOOKBACK_REDIS_PASSWORD": PASSWORD,
        "LOOKBACK_REDIS_TLS_CA": ca,
    }
    postback = load(PostbackConfig, env=env)
    queue = make_queue(postback)
    assert isinstance(queue, RedisQueue)
    assert queue._options["password"] == PASSWORD and queue._options["ssl_ca_certs"] == ca
    decider = load(DeciderConfig, env=env)
    assert (decider.redis_password, decider.redis_tls_ca) == (PASSWORD, ca)
    for config in (postback, decider):
        assert PASSWORD not in repr(config)


def test_a_half_set_tls_config_names_the_missing_file(tmp_path: Path) -> None:
    from lookback.core.tls import ClientTls, check

    with pytest.raises(ConfigError, match="tls_cert is set but tls_key is not"):
        check(StoreConfig(tls_cert="c.pem"))
    with pytest.raises(ConfigError, match="cannot read"):
        ClientTls(ca=str(tmp_path / "missing.pem"))
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="not PEM"):
        ClientTls(ca=str(tmp_path / "junk.pem"))
