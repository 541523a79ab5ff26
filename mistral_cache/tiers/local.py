"""The in-process tier: a bounded LRU (cachetools) of decoded values.

A hit is one dict operation under a lock and a clock comparison; no I/O.
The tier also remembers recent invalidations, so a value read or computed
*before* an invalidation arrived is not stored *after* it (the classic
read/invalidate race that otherwise pins a stale value until its TTL).

By default it is bounded twice: by entry count and by an estimate of the bytes its
values hold (:data:`DEFAULT_MAX_BYTES`), so a few huge values cannot take the
process's memory however few entries they are.

``admission="tinylfu"`` (opt-in) puts a TinyLFU filter (:mod:`.admission`) in front
of the LRU: a new key that would evict the LRU victim is stored only if it has
been asked for more often lately. A miss is counted by the put that follows it
(under the lock). A hit must stay cheap, and the sketch costs ~1.5 us per update
in CPython, so one hit in 8 is sampled (a ``next()`` on a counter) and counted as
8: the key is appended to a list, lock-free (``list.append`` is atomic), and the
list is counted into the sketch under the lock at the next put or every
``_READ_BATCH`` samples (dropped if it outgrows ``_READ_MAX`` while the lock is
busy). Sampling 1 in 8 costs 0.01 of Belady's hit ratio against counting every
hit. The default tier has none of it: ``peek`` is swapped for the recording one
on the instance only when admission is on, and ``put`` gains one branch.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from itertools import chain, count
from typing import Any

from cachetools import LRUCache

from .admission import ADMISSIONS, TinyLFU

__all__ = ["DEFAULT_MAX_BYTES", "LocalEntry", "LocalTier", "approx_size", "cachetools_storage", "estimate_size"]

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


def cachetools_storage(lru: LRUCache[str, LocalEntry]) -> tuple[dict[str, LocalEntry] | None, OrderedDict[str, Any] | None]:
    """The one place that reads cachetools' private storage: an ``LRUCache``'s dict of
    items and its ``OrderedDict`` of recency (name-mangled ``_Cache__data`` and
    ``_LRUCache__order``, the layout of cachetools 5.x to 8.x), or ``(None, None)``
    when this cachetools lays them out otherwise, and the tier then uses only its
    public API.

    Why: a local hit is promised no slower than ``cachetools.cached(LRUCache)``, and
    the public ``lru[key]`` (``LRUCache.__getitem__``, ``Cache.__getitem__``,
    ``__contains__``, the touch) costs ~26 ns more per hit than the dict lookup and
    ``move_to_end`` it ends in (104 vs 78 ns pinned; ``lru.get`` 171 ns), a quarter of
    the budget. Both objects are only read and touched here (``get``,
    ``move_to_end``): cachetools still does every insertion and eviction.
    ``tests/test_local_tier.py`` checks that this cachetools has the layout (so an
    upgrade that moves it fails a test instead of slowing hits silently), and that
    the fallback behaves the same."""
    data, order = getattr(lru, "_Cache__data", None), getattr(lru, "_LRUCache__order", None)
    if isinstance(data, dict) and isinstance(order, OrderedDict):
        return data, order
    return None, None


def _no_touch(key: str) -> None:
    """The fallback hit path's touch: its ``find`` (the tier's ``peek``) touched already."""


_RECENT = 4096  # invalidations remembered for the fill race
_RECORD_MASK = 7  # one hit in 8 is recorded, as 8 accesses (see _peek_recorded)
_READ_BATCH = 512  # hits buffered before a peek tries to count them into the sketch
_READ_MAX = 16384  # hits buffered at most while the lock is busy; beyond, they are dropped


class LocalTier:
    """Thread-safe and bounded. ``max_bytes=None``: ``maxsize`` entries and
    :data:`DEFAULT_MAX_BYTES`; a number: that many bytes alone (as before a default
    existed); ``0``: ``maxsize`` entries alone. Bytes are :func:`estimate_size` of
    each value (or the size its filler passed, whichever is larger).
    ``admission="tinylfu"``: a new key evicts the LRU victim only if TinyLFU finds it
    more frequent (:meth:`put` then returns False and counts a ``rejection``)."""

    name = "local"

    def __init__(self, maxsize: int = 4096, *, max_bytes: int | None = None, admission: str | None = None) -> None:
        self._max_count = 0
        if max_bytes is None:
            max_bytes = DEFAULT_MAX_BYTES  # read here, not as a default argument, so it can be tuned
            self._max_count = maxsize
        self.max_bytes = max_bytes
        if max_bytes:
            self._lru = _LRU(max_bytes, lambda e: e.size, self._evicted)
        else:
            self._lru = _LRU(maxsize, None, self._evicted)
        self._fast: tuple[Any, Any] = cachetools_storage(self._lru)
        self._lock = threading.Lock()
        self._by_tag: dict[str, set[str]] = {}
        self._seq = 0
        self._recent: OrderedDict[str, int] = OrderedDict()
        self._clear_seq = 0
        self.evictions = 0
        #: New keys turned away by the admission policy.
        self.rejections = 0
        self.admission = admission
        self._filter: TinyLFU | None = None
        self._reads: list[str] = []
        self._ticks = count()
        if admission is not None:
            if admission not in ADMISSIONS:
                raise ValueError(f"LocalTier admission must be one of {ADMISSIONS} or None, got {admission!r}")
            # Sized by entries; a tier bounded by bytes alone still has maxsize as its expected count.
            self._filter = TinyLFU(maxsize or 4096)
            self.peek = self._peek_recorded  # type: ignore[method-assign]

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

    def hit_path(self) -> tuple[Callable[[str], LocalEntry | None], Callable[[str], Any]]:
        """``(find, touch)`` for a caller that inlines the hit (the wrappers do, as
        cachetools.cached inlines its own): ``find(key)`` is the entry or None, without
        the lock; ``touch(key)`` marks it recently used and may raise KeyError if the
        key went meanwhile (ignore it). Both are C-level calls on cachetools' storage
        (:func:`cachetools_storage`); where that layout is unknown, or with admission
        (whose ``peek`` samples hits), ``find`` is :meth:`peek` and ``touch`` a no-op."""
        data, order = self._fast
        if data is None or self._filter is not None:
            return self.peek, _no_touch
        return data.get, order.move_to_end

    def peek(self, key: str) -> LocalEntry | None:
        """:meth:`get` without cachetools' three method layers: the same dict lookup
        and LRU touch on cachetools' own storage, when this cachetools has the
        layout we know (:func:`cachetools_storage`); otherwise its public ``get``."""
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

    def _peek_recorded(self, key: str) -> LocalEntry | None:
        """:meth:`peek` that also samples hits for the admission filter (one in
        ``_RECORD_MASK + 1``): a lock-free ``list.append``, counted later under the lock."""
        data, order = self._fast
        if data is None:
            entry = self.get(key)
        else:
            entry = data.get(key)
            if entry is not None:
                try:
                    order.move_to_end(key)
                except KeyError:
                    pass
        if entry is not None and not next(self._ticks) & _RECORD_MASK:
            reads = self._reads
            reads.append(key)
            if len(reads) >= _READ_BATCH:
                self._count_reads()
        return entry

    def _count_reads(self) -> None:
        """Count the buffered hits into the sketch if the lock is free now; if a put
        holds it, that put counts them; if the buffer still outgrows ``_READ_MAX``,
        drop it (lossy, as Caffeine's read buffers: frequencies are estimates anyway)."""
        if self._lock.acquire(blocking=False):
            try:
                self._drain_reads()
            finally:
                self._lock.release()
        elif len(self._reads) > _READ_MAX:
            self._reads = []

    def _drain_reads(self) -> None:
        """Under the lock: swap the buffer out, count it. An append racing the swap lands
        in the old list and may be missed: one lost count."""
        reads, self._reads = self._reads, []
        if reads and self._filter is not None:
            self._filter.record_hits(reads, _RECORD_MASK + 1)

    def _admits(self, key: str, size: int) -> bool:
        """Under the lock, for a key not in the tier: whether it may go in. Yes if
        nothing would be evicted; else TinyLFU's verdict against the LRU victim (the
        first one, when a byte bound would take several)."""
        lfu = self._filter
        assert lfu is not None
        self._drain_reads()
        lru = self._lru
        if self.max_bytes:
            full = lru.currsize + size > lru.maxsize or bool(self._max_count and len(lru) >= self._max_count)
        else:
            full = len(lru) >= lru.maxsize
        lfu.record(key)  # the miss this put follows (peek records hits only)
        if not full:
            return True
        victim = self._victim()
        if victim is None or lfu.admit(key, victim):
            return True
        self.rejections += 1
        return False

    def _victim(self) -> str | None:
        """The key an eviction would take now: the head of cachetools' LRU order (a
        lock-free peek may reorder it meanwhile: look again). None if unknown."""
        order = self._fast[1]
        if order is None or not order:
            return None
        for _ in range(1000):
            try:
                victim: str = next(iter(order))
                return victim
            except RuntimeError:
                continue
            except StopIteration:
                return None
        return None

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
            if self._filter is not None and key not in self._lru and not self._admits(key, entry.size):
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
        self._reads = []
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
