"""The client's address: the TCP peer, X-Forwarded-For only through trusted
proxies (lookback.gateway.clientip)."""

from __future__ import annotations

import pytest

from lookback.gateway.clientip import client_ip

PEER = "10.0.0.5"


@pytest.mark.parametrize(
    ("headers", "trusted", "expected"),
    [
        ([], 0, PEER),
        (["203.0.113.7"], 0, PEER),  # the default: the header is ignored
        ([], 1, PEER),
        (["203.0.113.7"], 1, "203.0.113.7"),
        (["198.51.100.9, 203.0.113.7"], 1, "203.0.113.7"),  # a forged left end
        (["198.51.100.9, 203.0.113.7"], 2, "198.51.100.9"),
        (["198.51.100.9, 203.0.113.7, 10.1.1.1"], 2, "203.0.113.7"),
        (["203.0.113.7"], 3, "203.0.113.7"),  # shorter than N: its left-most
        (["198.51.100.9, 203.0.113.7"], 5, "198.51.100.9"),
        (["198.51.100.9", "203.0.113.7"], 1, "203.0.113.7"),  # headers joined in order
        (["198.51.100.9,,  203.0.113.7 , "], 1, "203.0.113.7"),
        (["203.0.113.7:5000"], 1, "203.0.113.7"),
        (["[2001:db8::1]:5000"], 1, "2001:db8::1"),
        (["2001:DB8::1"], 1, "2001:db8::1"),
        (["unknown"], 1, PEER),
        (["203.0.113.7, evil.example"], 1, PEER),
        ([" , "], 1, PEER),
    ],
)
def test_client_ip(headers: list[str], trusted: int, expected: str) -> None:
    assert client_ip(PEER, headers, trusted) == expected
