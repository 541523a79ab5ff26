"""Each process publishes its statistics to Redis, for ``mistral-cache stats``.

One hash per namespace (:func:`stats_key`): a field per publishing process
(:func:`process_id`), its value a JSON snapshot written by :func:`encode`, with the
process's adaptive-TTL learning, its breaker state, the time, and the counters
other components attach to the cache (:func:`add_section`: the events receiver's
``events`` section). The command reads
it back with :func:`decode_into`, which checks every field: anyone who can write
to Redis can write this hash, and the command must still run.

:func:`publish_stats` publishes once; :func:`start_stats_publisher` starts a daemon
thread that publishes every ``interval`` seconds.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..adaptive import AdaptiveStats
from ..tiers.redis import FAILED, Keyspace
from .stats import COUNTERS, CacheStats, Histogram, Stats, gather

if TYPE_CHECKING:
    from ..cache import Cache

__all__ = [
    "SECTION_NAMES", "StatsPublisher", "adaptive_stats", "add_section", "cache_stats", "decode_into",
    "decode_section", "encode", "process_id", "publish_stats", "sections", "start_stats_publisher", "stats_key",
]

#: The sections ``mistral-cache stats`` reads back (others are ignored there).
SECTION_NAMES = ("events",)

_SECTIONS: weakref.WeakKeyDictionary[Any, dict[str, Callable[[], Mapping[str, int]]]] = weakref.WeakKeyDictionary()
_SECTIONS_LOCK = threading.Lock()


def add_section(cache: Cache, name: str, counters: Callable[[], Mapping[str, int]]) -> None:
    """Attach a component's counters to ``cache``: ``counters()`` (flat name -> count,
    read at publish and scrape time) goes into every published snapshot under
    ``sections[name]`` and into :func:`~.metrics.samples`. One per name and cache."""
    with _SECTIONS_LOCK:
        _SECTIONS.setdefault(cache, {})[name] = counters


def sections(cache: Cache) -> dict[str, dict[str, int]]:
    """The counters attached to ``cache``, read now."""
    with _SECTIONS_LOCK:
        providers = dict(_SECTIONS.get(cache, {}))
    return {name: {str(k): int(v) for k, v in counters().items()} for name, counters in providers.items()}


def stats_key(keyspace: Keyspace) -> str:
    """One hash per namespace: a field per publishing process, its value a JSON snapshot."""
    return keyspace.base + "stats"


def cache_stats(cache: Cache) -> CacheStats:
    """Every function's counters and histograms of one cache, merged (histograms kept
    whole): what :meth:`Cache.stats` summarises."""
    return gather(cache.runtime.stats, cache.runtime.functions)


def encode(stats: Stats) -> dict[str, Any]:
    """The counters and the non-empty histogram buckets, as JSON-ready data."""
    return {
        "counters": {name: getattr(stats, name) for name in COUNTERS},
        "latency": {
            path: {"counts": {str(i): c for i, c in enumerate(h.counts) if c}, "sum": h.sum}
            for path, h in stats.latency.items()
        },
    }


def _count(value: Any) -> int:
    """A published count: a non-negative int (a float only if integral), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0 or value != int(value):
        raise ValueError(f"not a count: {value!r}")
    return int(value)


def decode_into(total: Stats, data: dict[str, Any]) -> None:
    """Add one published snapshot to ``total``; ValueError (and nothing added) if any
    field is not what :func:`encode` writes: anyone who can write to Redis can
    write this hash, and ``stats`` must still run."""
    counters, latency = data.get("counters", {}), data.get("latency", {})
    if not isinstance(counters, dict) or not isinstance(latency, dict):
        raise ValueError("counters and latency must be objects")
    adds = {name: _count(value) for name, value in counters.items() if name in COUNTERS}
    hists = {}
    for path, hist in latency.items():
        if path not in total.latency:
            continue
        if not isinstance(hist, dict) or not isinstance(hist.get("counts", {}), dict):
            raise ValueError("a histogram must be an object")
        h = Histogram()
        for index, count in hist.get("counts", {}).items():
            i, n = int(index), _count(count)
            if 0 <= i < len(h.counts):
                h.counts[i] += n
                h.total += n
        h.sum = float(hist.get("sum", 0.0))
        if not math.isfinite(h.sum):
            raise ValueError("a histogram's sum must be finite")
        hists[path] = h
    for name, n in adds.items():
        setattr(total, name, getattr(total, name) + n)
    for path, h in hists.items():
        total.latency[path].merge(h)


def decode_section(data: Any) -> dict[str, int]:
    """A published section's counters (ValueError if it is not flat name -> count)."""
    if not isinstance(data, dict):
        raise ValueError("a section must be an object")
    out = {}
    for name, value in data.items():
        if not isinstance(name, str) or len(name) > 200:
            raise ValueError("a counter name must be a short string")
        out[name] = _count(value)
    return out


def adaptive_stats(stats: CacheStats) -> dict[str, Any]:
    """Per function with a learning TTL: what it learnt (see :meth:`Adaptive.stats`)."""
    return {name: st.policy.stats(st.fn_name) for name, st in stats.functions.items() if isinstance(st, AdaptiveStats)}


def process_id(cache: Cache) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{cache.runtime.sender}"


def publish_stats(cache: Cache, *, ttl: float = 60.0) -> bool:
    """Publish this process's counters under the cache's namespace (fail open: False if Redis failed)."""
    tier = cache.redis
    if tier is None:
        return False
    stats = cache_stats(cache)
    snapshot = encode(stats.total)
    snapshot["adaptive"] = adaptive_stats(stats)
    snapshot["ts"] = time.time()
    snapshot["breaker"] = tier.breaker.state
    extra = sections(cache)
    if extra:
        snapshot["sections"] = extra
    key, field, payload = stats_key(cache.keyspace), process_id(cache), json.dumps(snapshot, separators=(",", ":"))

    def op(c: Any) -> Any:
        pipe = c.pipeline(transaction=False)
        pipe.hset(key, field, payload)
        pipe.pexpire(key, int(ttl * 1000))
        return pipe.execute()

    return tier.run(op, "publish stats") is not FAILED


class StatsPublisher:
    """A daemon thread that calls :func:`publish_stats` every ``interval`` seconds."""

    def __init__(self, cache: Cache, interval: float = 10.0) -> None:
        self.cache, self.interval = cache, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mistral-cache-stats", daemon=True)

    def start(self) -> StatsPublisher:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            publish_stats(self.cache, ttl=max(60.0, 6 * self.interval))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        publish_stats(self.cache, ttl=max(60.0, 6 * self.interval))  # the last counts


def start_stats_publisher(cache: Cache, interval: float = 10.0) -> StatsPublisher:
    return StatsPublisher(cache, interval).start()
