"""Where an attribution link may send the browser (``redirect=<url>``).

A target is followed only when it is an absolute ``http(s)`` URL without
user info, whitespace, control characters or backslashes, and

- its host is in the app's ``redirect_allowlist``: an entry ``example.com``
  allows exactly that host; ``*.example.com`` allows every subdomain of
  example.com at any depth (``www.example.com``, ``a.b.example.com``) but not
  example.com itself. Hosts compare case-insensitively, a trailing dot
  ignored, international names in their ``xn--`` form; any port, path and
  query; or
- it is one of the app's own store pages (always allowed, https only, on
  the default port):

  - Android: ``https://play.google.com/store/apps/details?id=<app_id>``
    (other query parameters, such as ``referrer``, allowed);
  - iOS: ``https://apps.apple.com/.../id<digits>`` or the same on
    ``itunes.apple.com``, for an app whose id is ``id<digits>`` or
    ``<digits>`` (the path's last segment must be ``id<digits>``; any
    country and name segments before it, any query).

Everything else is refused with a violation naming ``redirect``. Pure
functions over the app's settings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from yarl import URL

from lookback.api.types.v1 import app_pb2
from lookback.core.errors import FieldViolation, InvalidArgument

PLAY_HOST = "play.google.com"
PLAY_PATH = "/store/apps/details"
APPLE_HOSTS = frozenset({"apps.apple.com", "itunes.apple.com"})
_UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")
_APPLE_ID = re.compile(r"(?:id)?([0-9]{1,20})")


def _host(url: URL) -> str:
    return (url.raw_host or "").lower().rstrip(".")


def host_allowed(host: str, allowlist: Iterable[str]) -> bool:
    """Whether ``host`` is named by an allowlist entry (exact, or ``*.`` for subdomains)."""
    host = host.lower().rstrip(".")
    if not host:
        return False
    for entry in allowlist:
        entry = entry.strip().lower().rstrip(".")
        if entry.startswith("*."):
            if host.endswith(entry[1:]):  # ".example.com": a label before it
                return True
        elif entry and host == entry:
            return True
    return False


def is_store_page(url: URL, app: app_pb2.App) -> bool:
    """Whether ``url`` is the app's own page on its platform's store."""
    if url.scheme != "https" or url.explicit_port not in (None, 443):
        return False
    host = _host(url)
    if app.platform == app_pb2.PLATFORM_ANDROID:
        return (
            host == PLAY_HOST
            and url.path == PLAY_PATH
            and url.query.getall("id", []) == [app.app_id]
        )
    if app.platform == app_pb2.PLATFORM_IOS:
        digits = _APPLE_ID.fullmatch(app.app_id)
        last = url.path.rstrip("/").rsplit("/", 1)[-1]
        return host in APPLE_HOSTS and digits is not None and last == f"id{digits.group(1)}"
    return False


def check_redirect_target(target: str, app: app_pb2.App) -> None:
    """Raise :class:`InvalidArgument` naming ``redirect`` unless ``target``
    may be followed for ``app``."""
    problem = ""
    try:
        url = URL(target)
    except (ValueError, TypeError):
        url = None
    if url is None or _UNSAFE.search(target) or url.scheme not in ("http", "https"):
        problem = "must be an absolute http(s) URL without spaces or backslashes"
    elif url.user is not None or url.password is not None:
        problem = "must not carry a user name or password"
    elif not (is_store_page(url, app) or host_allowed(_host(url), app.settings.redirect_allowlist)):
        problem = "its host is not in the app's redirect_allowlist, nor is it the app's store page"
    if problem:
        raise InvalidArgument([FieldViolation("redirect", problem)])
