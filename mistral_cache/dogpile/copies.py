"""The local copies the dogpile backend and the oslo proxy keep in front of Redis:
read, filled and dropped the same way by both, so a fix to the protocol (when a
copy may be served, when it must go) lands in both integrations at once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

from dogpile.cache.api import NO_VALUE

from .. import coherence
from ..tiers.local import LocalEntry, LocalTier
from ..tiers.redis import FAILED, RedisTier
from .ops import delete_many

__all__ = ["delete_announced", "drop", "fill", "live_hits", "live_value"]


def live_value(local: LocalTier | None, key: str) -> Any:
    """The local copy's value while within its TTL, else ``NO_VALUE``: a hit does no I/O."""
    if local is not None:
        entry = local.peek(key)
        if entry is not None and entry.expires_at > time.monotonic():
            return entry.value
    return NO_VALUE


def live_hits(local: LocalTier | None, keys: Sequence[str]) -> tuple[list[Any], list[int]]:
    """:func:`live_value` of each key, and the indexes of those Redis must answer."""
    out = [live_value(local, key) for key in keys]
    return out, [i for i, v in enumerate(out) if v is NO_VALUE]


def fill(local: LocalTier | None, key: str, value: Any, since: int, ttl: float, *,
         tags: tuple[str, ...] = (), size: int = 1) -> None:
    """Keep a copy for ``ttl`` seconds (bounds staleness if the pub/sub link is lost),
    unless the key was dropped since ``since`` (``local.begin()`` before the read or
    write): an announcement that overtook the value must win."""
    if local is None:
        return
    now = time.monotonic()
    local.put(key, LocalEntry(value, created_at=now, ttl=ttl, expires_at=now + ttl, soft_at=math.inf,
                              stale_until=now + ttl, tags=tags, size=size), since)


def drop(local: LocalTier | None, keys: Iterable[str]) -> None:
    if local is not None:
        for key in keys:
            local.delete(key)


def delete_announced(tier: RedisTier, local: LocalTier | None, keys: Sequence[str], redis_keys: Sequence[str],
                     channel: str, sender: str, what: str) -> bool:
    """Delete ``keys`` everywhere: the copies here first, then one round trip that DELs
    ``redis_keys`` and announces each key on ``channel`` (every other process drops
    its copy), then the copies here again (a read that began before the DEL may have
    refilled one). Whether Redis acknowledged it; if not, the caller keeps the keys
    for a replay, or other processes may serve the old values."""
    drop(local, keys)
    messages = [coherence.message(sender, "k", key) for key in keys]
    res = tier.run(delete_many(redis_keys, channel, messages), what)
    drop(local, keys)
    return res is not FAILED
