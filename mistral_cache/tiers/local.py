"""The in-process tier: a bounded LRU (cachetools) of decoded values.

A hit is one dict operation under a lock and a clock comparison; no I/O.
The tier also remembers recent invalidations, so a value read or computed
*before* an invalidation arrived is not stored *after* it (the classic
read/invalidate race that otherwise pins a stale value until its TTL).

By default it is bounded twice: by entry count and by an estimate of the bytes its
values hold (:data:`DEFAULT_MAX_BYTES`), so a few huge values cannot take the
process's memory however few entries they are.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from itertools import chain
from typing import Any

from cachetools import LRUCache

#: The byte bound a tier gets when none is given (``max_bytes=None``); ``max_bytes=0`` removes it.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


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
    """Thread-safe and bounded. ``max_bytes=None``: ``maxsize`` entries and
    :data:`DEFAULT_MAX_BYTES`; a number: that many bytes alone (as before a default
    existed); ``0``: ``maxsize`` entries alone. Bytes are :func:`estimate_size` of
    each value (or the size its filler passed, whichever is larger)."""

    name = "local"

    def __init__(self, maxsize: int = 4096, *, max_bytes: int | None = None) -> None:
        self._max_count = 0
        if max_bytes is None:
            max_bytes = DEFAULT_MAX_BYTES  # read here, not as a default argument, so it can be tuned
            self._max_count = maxsize
        self.max_bytes = max_bytes
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
        if self.max_bytes:
            # Fillers pass 1 (a Redis hit) or the encoded, maybe compressed, size: neither is
            # what the decoded value holds. Estimated outside the lock; only fills pay it.
            entry.size = max(entry.size, estimate_size(entry.value))
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
            while self._max_count and len(self._lru) > self._max_count:
                self._lru.popitem()
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

    def after_fork(self) -> None:
        """In a forked child: a new lock (a parent thread may have held this one at the
        fork), and no entries (no listener applies invalidations to them yet)."""
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self._seq += 1
            self._clear_seq = self._seq
            self._lru.clear()
            self._by_tag.clear()


def approx_size(value: Any) -> int:
    """A cheap size estimate for values that were never serialised (local-only caches)."""
    return sys.getsizeof(value)


_SAMPLE = 32  # children measured per container; the others are assumed alike
_NODES = 1024  # containers measured per value at most: bounded work whatever its shape
_LEAVES = frozenset((str, bytes, bytearray, int, float, complex, bool, type(None)))


def estimate_size(value: Any) -> int:
    """Bytes a decoded value holds, roughly: ``sys.getsizeof`` over its containers
    (dict, list, tuple, set, an object's ``__dict__``), sampling at most ``_SAMPLE``
    evenly spaced children of each and ``_NODES`` containers in all, so the cost
    stays bounded. Shared objects count each time they appear (an overestimate).
    Never raises: a value that resists measuring counts what was measured."""
    size, leaves = sys.getsizeof, _LEAVES
    total = 0.0
    stack: list[tuple[Any, float]] = [(value, 1.0)]
    budget = _NODES
    try:
        total = size(value)
        while stack and budget > 0:
            obj, weight = stack.pop()
            budget -= 1
            children: Any
            if isinstance(obj, dict):
                n = len(obj)
                items = obj.items() if n <= _SAMPLE else list(obj.items())
                children = list(chain.from_iterable(items if n <= _SAMPLE else _spread(items, n)))
            elif isinstance(obj, (list, tuple)):
                n = len(obj)
                children = obj if n <= _SAMPLE else _spread(obj, n)
            elif isinstance(obj, (set, frozenset)):
                n = len(obj)
                children = obj if n <= _SAMPLE else _spread(list(obj), n)
            elif type(obj) not in leaves:
                attrs = getattr(obj, "__dict__", None)
                if isinstance(attrs, dict):
                    total += size(attrs) * weight
                    stack.append((attrs, weight))
                continue
            else:
                continue
            if n > _SAMPLE:
                weight = weight * n / _SAMPLE
            # Every child's own size now (C-level loop); containers are opened later.
            total += sum(map(size, children)) * weight
            stack.extend([(c, weight) for c in children if type(c) not in leaves])
    except Exception:  # noqa: S110 - a size estimate must not fail a fill
        pass
    return int(total)


def _spread(seq: Any, n: int) -> list[Any]:
    """``_SAMPLE`` evenly spaced items of a sequence of length ``n``."""
    return [seq[i * n // _SAMPLE] for i in range(_SAMPLE)]
