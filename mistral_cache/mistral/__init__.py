"""Cached OpenStack Mistral reads: a drop-in client facade and state-aware TTL policies.

python-mistralclient (the extra ``mistral``) is imported lazily, only when a client is built::

    from mistral_cache import Cache
    from mistral_cache.mistral import CachedMistralClient

    mistral = CachedMistralClient(mistral_url="http://127.0.0.1:8989/v2", cache=Cache(redis_url=...))
    mistral.executions.get(execution_id).state   # RUNNING: seconds; SUCCESS: a day
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

from .identity import ADMIN_ROLES, DEFAULT_PROJECT, MAX_IDENTITY_TTL, scope_for
from .policies import DEFAULT_POLICIES, adaptive_state_ttl, make_policies, resource_ttl, ttl_for
from .transport import default_retry, install_timeout, is_transient

__all__ = [
    "ADMIN_ROLES", "DEFAULT_POLICIES", "DEFAULT_PROJECT", "MAX_IDENTITY_TTL", "CachedManager", "CachedMistralClient",
    "adaptive_state_ttl", "default_retry", "install_timeout", "is_transient", "make_policies", "resource_ttl", "scope_for",
    "ttl_for",
]

if TYPE_CHECKING:
    from .facade import CachedManager, CachedMistralClient


def __getattr__(name: str) -> Any:
    """The client facade, on first use: the rest of the package (the events publisher
    Mistral loads, identity, policies) imports without python-mistralclient."""
    if name in ("CachedManager", "CachedMistralClient"):
        if importlib.util.find_spec("mistralclient") is None:  # found, not imported: that stays lazy
            raise ImportError("mistral_cache.mistral needs python-mistralclient: pip install 'mistral-cache[mistral]'")
        from . import facade

        return getattr(facade, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
