"""Where ``GET /l/{code}`` sends a person (LINKS.md; docs/links.md), the
links cache, and the ``.well-known`` files. Pure functions over the link
and its app's settings, but for the caches.

- Android user agents go to the app's Play page, its ``referrer`` the
  URL-encoded ``click_id=<id>&utm_source=<media source>&utm_campaign=<c>``:
  the Play install referrer hands the click id back at first launch, and
  the install is attributed to the click deterministically.
- iOS user agents (iPhone, iPad, iPod) go to the App Store page.
- Everyone else, crawlers and disabled links go to the web fallback (the
  link's, else the app's ``links.web_fallback_url``, else the app's own
  store page when it has one).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from urllib.parse import urlencode

from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.api.types.v1 import app_pb2, link_pb2
from lookback.core.errors import InvalidArgument, NotFound
from lookback.decider.cache import LruCache, SingleFlight

ANDROID, IOS, WEB = "android", "ios", "web"
_IOS_MARKERS = ("iphone", "ipad", "ipod")
PLAY = "https://play.google.com/store/apps/details"
APP_STORE = "https://apps.apple.com/app/id"


def platform_of(user_agent: str) -> str:
    """``android``, ``ios`` or ``web``, from the user agent."""
    lowered = user_agent.lower()
    if "android" in lowered:
        return ANDROID
    if any(m in lowered for m in _IOS_MARKERS):
        return IOS
    return WEB


def android_package(app: app_pb2.App) -> str:
    s = app.settings.links
    if s.android_package:
        return s.android_package
    return app.app_id if app.platform == app_pb2.PLATFORM_ANDROID else ""


def app_store_id(app: app_pb2.App) -> str:
    """The App Store id's digits, or empty."""
    raw = app.settings.links.ios_app_store_id
    if not raw and app.platform == app_pb2.PLATFORM_IOS:
        raw = app.app_id
    digits = raw[2:] if raw.startswith("id") else raw
    return digits if digits.isdigit() else ""


def play_url(package: str, click_id: str, media_source: str, campaign: str) -> str:
    referrer = urlencode(
        {"click_id": click_id, "utm_source": media_source, "utm_campaign": campaign}
    )
    return f"{PLAY}?{urlencode({'id': package, 'referrer': referrer})}"


def fallback(link: link_pb2.Link, app: app_pb2.App) -> str:
    """The web fallback: the link's, the app's, else its own store page."""
    if link.web_fallback_url:
        return link.web_fallback_url
    if app.settings.links.web_fallback_url:
        return app.settings.links.web_fallback_url
    if app.platform == app_pb2.PLATFORM_IOS and app_store_id(app):
        return APP_STORE + app_store_id(app)
    if package := android_package(app):
        return f"{PLAY}?{urlencode({'id': package})}"
    if app_store_id(app):
        return APP_STORE + app_store_id(app)
    return ""


def destination(link: link_pb2.Link, app: app_pb2.App, platform: str, click_id: str) -> str:
    """Where a recorded click goes (empty: nowhere configured)."""
    if platform == ANDROID and (package := android_package(app)):
        return play_url(package, click_id, link.media_source, link.campaign)
    if platform == IOS and (store_id := app_store_id(app)):
        return APP_STORE + store_id
    return fallback(link, app)


class LinkDirectory:
    """Links by code, read from the store and cached for ``ttl`` seconds
    (misses too): following a link costs no store read while it is cached,
    and a change (a disabled link) shows within ``ttl``."""

    def __init__(
        self,
        store: store_grpc.TouchpointStoreServiceStub | None,
        ttl: float = 5.0,
        size: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.cache: LruCache[str, tuple[link_pb2.Link | None]] = LruCache(size, ttl, clock)
        self._flight: SingleFlight[link_pb2.Link | None] = SingleFlight()

    async def get(self, code: str) -> link_pb2.Link | None:
        cached = self.cache.get(code)
        if cached is not None:
            return cached[0]
        link, _ = await self._flight.run(code, lambda: self._read(code))
        return link

    async def _read(self, code: str) -> link_pb2.Link | None:
        assert self.store is not None, "a link directory without a store"
        try:
            link: link_pb2.Link | None = (
                await self.store.GetLink(store_pb.GetLinkRequest(code=code))
            ).link
        except (NotFound, InvalidArgument):
            link = None
        self.cache.put(code, (link,))
        return link


def apple_app_site_association(apps: Iterable[app_pb2.App]) -> bytes:
    """The apple-app-site-association file: every app with a team and bundle
    id, its links' paths (``/l/*``) opening the app (Universal Links)."""
    details = [
        {
            "appIDs": [f"{a.settings.links.ios_team_id}.{a.settings.links.ios_bundle_id}"],
            "components": [{"/": "/l/*", "comment": "Lookback links"}],
        }
        for a in apps
        if a.settings.links.ios_team_id and a.settings.links.ios_bundle_id
    ]
    return json.dumps({"applinks": {"details": details}}, indent=2).encode()


def asset_links(apps: Iterable[app_pb2.App]) -> bytes:
    """The Digital Asset Links file: every app with a package and signing
    certificate fingerprints may handle the links (App Links)."""
    statements = [
        {
            "relation": ["delegate_permission/common.handle_all_urls"],
            "target": {
                "namespace": "android_app",
                "package_name": android_package(a),
                "sha256_cert_fingerprints": list(a.settings.links.android_sha256_cert_fingerprints),
            },
        }
        for a in apps
        if android_package(a) and a.settings.links.android_sha256_cert_fingerprints
    ]
    return json.dumps(statements, indent=2).encode()


def serves(app: app_pb2.App, host: str) -> bool:
    """Whether ``host``'s ``.well-known`` files list the app (an app without
    a link domain is listed on every host)."""
    domain = app.settings.links.link_domain.lower().rstrip(".")
    return not domain or domain == host.lower().split(":", 1)[0].rstrip(".")
