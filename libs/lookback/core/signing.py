"""Signing secrets, bound to their partner.

A secret is configured by name (``name=value``, usually from a Kubernetes
Secret). A partner's settings name the secret to use, and a secret is bound to
its partner: a partner may only use a secret whose name is its own media
source, or starts with it and a dot (``adnet``, ``adnet.2026``). So whoever can
write one partner's settings cannot make the suite sign with another
partner's secret (a signature oracle), for links or for postbacks.
"""

from __future__ import annotations

from collections.abc import Mapping


def bound_to(partner: str, name: str) -> bool:
    """Whether the secret called ``name`` may be used for ``partner``."""
    return bool(partner) and (name == partner or name.startswith(partner + "."))


def secret_for(secrets: Mapping[str, str], partner: str, name: str) -> str | None:
    """The value of secret ``name`` for ``partner``; None when it is unknown
    or bound to another partner."""
    if not bound_to(partner, name):
        return None
    return secrets.get(name)
