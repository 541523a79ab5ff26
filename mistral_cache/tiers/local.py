"""The in-process tier: a bounded LRU (cachetools) of decoded values.

A hit is one dict operation under a lock and a clock comparison; no I/O.
The tier also remembers recent invalidations, so a value read or computed
*before* an invalidation arrived is not stored *after* it (the classic
read/invalidate race that otherwise pins a stale value until its TTL).
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from cachetools import LRUCache


class LocalEntry:
    """A decoded value and its deadlines (all on the cache's clock)."""

    __slots__ = ("value", "expires_at", "soft_at", "stale_until", "tags", "created_at", "compute_time", "ttl", "size")

    def __init__(
        self,
        value: Any,
        *,
        created_at: float,
        ttl: float,
        expires_at: float,
        soft_at: float,
        stale_until: float,
        compute_time: float = 0.0,
        tags: tuple[str, ...] = (),
        size: int = 1,
    ) -> None:
        self.value = value
        self.created_at = created_at
        self.ttl = ttl
        self.expires_at = expires_at
        self.soft_at = soft_at
        self.stale_until = stale_until
        self.compute_time = compute_time
        self.tags = tags
        self.size = size


class _LRU(LRUCache[str, LocalEntry]):
    """An LRUCache that tells its owner which keys it evicted (to keep the tag index small)."""

    def __init__(
        self, maxsize: int, getsizeof: Callable[[LocalEntry], int] | None, on_evict: Callable[[str, LocalEntry], None]
    ) -> None:
        super().__init__(maxsize, getsizeof)
        self._on_evict = on_evict

    def popitem(self) -> tuple[str, LocalEntry]:
        # LocalTier.peek touches the LRU order without the lock; if that lands
        # between cachetools' iter() and next() over the order, next() raises.
        # Nothing has changed yet at that point: look again.
        for _ in range(1000):
            try:
                key, entry = super().popitem()
            except RuntimeError:
                continue
            self._on_evict(key, entry)
            return key, entry
        raise RuntimeError("local tier: LRU order kept changing during eviction")


_RECENT = 4096  # invalidations remembered for the fill race


class LocalTier:
    """Thread-safe, bounded by entry count (or by bytes with ``max_bytes``)."""

    name = "local"

    def __init__(self, maxsize: int = 4096, *, max_bytes: int | None = None) -> None:
        if max_bytes:
            self._lru = _LRU(max_bytes, lambda e: e.size, self._evicted)
        else:
            self._lru = _LRU(maxsize, None, self._evicted)
        data, order = getattr(self._lru, "_Cache__data", None), getattr(self._lru, "_LRUCache__order", None)
        self._fast: tuple[Any, Any] = (data, order) if isinstance(data, dict) and isinstance(order, OrderedDict) else (None, None)
        self._lock = threading.Lock()
        self._by_tag: dict[str, set[str]] = {}
        self._seq = 0
        self._recent: OrderedDict[str, int] = OrderedDict()
        self._clear_seq = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._lru)

    def _evicted(self, key: str, entry: LocalEntry) -> None:
        self.evictions += 1
        self._untag(key, entry)

    def _untag(self, key: str, entry: LocalEntry) -> None:
        for tag in entry.tags:
            keys = self._by_tag.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_tag[tag]

    def get(self, key: str) -> LocalEntry | None:
        with self._lock:
            return self._lru.get(key)

    def peek(self, key: str) -> LocalEntry | None:
        """:meth:`get` without cachetools' three method layers: the same dict lookup
        and LRU touch on cachetools' own storage, when this cachetools has the
        layout we know (5.x to 8.x); otherwise its public ``get``."""
        data, order = self._fast
        if data is None:
            return self.get(key)
        # No lock: both calls are single C-level operations on a dict and an
        # OrderedDict of str keys. A key removed between them raises KeyError,
        # which only means the LRU touch came too late; the entry read is the
        # one a locked read at that instant would have returned. (An eviction
        # iterating the order meanwhile retries: _LRU.popitem.)
        entry: LocalEntry | None = data.get(key)
        if entry is not None:
            try:
                order.move_to_end(key)
            except KeyError:
                pass
        return entry

    def begin(self) -> int:
        """A token to pass to :meth:`put`: a put is dropped if the key was invalidated since."""
        return self._seq

    def _invalidated_since(self, key: str, tags: Iterable[str], since: int) -> bool:
        if self._seq == since:
            return False
        if self._clear_seq > since or self._recent.get(key, -1) > since:
            return True
        if len(self._recent) >= _RECENT and next(iter(self._recent.values())) > since:
            return True  # the record of what happened since has been trimmed: be safe
        return any(self._recent.get("#" + t, -1) > since for t in tags)

    def put(self, key: str, entry: LocalEntry, since: int | None = None) -> bool:
        with self._lock:
            if since is not None and self._invalidated_since(key, entry.tags, since):
                return False
            old = self._lru.pop(key, None)
            if old is not None:
                self._untag(key, old)
            try:
                self._lru[key] = entry
            except ValueError:  # larger than the whole tier
                return False
            for tag in entry.tags:
                self._by_tag.setdefault(tag, set()).add(key)
            return True

    def _note(self, name: str) -> None:
        self._seq += 1
        self._recent[name] = self._seq
        self._recent.move_to_end(name)
        while len(self._recent) > _RECENT:
            self._recent.popitem(last=False)

    def delete(self, key: str) -> bool:
        with self._lock:
            self._note(key)
            entry = self._lru.pop(key, None)
            if entry is not None:
                self._untag(key, entry)
            return entry is not None

    def delete_tags(self, tags: Iterable[str]) -> int:
        removed = 0
        with self._lock:
            for tag in tags:
                self._note("#" + tag)
                for key in self._by_tag.pop(tag, ()):
                    entry = self._lru.pop(key, None)
                    if entry is not None:
                        self._untag(key, entry)
                        removed += 1
        return removed

    def clear(self) -> None:
        with self._lock:
            self._seq += 1
            self._clear_seq = self._seq
            self._lru.clear()
            self._by_tag.clear()


def approx_size(value: Any) -> int:
    """A cheap size estimate for values that were never serialised (local-only caches)."""
    return sys.getsizeof(value)
