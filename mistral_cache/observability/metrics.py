"""Metrics: a flat, exporter-neutral view of a cache's statistics, and an optional
Prometheus exporter built on it (``pip install 'mistral-cache[prometheus]'``).

:func:`samples` is the hook for other systems (OpenTelemetry observable
instruments, statsd gauges): it returns ``(name, labels, value)`` triples read
from :meth:`Cache.stats` at call time, so nothing is counted twice and the hot
path pays nothing. The Prometheus collector reads the same triples at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .publisher import cache_stats, sections
from .stats import BUCKETS_PER_DECADE, LOW, Histogram

if TYPE_CHECKING:
    from ..cache import Cache

__all__ = [
    "BREAKER_STATES", "COUNTER_NAMES", "LATENCY_BUCKETS", "SECTION_LABELS", "CacheCollector", "Sample", "cumulative_buckets",
    "latency_histograms", "register", "samples", "section_samples", "start_http_server",
]

Sample = tuple[str, dict[str, str], float]

#: Counters of Cache.stats(), exported as ``mistral_cache_<name>_total``.
COUNTER_NAMES = {
    "computes": "computes",
    "compute_errors": "compute_errors",
    "early_refreshes": "early_refreshes",
    "stale_served": "stale_served",
    "lock_waits": "lock_waits",
    "lock_timeouts": "lock_timeouts",
    "redis_errors": "redis_errors",
    "corrupt": "corrupt_entries",
    "rejected": "rejected_values",
    "invalidations": "invalidations",
}
#: Counters of a section (:func:`~.publisher.add_section`) named ``<group>.<value>``
#: become ``mistral_cache_<section>_<metric>_total{<label>="<value>"}``; plain names
#: ``mistral_cache_<section>_<name>_total``. (section, group) -> (metric, label).
SECTION_LABELS = {
    ("events", "events"): ("received", "type"),
    ("events", "rejected"): ("rejected", "reason"),
}
BREAKER_STATES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}
#: Upper bounds (seconds) of the exported latency histogram.
LATENCY_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def samples(cache: Cache) -> list[Sample]:
    """Every metric of one cache as ``(name, labels, value)``; counters end in ``_total``."""
    s = cache.stats()
    ns = {"namespace": cache.namespace}
    out: list[Sample] = [
        ("mistral_cache_requests_total", {**ns, "tier": "local", "result": "hit"}, float(s["local_hits"])),
        ("mistral_cache_requests_total", {**ns, "tier": "redis", "result": "hit"}, float(s["redis_hits"])),
        ("mistral_cache_requests_total", {**ns, "tier": "redis" if cache.redis else "local", "result": "miss"}, float(s["misses"])),
    ]
    for key, name in COUNTER_NAMES.items():
        out.append((f"mistral_cache_{name}_total", ns, float(s[key])))
    if s.get("local_size") is not None:
        out.append(("mistral_cache_local_entries", ns, float(s["local_size"])))
    breaker = s.get("breaker")
    if breaker:
        out.append(("mistral_cache_breaker_state", ns, BREAKER_STATES.get(breaker["state"], -1.0)))
        for state, count in breaker["transitions"].items():
            out.append(("mistral_cache_breaker_transitions_total", {**ns, "to": state}, float(count)))
        out.append(("mistral_cache_breaker_rejected_total", ns, float(breaker["rejected"])))
    coherence = s.get("coherence")
    if coherence:
        out.append(("mistral_cache_coherence_connected", ns, 1.0 if coherence["connected"] else 0.0))
        out.append(("mistral_cache_coherence_reconnects_total", ns, float(coherence["reconnects"])))
        out.append(("mistral_cache_coherence_messages_total", ns, float(coherence["received"])))
    out += section_samples(cache.namespace, sections(cache))
    return out


def section_samples(namespace: str, counters: dict[str, dict[str, int]]) -> list[Sample]:
    """The samples of attached sections (see :data:`SECTION_LABELS`)."""
    out: list[Sample] = []
    for section, values in sorted(counters.items()):
        for name, value in sorted(values.items()):
            group, dot, rest = name.partition(".")
            labels = {"namespace": namespace}
            if dot and (section, group) in SECTION_LABELS:
                metric, label = SECTION_LABELS[section, group]
                labels[label] = rest
            else:
                metric = name.replace(".", "_")
            out.append((f"mistral_cache_{section}_{metric}_total", labels, float(value)))
    return out


def latency_histograms(cache: Cache) -> dict[str, Histogram]:
    """The merged latency histograms of a cache, by path (``redis_hit``, ``miss``)."""
    return cache_stats(cache).total.latency


def cumulative_buckets(h: Histogram, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> list[tuple[float, int]]:
    """``(upper bound, cumulative count)`` pairs, ending with ``+Inf``; a log bucket
    is counted under the first bound at or above its upper edge."""
    out: list[tuple[float, int]] = []
    seen = 0
    index = 0
    for bound in bounds:
        while index < len(h.counts) and (LOW if index == 0 else LOW * 10 ** (index / BUCKETS_PER_DECADE)) <= bound * (1 + 1e-9):
            seen += h.counts[index]
            index += 1
        out.append((bound, seen))
    out.append((float("inf"), h.total))
    return out


class CacheCollector:
    """A ``prometheus_client`` collector over one or more caches, read at scrape time."""

    def __init__(self, *caches: Cache) -> None:
        self.caches = list(caches)

    def add(self, cache: Cache) -> None:
        self.caches.append(cache)

    def describe(self) -> list[Any]:
        return []  # unchecked collector: names depend on what the caches have

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        families: dict[str, Any] = {}
        for cache in self.caches:
            for name, labels, value in samples(cache):
                fam = families.get(name)
                if fam is None:
                    keys = sorted(labels)
                    doc = name.replace("mistral_cache_", "").replace("_", " ")
                    if name.endswith("_total"):
                        fam = CounterMetricFamily(name[: -len("_total")], doc, labels=keys)
                    else:
                        fam = GaugeMetricFamily(name, doc, labels=keys)
                    families[name] = fam
                fam.add_metric([labels[k] for k in sorted(labels)], value)
        yield from families.values()
        hist = HistogramMetricFamily("mistral_cache_latency_seconds", "call latency past the local tier, by path",
                                     labels=["namespace", "path"])
        for cache in self.caches:
            for path, h in latency_histograms(cache).items():
                buckets = [("+Inf" if b == float("inf") else repr(b), float(c)) for b, c in cumulative_buckets(h)]
                hist.add_metric([cache.namespace, path], buckets, h.sum)
        yield hist


def register(*caches: Cache, registry: Any = None) -> CacheCollector:
    """Register a collector for ``caches`` with ``registry`` (default: prometheus_client's global one)."""
    try:
        from prometheus_client import REGISTRY
    except ImportError as exc:  # pragma: no cover
        raise ImportError("the Prometheus exporter needs prometheus_client: pip install 'mistral-cache[prometheus]'") from exc
    collector = CacheCollector(*caches)
    (registry or REGISTRY).register(collector)
    return collector


def start_http_server(port: int, *caches: Cache, addr: str = "127.0.0.1", registry: Any = None) -> CacheCollector:
    """Serve ``/metrics`` for ``caches`` on ``addr:port`` (a daemon thread of prometheus_client)."""
    import prometheus_client

    collector = register(*caches, registry=registry)
    kwargs = {"registry": registry} if registry is not None else {}
    prometheus_client.start_http_server(port, addr=addr, **kwargs)
    return collector
