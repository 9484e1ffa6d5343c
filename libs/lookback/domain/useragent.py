"""User-agent normalisation for probabilistic matching.

A browser on a click and the app's own HTTP stack on first launch send very
different user agents for the same phone. Both are reduced to
``(os, os version, device model)``:

- browsers: ``Mozilla/5.0 (Linux; Android 14; Pixel 8) ...`` and
  ``Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) ...``;
- Android app stacks: ``Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8 Build/UD1A)``
  and ``okhttp/4.12.0`` (no device details: OS from the install instead);
- iOS app stacks: ``MyApp/1.0 CFNetwork/1494.0.7 Darwin/23.4.0`` (the Darwin
  version maps to the iOS version; the model is the device family).

The OS version is compared to the minor version (``17.4``), because browsers
and app stacks report patch levels differently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True, slots=True)
class NormalisedAgent:
    os: str = ""
    os_version: str = ""
    model: str = ""


_ANDROID = re.compile(r"Android\s+([\d.]+)(?:;\s*([^;)]*?))?(?:\s+Build/[^;)]*)?\s*[;)]")
_IOS_BROWSER = re.compile(r"\((iPhone|iPad|iPod)(?:\s+touch)?;.*?OS\s+([\d_]+)")
_DARWIN = re.compile(r"Darwin/(\d+)\.(\d+)")
_CFNETWORK_DEVICE = re.compile(r"\b(iPhone|iPad|iPod)")
_LOCALE = re.compile(r"^[a-z]{2}(?:[-_][A-Za-z]{2})?$")


def _minor(version: str) -> str:
    parts = [p for p in re.split(r"[._]", version) if p]
    if not parts:
        return ""
    if len(parts) == 1:
        return parts[0]
    return f"{parts[0]}.{int(parts[1])}"


def darwin_to_ios(major: int, minor: int) -> str:
    """Darwin kernel version to iOS version: Darwin 23.4 is iOS 17.4."""
    return f"{major - 6}.{minor}" if major >= 20 else ""


@lru_cache(maxsize=4096)
def normalise(user_agent: str, os_version: str = "") -> NormalisedAgent:
    """Reduce a user agent to (os, os version, model), lower-case.

    ``os_version`` (the install's own report) fills in what the agent lacks.
    """
    ua = user_agent or ""
    fallback = _minor(os_version)
    if match := _IOS_BROWSER.search(ua):
        family, version = match.groups()
        return NormalisedAgent("ios", _minor(version) or fallback, family.lower())
    if "CFNetwork/" in ua or "Darwin/" in ua:
        version = ""
        if match := _DARWIN.search(ua):
            version = darwin_to_ios(int(match.group(1)), int(match.group(2)))
        device = _CFNETWORK_DEVICE.search(ua)
        family = device.group(1).lower() if device else "iphone"
        return NormalisedAgent("ios", version or fallback, family)
    if match := _ANDROID.search(ua):
        version, model = match.group(1), (match.group(2) or "").strip()
        if _LOCALE.match(model) or model == "U":
            model = ""
        return NormalisedAgent("android", _minor(version) or fallback, model.lower())
    if ua.lower().startswith("okhttp"):
        return NormalisedAgent("android", fallback, "")
    return NormalisedAgent("", fallback, "")


def ip_key(ip: str) -> str:
    """The key touches are found by for probabilistic matching (``ip:<ip>``)."""
    return f"ip:{ip.strip().lower()}" if ip and ip.strip() else ""


def agents_match(touch: NormalisedAgent, install: NormalisedAgent) -> bool:
    """Same OS and OS version; same model where both name one.

    An app stack that names no model (``okhttp``) matches on OS and version.
    """
    if not (touch.os and touch.os_version and install.os and install.os_version):
        return False
    if (touch.os, touch.os_version) != (install.os, install.os_version):
        return False
    return not (touch.model and install.model) or touch.model == install.model


BOT_MARKERS = (
    "googlebot",
    "bingbot",
    "applebot",
    "twitterbot",
    "slackbot",
    "discordbot",
    "telegrambot",
    "linkedinbot",
    "facebookexternalhit",
    "whatsapp/",
    "spider",
    "crawler",
    "headlesschrome",
    "curl/",
    "wget/",
    "python-requests",
    "yandexbot",
    "duckduckbot",
    "ahrefsbot",
    "semrushbot",
    "petalbot",
    "pinterestbot",
    "redditbot",
    "skypeuripreview",
    "embedly",
)
"""Substrings (lower-case) of the user agents of known automated clients:
search crawlers, chat apps' link previews, headless browsers and command-line
HTTP clients (ATTRIBUTION_RULES.md section 6; the one list, in one place).
Each names its client, never a bare "bot", so a phone whose model contains
"bot" (CUBOT) is not taken for one."""


@lru_cache(maxsize=4096)
def is_bot(user_agent: str) -> bool:
    """True for the user agent of a known automated client; False for none
    at all (partners often report touches server to server without one)."""
    lowered = user_agent.lower()
    return bool(lowered) and any(marker in lowered for marker in BOT_MARKERS)
