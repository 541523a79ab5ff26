"""Operations: cross-process statistics, invalidation and a health check.

Subcommands of ``mistral-cache`` (added through :func:`register`):

- ``stats``: hit rates and latencies aggregated over every process that
  publishes its counters under the namespace (:func:`start_stats_publisher`,
  or :func:`publish_stats` once);
- ``invalidate KEY | --tag T | --namespace N``: the same invalidation a process
  makes (tombstone or generation bump, announced to every local tier);
- ``doctor``: connectivity, server version, round-trip time,
  ``maxmemory-policy``, cluster/sentinel topology, clock skew.

All take ``--redis-url`` (default ``$MISTRAL_CACHE_REDIS_URL``) and ``--json``.
Exit codes: 0 fine, 1 warnings (doctor) or nothing found, 2 errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import socket
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis.exceptions as rex

from .adaptive import _AdaptiveStats, merge_stats
from .exceptions import ConfigurationError
from .stats import COUNTERS, Histogram, Stats
from .tiers.redis import FAILED, Keyspace, client_options, redact, sync_client_from_url, topology

if TYPE_CHECKING:
    from .cache import Cache

DEFAULT_URL = "redis://127.0.0.1:6379/0"
SKEW_WARN_SECONDS = 0.5
log = logging.getLogger("mistral_cache.ops")


# -- statistics published by processes --------------------------------------
def stats_key(keyspace: Keyspace) -> str:
    """One hash per namespace: a field per publishing process, its value a JSON snapshot."""
    return keyspace.base + "stats"


def raw_stats(cache: Cache) -> Stats:
    """Every function's counters and histograms of one cache, merged (histograms kept whole)."""
    total = Stats()
    total.merge(cache.stats_extra)
    for engine in list(cache._engines):
        total.merge(engine.stats)
    return total


def _encode(stats: Stats) -> dict[str, Any]:
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


def _decode_into(total: Stats, data: dict[str, Any]) -> None:
    """Add one published snapshot to ``total``; ValueError (and nothing added) if any
    field is not what :func:`_encode` writes: anyone who can write to Redis can
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


def adaptive_stats(cache: Cache) -> dict[str, Any]:
    """Per function with a learning TTL: what it learnt (see :meth:`Adaptive.stats`)."""
    out = {}
    for engine in list(cache._engines):
        st = engine.stats
        if isinstance(st, _AdaptiveStats):
            out[engine.name] = st.policy.stats(st.fn_name)
    return out


def process_id(cache: Cache) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{cache.sender}"


def publish_stats(cache: Cache, *, ttl: float = 60.0) -> bool:
    """Publish this process's counters under the cache's namespace (fail open: False if Redis failed)."""
    tier = cache.redis
    if tier is None:
        return False
    snapshot = _encode(raw_stats(cache))
    snapshot["adaptive"] = adaptive_stats(cache)
    snapshot["ts"] = time.time()
    snapshot["breaker"] = tier.breaker.state
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


def collect_stats(client: Any, namespace: str, *, max_age: float = 300.0) -> dict[str, Any]:
    """Aggregate what the processes of ``namespace`` published within ``max_age`` seconds."""
    now = time.time()
    raw = client.hgetall(stats_key(Keyspace(namespace)))
    total = Stats()
    processes = []
    learnt: dict[str, list[dict[str, Any]]] = {}
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
            _decode_into(proc, data)
            adaptive = data.get("adaptive") or {}
            if not isinstance(adaptive, dict):
                raise ValueError("adaptive must be an object")
            parts = {str(fn): _adaptive_part(part) for fn, part in adaptive.items()}
            breaker = data.get("breaker")
            if breaker is not None and not isinstance(breaker, str):
                raise ValueError("breaker must be a string")
        except (ValueError, TypeError, AttributeError, KeyError, OverflowError, RecursionError) as exc:
            log.warning("stats: ignoring the unreadable snapshot of %r: %s", name, type(exc).__name__)
            continue
        total.merge(proc)
        for fn, part in parts.items():
            learnt.setdefault(fn, []).append(part)
        snap = proc.snapshot()
        processes.append({
            "process": name,
            "age": round(age, 3),
            "breaker": breaker,
            "hit_rate": snap["hit_rate"],
            "lookups": snap["local_hits"] + snap["redis_hits"] + snap["misses"],
        })
    out = total.snapshot()
    out["namespace"] = namespace
    out["processes"] = processes
    out["adaptive"] = {fn: merge_stats(parts) for fn, parts in sorted(learnt.items())}
    return out


# -- invalidation ---------------------------------------------------------------
def invalidate(url: str, namespace: str, *, key: str | None = None, tags: Sequence[str] = (), clear: bool = False) -> dict[str, Any]:
    """Invalidate like a process would (announced to every local tier); raises on Redis errors."""
    from .cache import Cache

    cache = Cache(url, namespace=namespace, local_maxsize=0, coherence=False, strict=True,
                  socket_timeout=2.0, connect_timeout=2.0)
    try:
        done: dict[str, Any] = {"namespace": namespace}
        if key is not None:
            cache.invalidate(key)
            done["key"] = key
        if tags:
            cache.invalidate_tags(*tags)
            done["tags"] = list(tags)
        if clear:
            cache.clear()
            done["cleared"] = True
        return done
    finally:
        cache.close()


# -- doctor -------------------------------------------------------------------------
def _node_clients(client: Any, kind: str) -> list[tuple[str, Any]]:
    if kind != "cluster":
        return [("", client)]
    out = []
    for node in client.get_nodes():
        conn = node.redis_connection or client.get_redis_connection(node)
        out.append((f"{node.host}:{node.port}", conn))
    return out


def _info(conn: Any, section: str) -> dict[str, Any]:
    data: dict[str, Any] = conn.info(section)
    return data


def doctor(url: str, *, pings: int = 20) -> dict[str, Any]:
    """Run every check; ``status`` is ``ok``, ``warn`` or ``error``."""
    checks: list[dict[str, Any]] = []
    report: dict[str, Any] = {"url": redact(url), "checks": checks}

    def check(name: str, status: str, detail: str, **extra: Any) -> None:
        checks.append({"name": name, "status": status, "detail": detail, **extra})

    try:
        client = sync_client_from_url(url, **client_options(2.0, 2.0))
        t0 = time.perf_counter()
        client.ping()
        check("connect", "ok", f"connected in {(time.perf_counter() - t0) * 1000:.1f} ms")
    except (rex.RedisError, OSError, ValueError) as exc:
        check("connect", "error", f"{type(exc).__name__}: {exc}")
        report["status"] = "error"
        return report
    try:
        kind = topology(client)
        report["topology"] = kind
        nodes = _node_clients(client, kind)
        rtts = []
        for _ in range(pings):
            t0 = time.perf_counter()
            client.ping()
            rtts.append(time.perf_counter() - t0)
        med = statistics.median(rtts) * 1000
        check("rtt", "ok" if med < 5 else "warn", f"PING median {med:.3f} ms, max {max(rtts) * 1000:.3f} ms over {pings}",
              median_ms=round(med, 4), max_ms=round(max(rtts) * 1000, 4))

        versions = {}
        for name, conn in nodes:
            info = _info(conn, "server")
            versions[name or "server"] = str(info.get("redis_version"))
        low = min(versions.values(), key=lambda v: tuple(int(p) for p in v.split(".")[:3] if p.isdigit()))
        major = int(low.split(".")[0]) if low.split(".")[0].isdigit() else 0
        check("version", "ok" if major >= 6 else "warn",
              f"redis {', '.join(sorted(set(versions.values())))}" + ("" if major >= 6 else " (6.2+ recommended)"),
              versions=versions)

        policies = {}
        for name, conn in nodes:
            try:
                got = conn.config_get("maxmemory-policy")
                policies[name or "server"] = str(got.get("maxmemory-policy", "?"))
            except rex.ResponseError:
                policies[name or "server"] = "unknown (CONFIG disabled)"
        # Counters outlive their entries (longer TTLs, read with every entry), which
        # volatile-ttl/lru/lfu respect and a random pick does not.
        bad = sorted({p for p in policies.values() if p.startswith("allkeys-") or p == "volatile-random"})
        if bad:
            check("maxmemory-policy", "warn",
                  f"{', '.join(bad)}: may evict a generation counter before the entries that depend on it, which can "
                  "bring invalidated entries back; use volatile-lru/volatile-lfu/volatile-ttl or noeviction",
                  policies=policies)
        elif any(p.startswith("unknown") for p in policies.values()):
            check("maxmemory-policy", "warn", "could not read maxmemory-policy (CONFIG disabled)", policies=policies)
        else:
            check("maxmemory-policy", "ok", ", ".join(sorted(set(policies.values()))), policies=policies)

        status, detail, extra = _topology(client, kind, nodes)
        check("topology", status, detail, **extra)

        skews = []
        for _name, conn in nodes:
            t0 = time.time()
            sec, usec = conn.time()
            t1 = time.time()
            skews.append((sec + usec / 1e6) - (t0 + t1) / 2)
        worst = max(skews, key=abs)
        check("clock-skew", "ok" if abs(worst) < SKEW_WARN_SECONDS else "warn",
              f"server clock minus this host's: {worst * 1000:+.1f} ms (worst of {len(skews)})", skew_ms=round(worst * 1000, 3))
    except (rex.RedisError, OSError) as exc:
        check("probe", "error", f"{type(exc).__name__}: {exc}")
    finally:
        client.close()
    statuses = {c["status"] for c in checks}
    report["status"] = "error" if "error" in statuses else "warn" if "warn" in statuses else "ok"
    return report


def _topology(client: Any, kind: str, nodes: list[tuple[str, Any]]) -> tuple[str, str, dict[str, Any]]:
    if kind == "cluster":
        info = client.cluster_info(target_nodes=client.get_random_node())
        masters = [n for n in client.get_nodes() if n.server_type == "primary"]
        replicas = [n for n in client.get_nodes() if n.server_type != "primary"]
        state = str(info.get("cluster_state"))
        slots = int(info.get("cluster_slots_ok", 0))
        status = "ok" if state == "ok" and slots == 16384 else "error"
        warn = "" if replicas else " (no replicas: a master failure loses its slots until it returns)"
        return ("ok" if status == "ok" and replicas else "warn" if status == "ok" else "error",
                f"cluster: state {state}, {len(masters)} masters, {len(replicas)} replicas, {slots}/16384 slots ok{warn}",
                {"cluster_state": state, "masters": len(masters), "replicas": len(replicas), "slots_ok": slots})
    repl = _info(client, "replication")
    role = str(repl.get("role"))
    n_replicas = int(repl.get("connected_slaves", 0))
    if kind == "sentinel":
        pool = client.connection_pool
        service = pool.service_name
        sentinels = pool.sentinel_manager.sentinels
        master = pool.sentinel_manager.discover_master(service)
        alive = 0
        for s in sentinels:
            try:
                s.ping()
                alive += 1
            except (rex.RedisError, OSError):
                pass
        status = "ok" if alive * 2 > len(sentinels) and n_replicas > 0 and role == "master" else "warn"
        return (status, f"sentinel: service {service!r} primary {master[0]}:{master[1]} ({role}), {n_replicas} replicas, "
                f"{alive}/{len(sentinels)} sentinels answering",
                {"service": service, "primary": f"{master[0]}:{master[1]}", "replicas": n_replicas, "sentinels_alive": alive})
    status = "ok" if role == "master" else "warn"
    detail = f"standalone: role {role}, {n_replicas} replicas" + ("" if role == "master" else " (writes will fail on a replica)")
    return status, detail, {"role": role, "replicas": n_replicas}


# -- the command line ---------------------------------------------------------------
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis-url", default=None, help="Redis URL (default: $MISTRAL_CACHE_REDIS_URL or redis://127.0.0.1:6379/0); "
                   "redis+cluster://h:p,h:p and redis+sentinel://h:p,h:p/service also work")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _url(args: argparse.Namespace) -> str:
    return str(args.redis_url or os.environ.get("MISTRAL_CACHE_REDIS_URL") or DEFAULT_URL)


def _namespace(args: argparse.Namespace) -> str:
    return str(args.namespace or os.environ.get("MISTRAL_CACHE_NAMESPACE") or "default")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("stats", help="hit rates and latencies aggregated across processes",
                              description="Aggregate the counters that processes publish under a namespace "
                              "(mistral_cache.ops.start_stats_publisher).")
    _common(p)
    p.add_argument("--namespace", default=None, help="cache namespace (default: $MISTRAL_CACHE_NAMESPACE or 'default')")
    p.add_argument("--max-age", type=float, default=300.0, help="ignore snapshots older than this many seconds")
    p.set_defaults(func=_stats_cmd)

    p = subparsers.add_parser("invalidate", help="invalidate a key, tags, or a whole namespace, in every process",
                              description="invalidate KEY | --tag T [--tag T2] | --namespace N (alone: clear the namespace)")
    _common(p)
    p.add_argument("key", nargs="?", help="full cache key (as fn.cache_key(...) returns it)")
    p.add_argument("--tag", action="append", default=[], help="a tag to invalidate (repeatable)")
    p.add_argument("--namespace", default=None, help="the namespace; given without KEY or --tag, clears it")
    p.set_defaults(func=_invalidate_cmd)

    p = subparsers.add_parser("doctor", help="check connectivity, version, RTT, eviction policy, topology, clock skew")
    _common(p)
    p.set_defaults(func=_doctor_cmd)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.3f} ms"


def _stats_cmd(args: argparse.Namespace) -> int:
    url, ns = _url(args), _namespace(args)
    try:
        client = sync_client_from_url(url, **client_options(2.0, 2.0))
        data = collect_stats(client, ns, max_age=args.max_age)
        client.close()
    except (rex.RedisError, OSError, ConfigurationError) as exc:
        print(f"mistral-cache stats: {redact(url)}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        _print_json(data)
    else:
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
        for proc in data["processes"]:
            phr = proc["hit_rate"]
            print(f"  - {_printable(proc['process'])}: {proc['lookups']} lookups, hit rate {'-' if phr is None else f'{phr:.1%}'}, "
                  f"breaker {_printable(str(proc['breaker']))}, {proc['age']:.0f}s ago")
    return 0 if data["processes"] else 1


def _invalidate_cmd(args: argparse.Namespace) -> int:
    url = _url(args)
    if args.key is None and not args.tag and args.namespace is None:
        print("mistral-cache invalidate: give KEY, --tag T or --namespace N", file=sys.stderr)
        return 2
    ns = _namespace(args)
    try:
        done = invalidate(url, ns, key=args.key, tags=args.tag, clear=args.key is None and not args.tag)
    except Exception as exc:  # TierUnavailable, ConfigurationError, ...
        print(f"mistral-cache invalidate: {redact(url)}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        _print_json(done)
    else:
        what = [f"key {done['key']!r}"] if "key" in done else []
        what += [f"tag {t!r}" for t in done.get("tags", [])]
        what += ["the whole namespace"] if done.get("cleared") else []
        print(f"invalidated {', '.join(what)} in namespace {ns!r}")
    return 0


def _doctor_cmd(args: argparse.Namespace) -> int:
    report = doctor(_url(args))
    if args.json:
        _print_json(report)
    else:
        print(f"mistral-cache doctor: {report['url']} ({report.get('topology', '?')})")
        for c in report["checks"]:
            print(f"  [{c['status'].upper():5}] {c['name']:<17} {c['detail']}")
        print(f"status: {report['status']}")
    return {"ok": 0, "warn": 1}.get(report["status"], 2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mistral-cache")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "StatsPublisher", "collect_stats", "doctor", "invalidate", "main", "publish_stats", "raw_stats",
    "register", "start_stats_publisher",
]
