"""Counters and latency histograms, per function and per cache.

Counters are plain ints bumped without a lock: under threads a rare increment
may be lost, which is acceptable for statistics and keeps the hit path cheap.

:func:`gather` is the one place a cache's statistics are summed: the cache's own
counters plus every cached function's, histograms kept whole (``Cache.stats()``
summarises them; the publisher and the Prometheus exporter need the buckets).
Nothing here imports the rest of the package.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "BUCKETS_PER_DECADE", "COUNTERS", "LOW", "CacheStats", "FunctionStats", "Histogram", "Stats", "gather",
]

COUNTERS = (
    "local_hits", "redis_hits", "misses", "computes", "compute_errors", "early_refreshes",
    "stale_served", "lock_waits", "lock_timeouts", "redis_errors", "corrupt", "rejected",
    "invalidations", "unreplicated", "invalidations_pending", "pending_misses", "locks_owed",
)

#: Histogram resolution: buckets per power of ten, from :data:`LOW` seconds up.
BUCKETS_PER_DECADE = 20
#: The upper edge (seconds) of a histogram's first bucket: 0.1 microsecond.
LOW = 1e-7


class Histogram:
    """Log-spaced buckets from 0.1 us to ~100 s: quantiles within ~12% at any scale."""

    __slots__ = ("counts", "total", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (BUCKETS_PER_DECADE * 10 + 1)
        self.total = 0
        self.sum = 0.0

    def add(self, seconds: float) -> None:
        index = 0 if seconds <= LOW else int(math.log10(seconds / LOW) * BUCKETS_PER_DECADE) + 1
        self.counts[min(index, len(self.counts) - 1)] += 1
        self.total += 1
        self.sum += seconds

    def quantile(self, q: float) -> float | None:
        if not self.total:
            return None
        rank = q * (self.total - 1) + 1
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return LOW * 10 ** ((index - 0.5) / BUCKETS_PER_DECADE) if index else LOW
        return None  # pragma: no cover

    def merge(self, other: Histogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total
        self.sum += other.sum

    def summary(self) -> dict[str, Any]:
        return {
            "count": self.total,
            "mean": self.sum / self.total if self.total else None,
            "p50": self.quantile(0.5),
            "p99": self.quantile(0.99),
        }


class Stats:
    """What one function (or, merged, one cache) did."""

    local_hits: int
    redis_hits: int
    misses: int
    computes: int
    compute_errors: int
    early_refreshes: int
    stale_served: int
    lock_waits: int
    lock_timeouts: int
    redis_errors: int
    corrupt: int
    rejected: int
    invalidations: int
    unreplicated: int  # invalidations no replica acknowledged in time (Sentinel)
    invalidations_pending: int  # invalidations Redis did not acknowledge at once: kept and replayed
    pending_misses: int  # Redis entries older than a pending invalidation, read as misses
    locks_owed: int  # lock tokens whose acquire or release reply was lost: released on the replay

    def __init__(self) -> None:
        for name in COUNTERS:
            setattr(self, name, 0)
        self.latency = {"redis_hit": Histogram(), "miss": Histogram()}

    def merge(self, other: Stats) -> None:
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for path, hist in other.latency.items():
            self.latency[path].merge(hist)

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in COUNTERS}
        lookups = out["local_hits"] + out["redis_hits"] + out["misses"]
        out["hit_rate"] = (out["local_hits"] + out["redis_hits"]) / lookups if lookups else None
        out["latency"] = {path: h.summary() for path, h in self.latency.items()}
        return out

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


class FunctionStats(Protocol):
    """What :func:`gather` reads of a cached function: its name and its counters."""

    @property
    def name(self) -> str: ...

    @property
    def stats(self) -> Stats: ...


@dataclass
class CacheStats:
    """One cache's statistics: the total (histograms whole) and each function's own."""

    total: Stats
    functions: dict[str, Stats] = field(default_factory=dict)  # by name; of two with one name, the last

    def snapshot(self) -> dict[str, Any]:
        """The total's snapshot plus ``functions``: each function's snapshot, by name."""
        out = self.total.snapshot()
        out["functions"] = {name: stats.snapshot() for name, stats in self.functions.items()}
        return out


def gather(extra: Stats, functions: Iterable[FunctionStats]) -> CacheStats:
    """Sum ``extra`` (the cache's own counters) and every function's into one total."""
    total = Stats()
    total.merge(extra)
    by_name: dict[str, Stats] = {}
    for fn in list(functions):  # a WeakSet may shrink while we iterate
        total.merge(fn.stats)
        by_name[fn.name] = fn.stats
    return CacheStats(total, by_name)
