"""One adapter per self-reporting network, behind a common interface.

Every network here speaks the same small JSON API (the one the local fake in
:mod:`lookback.testing.srn` plays), so one HTTP adapter class serves
them all; a network with its own API gets a class of its own with the same
``query`` method.

    GET {base}/v1/claims?network=N&app_id=A&installed_at=ISO&gaid=...&idfa=...
    200 {"claims": [{"touch_type": "click", "campaign": "c", "engaged_at": ISO,
                     "click_id": "x"}]}
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import aiohttp
import yarl

from lookback.api.srn.v1 import srn_adapter_service_pb2 as pb
from lookback.api.types.v1 import device_pb2, touch_pb2
from lookback.core import outbound, redact
from lookback.core.convert import micros_to_ts
from lookback.domain.model import DEVICE_ID_TYPES


class SrnError(Exception):
    """The network did not give a usable answer."""


ADVERTISING_IDS = ("gaid", "idfa", "oaid", "fire_id")
"""What a self-reporting network is sent unless configured otherwise: the
resettable advertising ids they match by; never hardware or vendor ids."""


def identifiers_for(network: str, configured: dict[str, str]) -> tuple[str, ...]:
    """The identifier types ``network`` is sent (``srn_identifiers``)."""
    named = configured.get(network, configured.get("*", ""))
    if not named:
        return ADVERTISING_IDS
    wanted = {t.strip() for t in named.split("+") if t.strip()}
    unknown = wanted - set(DEVICE_ID_TYPES)
    if unknown:
        raise ValueError(f"srn_identifiers for {network!r}: unknown {sorted(unknown)}")
    return tuple(t for t in DEVICE_ID_TYPES if t in wanted)


@dataclass(frozen=True)
class SrnQuery:
    """Did this network engage this device before this install?"""

    app_id: str
    device: device_pb2.DeviceIdentifiers
    installed_at: datetime


class SrnAdapter(Protocol):
    network: str

    async def query(self, q: SrnQuery, timeout: float) -> list[pb.SrnClaim]:
        """The network's claims; raises :class:`SrnError` without a usable answer."""
        ...


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


_TOUCH_TYPES = {"click": touch_pb2.TOUCH_TYPE_CLICK, "impression": touch_pb2.TOUCH_TYPE_IMPRESSION}


@dataclass
class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; half-opens after ``cooldown`` s."""

    threshold: int = 5
    cooldown: float = 5.0
    failures: int = 0
    opened_at: float = 0.0

    def allow(self) -> bool:
        if self.failures < self.threshold:
            return True
        return time.monotonic() - self.opened_at >= self.cooldown

    def record(self, ok: bool) -> None:
        if ok:
            self.failures = 0
            return
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = time.monotonic()


class HttpSrnAdapter:
    """A network reached over HTTP at ``base_url``, through ``session``
    (:func:`lookback.core.outbound.client_session`: destinations that are
    not allowed are refused after resolution) and ``policy`` (IP literals
    are checked before sending). No redirects are followed and an answer is
    read up to :data:`~lookback.core.outbound.BODY_LIMIT`: a larger one is
    that network failing."""

    def __init__(
        self,
        network: str,
        base_url: str,
        session: aiohttp.ClientSession,
        policy: outbound.OutboundPolicy,
        identifiers: tuple[str, ...] = ADVERTISING_IDS,
    ) -> None:
        self.network = network
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.policy = policy
        self.identifiers = identifiers
        """The identifier types this network is sent (the others never)."""

    async def query(self, q: SrnQuery, timeout: float) -> list[pb.SrnClaim]:
        params = {"network": self.network, "app_id": q.app_id, "installed_at": iso(q.installed_at)}
        params.update({t: getattr(q.device, t) for t in self.identifiers if getattr(q.device, t)})
        try:
            url = yarl.URL(f"{self.base_url}/v1/claims").with_query(params)
            self.policy.check_target(url)
            async with self.session.get(
                url,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as response:
                if response.status != 200:
                    raise SrnError(f"{self.network}: HTTP {response.status}")
                body = json.loads(await outbound.read_bounded(response))
        except outbound.DestinationNotAllowed as exc:
            raise SrnError(f"{self.network}: {outbound.REASON}: {redact.text(str(exc))}") from exc
        except outbound.BodyTooLarge as exc:
            raise SrnError(f"{self.network}: {exc}") from exc
        except (aiohttp.ClientError, ValueError, RecursionError) as exc:
            # The client's message may name the URL, whose query holds the
            # device's identifiers: it is logged, so only its redacted form.
            raise SrnError(f"{self.network}: {redact.text(str(exc))}") from exc
        if not isinstance(body, dict):
            raise SrnError(f"{self.network}: malformed answer: not a JSON object")
        claims = []
        try:
            for item in body.get("claims", []):
                claims.append(
                    pb.SrnClaim(
                        media_source=self.network,
                        touch_type=_TOUCH_TYPES[item.get("touch_type", "click")],
                        campaign=str(item.get("campaign", "")),
                        engaged_at=micros_to_ts(
                            int(parse_iso(item["engaged_at"]).timestamp() * 1e6)
                        ),
                        click_id=str(item.get("click_id", "")),
                    )
                )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            # Which claim and what kind of fault, never the answer's values:
            # a network may echo the device's identifiers in any field.
            raise SrnError(
                f"{self.network}: malformed answer: claims[{len(claims)}]: {type(exc).__name__}"
            ) from None
        return claims
