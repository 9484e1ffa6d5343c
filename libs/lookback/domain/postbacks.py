"""Postback templates: ``{macro}`` slots filled with URL-encoded values."""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote

MACROS = frozenset(
    {
        "app_id",
        "install_id",
        "decision_id",
        "kind",
        "media_source",
        "campaign",
        "adset",
        "ad",
        "site_id",
        "click_id",
        "method",
        "touch_type",
        "install_time",
        "event_time",
        "event_id",
        "event_name",
        "event_revenue",
        "event_currency",
        "reengagement_media_source",
    }
)
_SLOT = re.compile(r"\{([a-z_]+)\}")


def unknown_macros(template: str) -> list[str]:
    """Macros a template uses that :data:`MACROS` does not define."""
    return sorted({m for m in _SLOT.findall(template) if m not in MACROS})


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill every known macro with its URL-encoded value (empty when absent)."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in MACROS:
            return match.group(0)
        return quote(values.get(name, ""), safe="")

    return _SLOT.sub(fill, template)
