"""``mistral-cache stats``: hit rates and latencies aggregated over every process
that publishes its counters under the namespace
(:func:`~mistral_cache.observability.publisher.start_stats_publisher`, or
:func:`~mistral_cache.observability.publisher.publish_stats` once).

Exit code 0 when some process published, 1 when none did, 2 on errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from typing import Any

import redis.exceptions as rex

from ..adaptive import merge_stats
from ..exceptions import ConfigurationError
from ..mistral.events.mapping import RECEIVER_COUNTERS
from ..observability.publisher import SECTION_NAMES, decode_into, decode_section, stats_key
from ..observability.stats import Stats
from ..tiers.redis import Keyspace, client_options, redact, sync_client_from_url
from . import options

__all__ = ["collect_stats", "events_summary", "register"]

log = logging.getLogger("mistral_cache.admin.stats")


def _adaptive_part(part: Any) -> dict[str, Any]:
    """One process's adaptive stats of one function, if :func:`merge_stats` can read them."""
    if not isinstance(part, dict):
        raise ValueError("not an object")
    merge_stats([part])  # raises on anything it cannot merge
    return part


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _printable(text: str) -> str:
    """Text from Redis, safe for a terminal (escape sequences shown, not obeyed)."""
    return _UNPRINTABLE.sub(lambda m: repr(m[0])[1:-1], text)


def collect_stats(client: Any, namespace: str, *, max_age: float = 300.0) -> dict[str, Any]:
    """Aggregate what the processes of ``namespace`` published within ``max_age`` seconds."""
    now = time.time()
    raw = client.hgetall(stats_key(Keyspace(namespace)))
    total = Stats()
    processes = []
    learnt: dict[str, list[dict[str, Any]]] = {}
    merged: dict[str, dict[str, int]] = {name: {} for name in SECTION_NAMES}
    publishers: dict[str, int] = dict.fromkeys(SECTION_NAMES, 0)
    for field, value in sorted(raw.items()):
        name = field.decode(errors="replace") if isinstance(field, bytes) else str(field)
        try:
            data = json.loads(value)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            age = now - float(data.get("ts", 0))
            if not age <= max_age:  # NaN too
                continue
            proc = Stats()
            decode_into(proc, data)
            adaptive = data.get("adaptive") or {}
            if not isinstance(adaptive, dict):
                raise ValueError("adaptive must be an object")
            parts = {str(fn): _adaptive_part(part) for fn, part in adaptive.items()}
            breaker = data.get("breaker")
            if breaker is not None and not isinstance(breaker, str):
                raise ValueError("breaker must be a string")
            raw_sections = data.get("sections") or {}
            if not isinstance(raw_sections, dict):
                raise ValueError("sections must be an object")
            got = {name: decode_section(raw_sections[name]) for name in SECTION_NAMES if name in raw_sections}
        except (ValueError, TypeError, AttributeError, KeyError, OverflowError, RecursionError) as exc:
            log.warning("stats: ignoring the unreadable snapshot of %r: %s", name, type(exc).__name__)
            continue
        total.merge(proc)
        for section, counters in got.items():
            publishers[section] += 1
            for key, n in counters.items():
                merged[section][key] = merged[section].get(key, 0) + n
        for fn, part in parts.items():
            learnt.setdefault(fn, []).append(part)
        snap = proc.snapshot()
        processes.append({
            "process": name,
            "age": round(age, 3),
            "breaker": breaker,
            "hit_rate": snap["hit_rate"],
            "lookups": snap["local_hits"] + snap["redis_hits"] + snap["misses"],
            "sections": sorted(got),
        })
    out = total.snapshot()
    out["namespace"] = namespace
    out["processes"] = processes
    out["adaptive"] = {fn: merge_stats(parts) for fn, parts in sorted(learnt.items())}
    out["events"] = events_summary(merged["events"], publishers["events"])
    return out


def events_summary(counts: dict[str, int], receivers: int) -> dict[str, Any]:
    """The events receivers' counters (summed over ``receivers`` processes), grouped:
    events by type, rejects by reason, invalidations, missed_events (found by
    reconciliation), unacknowledged (Redis writes kept for replay), discarded,
    kept_executions (finished tasks that published no global variable), and the
    requests the receivers made to Mistral (reconciliation, definition checks)."""
    by_type = {k.partition(".")[2]: v for k, v in sorted(counts.items()) if k.startswith("events.")}
    rejects = {k.partition(".")[2]: v for k, v in sorted(counts.items()) if k.startswith("rejected.")}
    return {
        "receivers": receivers, "events": sum(by_type.values()), "by_type": by_type,
        "rejected": sum(rejects.values()), "rejected_by_reason": rejects,
        **{name: counts.get(name, 0) for name in RECEIVER_COUNTERS},
    }


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("stats", help="hit rates and latencies aggregated across processes",
                              description="Aggregate the counters that processes publish under a namespace "
                              "(mistral_cache.observability.publisher.start_stats_publisher).")
    options.add_common(p)
    p.add_argument("--namespace", default=None, help="cache namespace (default: $MISTRAL_CACHE_NAMESPACE or 'default')")
    p.add_argument("--max-age", type=float, default=300.0, help="ignore snapshots older than this many seconds")
    p.set_defaults(func=_command)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.3f} ms"


def _command(args: argparse.Namespace) -> int:
    url, ns = options.url(args), options.namespace(args)
    try:
        client = sync_client_from_url(url, **client_options(2.0, 2.0))
        data = collect_stats(client, ns, max_age=args.max_age)
        client.close()
    except (rex.RedisError, OSError, ConfigurationError) as exc:
        print(f"mistral-cache stats: {redact(url)}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        options.print_json(data)
    else:
        _print(data, ns)
    return 0 if data["processes"] else 1


def _print(data: dict[str, Any], ns: str) -> None:
    hr = data["hit_rate"]
    print(f"namespace {ns}: {len(data['processes'])} processes publishing")
    print(f"  hit rate      {'-' if hr is None else f'{hr:.1%}'}")
    for name in ("local_hits", "redis_hits", "misses", "computes", "compute_errors", "stale_served",
                 "lock_waits", "lock_timeouts", "redis_errors", "invalidations"):
        print(f"  {name:<14}{data[name]}")
    for path, s in data["latency"].items():
        print(f"  {path + ' latency':<22} p50 {_ms(s['p50'])}  p99 {_ms(s['p99'])}  (n={s['count']})")
    for fn, ad in data["adaptive"].items():
        print(f"  adaptive {_printable(fn)}: target {ad['target_staleness']}, {ad['keys']} keys, "
              f"{ad['changes']}/{ad['observations']} checks saw a change, {ad['large_moves']} large moves")
        for what in ("change_interval", "ttl"):
            q = ad[what]
            if q:
                print(f"    {what.replace('_', ' '):<16}p10 {q['p10']:.3g}s  p50 {q['p50']:.3g}s  p90 {q['p90']:.3g}s")
    ev = data.get("events") or {}
    if ev.get("receivers"):
        print(f"  events receivers {ev['receivers']}: {ev['events']} events, {ev['invalidations']} invalidations, "
              f"{ev['missed_events']} missed_events (reconciliation), {ev['rejected']} rejected, "
              f"{ev['unacknowledged']} unacknowledged, {ev['kept_executions']} executions kept, "
              f"{ev['reconcile_requests'] + ev['definition_requests']} requests to Mistral")
        for kind, n in ev["by_type"].items():
            print(f"    {_printable(kind):<22}{n}")
        for reason, n in ev["rejected_by_reason"].items():
            print(f"    rejected {_printable(reason):<13}{n}")
    for proc in data["processes"]:
        phr = proc["hit_rate"]
        print(f"  - {_printable(proc['process'])}: {proc['lookups']} lookups, hit rate {'-' if phr is None else f'{phr:.1%}'}, "
              f"breaker {_printable(str(proc['breaker']))}, {proc['age']:.0f}s ago")
