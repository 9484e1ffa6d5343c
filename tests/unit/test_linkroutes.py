"""Where a link sends each browser, and the `.well-known` files (pure)."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

from lookback.api.types.v1 import app_pb2, link_pb2
from lookback.gateway import linkroutes as lr


def _app(platform: int = app_pb2.PLATFORM_ANDROID, **links: object) -> app_pb2.App:
    app = app_pb2.App(app_id="com.example.shop", platform=platform)  # type: ignore[arg-type]
    for name, value in links.items():
        if isinstance(value, list):
            getattr(app.settings.links, name).extend(value)
        else:
            setattr(app.settings.links, name, value)
    return app


def test_platforms_from_user_agents() -> None:
    assert lr.platform_of("Mozilla/5.0 (Linux; Android 14; Pixel 8)") == lr.ANDROID
    assert lr.platform_of("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)") == lr.IOS
    assert lr.platform_of("Mozilla/5.0 (iPad; CPU OS 16_0 like Mac OS X)") == lr.IOS
    assert lr.platform_of("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4)") == lr.WEB
    assert lr.platform_of("") == lr.WEB


def test_android_goes_to_play_with_the_click_in_the_referrer() -> None:
    link = link_pb2.Link(media_source="net a", campaign="spring&sale")
    url = lr.destination(link, _app(), lr.ANDROID, "c/1")
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == lr.PLAY
    q = parse_qs(parts.query)
    assert q["id"] == ["com.example.shop"]
    assert parse_qs(q["referrer"][0]) == {
        "click_id": ["c/1"],
        "utm_source": ["net a"],
        "utm_campaign": ["spring&sale"],
    }


def test_ios_and_the_fallbacks_in_order() -> None:
    link = link_pb2.Link(media_source="a")
    ios_app = _app(app_pb2.PLATFORM_IOS)
    ios_app.app_id = "id987"
    assert lr.destination(link, ios_app, lr.IOS, "c") == "https://apps.apple.com/app/id987"
    android = _app(ios_app_store_id="id55")
    assert lr.destination(link, android, lr.IOS, "c") == "https://apps.apple.com/app/id55"
    # Web: the link's fallback, else the app's, else its own store page.
    assert lr.destination(link, android, lr.WEB, "c") == f"{lr.PLAY}?id=com.example.shop"
    android.settings.links.web_fallback_url = "https://shop.example/"
    assert lr.destination(link, android, lr.WEB, "c") == "https://shop.example/"
    link.web_fallback_url = "https://shop.example/own"
    assert lr.destination(link, android, lr.WEB, "c") == "https://shop.example/own"
    # An iOS app has no Play package: Android users get the fallback.
    assert lr.destination(link, ios_app, lr.ANDROID, "c") == "https://shop.example/own"
    other = app_pb2.App(app_id="x", platform=app_pb2.PLATFORM_OTHER)
    assert lr.destination(link_pb2.Link(), other, lr.ANDROID, "c") == ""


def test_well_known_files() -> None:
    full = _app(
        ios_team_id="ABCDE12345",
        ios_bundle_id="com.example.shop",
        android_sha256_cert_fingerprints=["AB:" * 31 + "AB"],
    )
    bare = _app()
    aasa = json.loads(lr.apple_app_site_association([full, bare]))
    assert aasa == {
        "applinks": {
            "details": [
                {
                    "appIDs": ["ABCDE12345.com.example.shop"],
                    "components": [{"/": "/l/*", "comment": "Lookback links"}],
                }
            ]
        }
    }
    (statement,) = json.loads(lr.asset_links([full, bare]))
    assert statement["target"] == {
        "namespace": "android_app",
        "package_name": "com.example.shop",
        "sha256_cert_fingerprints": ["AB:" * 31 + "AB"],
    }
    assert json.loads(lr.asset_links([])) == []
    assert json.loads(lr.apple_app_site_association([])) == {"applinks": {"details": []}}
    scoped = _app(link_domain="go.example.com")
    assert lr.serves(scoped, "GO.example.com:443") and not lr.serves(scoped, "other.example")
    assert lr.serves(bare, "anything.example")
