"""Where everything lives in Redis: entries, locks, counters, the channel."""

from __future__ import annotations

import hashlib
import re
from typing import Final

from ...exceptions import ConfigurationError

__all__ = ["Keyspace", "MAX_ENTRY_TTL", "COUNTER_TTL", "TAG_VERBATIM_MAX"]

MAX_ENTRY_TTL: Final = 30 * 86400.0
#: Lifetime of a tag or namespace counter after its last bump.
COUNTER_TTL: Final = 2 * MAX_ENTRY_TTL
#: Tags longer than this name their counter by SHA-256, so a key name stays small.
TAG_VERBATIM_MAX: Final = 100

_BAD_NAMESPACE = re.compile(r"[\s:{}\x00-\x1f\x7f-\x9f]")


class Keyspace:
    """Where everything lives in Redis, under ``{prefix}:{namespace}:``.

    An entry and its lock share a Redis Cluster hash slot (the hash tag is the
    cache key, so a namespace spreads over every node); the generation counters
    (namespace, tags) live in slots of their own and are read beside them.

    Injective: a namespace is one segment (no ``:``), and each kind of name its own
    segment after it (``g``, ``inv``, ``stats``, ``k:``, ``l:``, ``t:``, ``h:``), so no
    namespace, key or tag can spell another's name.

    Counters expire :data:`COUNTER_TTL` after their last bump (which starts a new
    one at a random value: :data:`_BUMP_LUA`). An entry stores the values it was
    computed under, so one stored under a counter that later expired, or came back,
    never matches it again. One stored while its counter was missing matches a
    missing counter, but lives at most :data:`MAX_ENTRY_TTL`, so it is gone before
    any counter created after it can expire.
    """

    def __init__(self, namespace: str, prefix: str = "mc") -> None:
        if not isinstance(namespace, str) or not namespace or len(namespace) > 200 or _BAD_NAMESPACE.search(namespace):
            raise ConfigurationError(
                f"namespace {namespace!r} must be 1 to 200 characters, without ':', braces, spaces or control characters")
        base = f"{prefix}:{namespace}:"
        self.base = base
        self.generation = base + "g"
        self.channel = base + "inv"

    def entry(self, key: str) -> str:
        return self.base + "k:{=" + key + "}"

    def lock(self, key: str) -> str:
        return self.base + "l:{=" + key + "}"

    def tag(self, tag: str) -> str:
        """A tag's counter; a long tag's by its SHA-256 (``h:``, which no ``t:`` name can spell)."""
        if len(tag) <= TAG_VERBATIM_MAX:
            return self.base + "t:" + tag
        return self.base + "h:" + hashlib.sha256(tag.encode("utf-8", "surrogatepass")).hexdigest()
