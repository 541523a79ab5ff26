"""Scenario 1: latency per path (local hit, Redis hit, miss), median and p99, against
baselines (plain call, ``cachetools.cached(LRUCache)``, bare redis-py GET + json.loads)
and peers (dogpile.cache, cashews, aiocache; memory and Redis backends), same run.

Beside the times, the Redis round trips each path takes (redis-py clients only: this
library, bare redis-py, dogpile.cache), counted in a separate, untimed pass by a
connection class that counts its sends (a pipeline is one send), as
``tests/test_redis_tier.py`` does."""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from mistral_cache import Local

from .common import Env, atime_calls, fmt_us, have, pinned, summarize, time_calls
from .hot_paths import payload

NAME = "latency"
TITLE = "Latency per path"

def _ns() -> str:
    return f"bench-lat-{os.getpid()}-{random.randrange(1 << 30)}"


def _sizes(quick: bool) -> tuple[int, int, int]:
    return (2400, 900, 240) if quick else (20000, 5000, 2000)


def _store(rows: list[dict[str, Any]], lib: str, path: str, samples: list[float], kind: str) -> None:
    rows.append({"lib": lib, "path": path, "kind": kind, "raw": samples})


def _merge(raw_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (library, path) over all rounds, in first-seen order."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for r in raw_rows:
        m = merged.setdefault((r["lib"], r["path"]), {"lib": r["lib"], "path": r["path"], "kind": r["kind"], "raw": []})
        m["raw"].extend(r["raw"])
    rows = []
    for m in merged.values():
        samples = m.pop("raw")
        step = max(1, len(samples) // 400)
        rows.append({**m, **summarize(samples), "samples_us": [round(v * 1e6, 3) for v in samples[::step]]})
    return rows


def _ours(env: Env, rows: list[dict[str, Any]], n_local: int, n_redis: int, n_miss: int) -> None:
    from mistral_cache import Cache

    two = Cache(redis_url=env.redis_url, namespace=_ns(), local=Local(maxsize=4096))
    fl = two.cached(ttl=600, key="lat:{x}")(payload)
    fl(1)
    _store(rows, "mistral_cache", "local hit", time_calls(lambda i: fl(1), n_local), "this")
    remote = Cache(redis_url=env.redis_url, namespace=_ns(), local=None)
    fr = remote.cached(ttl=600, key="lat:{x}")(payload)
    fr(1)
    _store(rows, "mistral_cache", "redis hit", time_calls(lambda i: fr(1), n_redis), "this")
    miss = Cache(redis_url=env.redis_url, namespace=_ns(), local=Local(maxsize=4096))
    fm = miss.cached(ttl=600, key="lat:{x}")(payload)
    _store(rows, "mistral_cache", "miss", time_calls(lambda i: fm(i), n_miss, warmup=0), "this")
    for c in (two, remote, miss):
        c.close()


def _baselines(env: Env, rows: list[dict[str, Any]], n_local: int, n_redis: int, n_miss: int) -> None:
    _store(rows, "plain call", "miss", time_calls(lambda i: payload(i), n_miss), "baseline")
    _store(rows, "plain call", "local hit", time_calls(lambda i: payload(1), n_local), "baseline")
    if have("cachetools"):
        import cachetools

        cf = cachetools.cached(cachetools.LRUCache(maxsize=4096))(payload)
        cf(1)
        _store(rows, "cachetools LRUCache", "local hit", time_calls(lambda i: cf(1), n_local), "baseline")
        _store(rows, "cachetools LRUCache", "miss", time_calls(lambda i: cf(10**6 + i), n_miss, warmup=0),
               "baseline")
    import redis

    client = redis.Redis.from_url(env.redis_url)
    key = f"{_ns()}:bare"
    client.set(key, json.dumps(payload(1)))
    _store(rows, "redis-py GET+json", "redis hit",
           time_calls(lambda i: json.loads(client.get(key)), n_redis), "baseline")  # type: ignore[arg-type]

    def bare_miss(i: int) -> Any:
        k = f"{key}:{i}"
        raw = client.get(k)
        if raw is None:
            value = payload(i)
            client.set(k, json.dumps(value), ex=600)
            return value
        return json.loads(raw)

    _store(rows, "redis-py GET+json", "miss", time_calls(bare_miss, n_miss, warmup=0), "baseline")
    client.close()


def _dogpile(env: Env, rows: list[dict[str, Any]], n_local: int, n_redis: int, n_miss: int) -> None:
    from dogpile.cache import make_region

    mem = make_region().configure("dogpile.cache.memory", expiration_time=600)
    fm = mem.cache_on_arguments()(payload)
    fm(1)
    _store(rows, "dogpile.cache memory", "local hit", time_calls(lambda i: fm(1), n_local), "peer")
    _store(rows, "dogpile.cache memory", "miss", time_calls(lambda i: fm(10**6 + i), n_miss, warmup=0), "peer")
    prefix = _ns() + ":"
    red = make_region(key_mangler=lambda k: prefix + k).configure(
        "dogpile.cache.redis", expiration_time=600,
        arguments={"url": env.redis_url, "redis_expiration_time": 1200},
    )
    fr = red.cache_on_arguments()(payload)
    fr(1)
    _store(rows, "dogpile.cache redis", "redis hit", time_calls(lambda i: fr(1), n_redis), "peer")
    _store(rows, "dogpile.cache redis", "miss", time_calls(lambda i: fr(10**6 + i), n_miss, warmup=0), "peer")


TRIPS_CALLS = 5
"""Calls averaged per path when counting round trips."""


def _counting_pool(url: str) -> tuple[Any, Callable[[], int]]:
    """A redis-py pool whose connections count their sends, and a reader of the count."""
    import redis

    class Counting(redis.Connection):
        sends = 0

        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            type(self).sends += 1
            super().send_packed_command(command, check_health)

    return redis.ConnectionPool.from_url(url, connection_class=Counting), lambda: Counting.sends


def _trips(count: Callable[[], int], call: Callable[[int], Any], keys: list[int]) -> float:
    """Mean sends per call of ``call`` over ``keys``."""
    before = count()
    for k in keys:
        call(k)
    return round((count() - before) / len(keys), 2)


def round_trips(env: Env) -> dict[str, dict[str, float]]:
    """lib -> path -> Redis round trips per call, for the paths the latency table times
    (the miss as timed: a new key on a warm cache), plus this library's miss on a key
    it held past its TTL, and its first call in a fresh process's cache."""
    import redis

    from mistral_cache import Cache, Clock

    out: dict[str, dict[str, float]] = {}
    new = list(range(10**6, 10**6 + TRIPS_CALLS))
    pool, count = _counting_pool(env.redis_url)
    now = [1_000_000.0]
    clock = Clock(time=lambda: now[0])
    two = Cache(redis=redis.Redis(connection_pool=pool), namespace=_ns(), local=Local(maxsize=4096, coherence=False),
                refresh=None, clock=clock)
    f2 = two.cached(ttl=600, key="lat:{x}")(payload)
    # The first call also connects (redis-py's handshake) and loads scripts.
    ours = out["mistral_cache"] = {"first call (connect, scripts)": _trips(count, f2, [1])}
    f2(1)
    ours["local hit"] = _trips(count, lambda i: f2(1), new)
    ours["miss"] = _trips(count, f2, new)
    f2(2)
    now[0] += 601  # past the TTL: Redis still holds the bytes, and this process held the values
    f2(2)  # the first such miss loads the lock scripts: not counted
    ours["miss (expired, held here)"] = _trips(count, f2, new)
    remote = Cache(redis=redis.Redis(connection_pool=pool), namespace=_ns(), local=None, refresh=None)
    fr = remote.cached(ttl=600, key="lat:{x}")(payload)
    fr(1)
    ours["redis hit"] = _trips(count, lambda i: fr(1), new)
    # A miss once most first reads of the function found their entry: it then reads
    # plainly (cheaper on a hit), and a miss pays the lock in a round trip of its own.
    # (One uncounted such miss first: the pool may open a connection for the lock script.)
    sent = 0.0
    for k in range(10**7, 10**7 + TRIPS_CALLS + 1):
        for _ in range(64):
            fr(1)
        if k == 10**7:
            fr(k)
        else:
            sent += _trips(count, fr, [k])
    ours["miss (after Redis hits)"] = round(sent / TRIPS_CALLS, 2)
    for c in (two, remote):
        c.close()

    client = redis.Redis(connection_pool=pool)
    key = f"{_ns()}:bare"
    client.set(key, json.dumps(payload(1)))

    def bare_miss(i: int) -> Any:
        raw = client.get(f"{key}:{i}")
        if raw is None:
            client.set(f"{key}:{i}", json.dumps(payload(i)), ex=600)
        return raw

    out["redis-py GET+json"] = {"redis hit": _trips(count, lambda i: client.get(key), new),
                                "miss": _trips(count, bare_miss, new)}
    if have("dogpile.cache"):
        from dogpile.cache import make_region

        prefix = _ns() + ":"
        red = make_region(key_mangler=lambda k: prefix + k).configure(
            "dogpile.cache.redis", expiration_time=600,
            arguments={"connection_pool": pool, "redis_expiration_time": 1200},
        )
        fd = red.cache_on_arguments()(payload)
        fd(1)
        out["dogpile.cache redis"] = {"redis hit": _trips(count, lambda i: fd(1), new), "miss": _trips(count, fd, new)}
    pool.disconnect()
    return out


async def _apayload(x: Any) -> dict[str, Any]:
    return payload(x)


async def _cashews(env: Env, rows: list[dict[str, Any]], n_local: int, n_redis: int, n_miss: int) -> None:
    from cashews import Cache as CashewsCache

    for backend, url, path in (("mem", "mem://", "local hit"), ("redis", env.redis_url, "redis hit")):
        c = CashewsCache()
        c.setup(url)
        prefix = _ns()
        f = c(ttl=600, key=prefix + ":{x}")(_apayload)
        await f(1)
        lib = f"cashews {backend}"
        _store(rows, lib, path, await atime_calls(lambda i: f(1), n_local if backend == "mem" else n_redis), "peer")
        _store(rows, lib, "miss", await atime_calls(lambda i: f(10**6 + i), n_miss, warmup=0), "peer")
        await c.close()


async def _aiocache(env: Env, rows: list[dict[str, Any]], n_local: int, n_redis: int, n_miss: int) -> None:
    from aiocache import RedisCache, SimpleMemoryCache, cached

    parts = urlsplit(env.redis_url)
    db = int((parts.path or "/0").strip("/") or 0)
    variants: list[tuple[str, Callable[..., Any], dict[str, Any], str]] = [
        ("memory", SimpleMemoryCache, {}, "local hit"),
        ("redis", RedisCache, {"endpoint": parts.hostname or "127.0.0.1", "port": parts.port or 6379, "db": db},
         "redis hit"),
    ]
    for backend, cls, kw, path in variants:
        f = cached(ttl=600, cache=cls, namespace=_ns(), **kw)(_apayload)
        await f(1)
        lib = f"aiocache {backend}"
        _store(rows, lib, path, await atime_calls(lambda i: f(1), n_local if backend == "memory" else n_redis), "peer")
        _store(rows, lib, "miss", await atime_calls(lambda i: f(10**6 + i), n_miss, warmup=0), "peer")
        with_cache = getattr(f, "cache", None)
        if with_cache is not None:
            await with_cache.close()


ROUNDS = 3
"""Each library is measured in this many interleaved rounds, so a burst of load on a
shared machine falls on every library rather than on one."""


def run(env: Env) -> dict[str, Any]:
    n_local, n_redis, n_miss = (n // ROUNDS for n in _sizes(env.quick))
    raw: list[dict[str, Any]] = []
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("mistral_cache", lambda: _ours(env, raw, n_local, n_redis, n_miss)),
        ("baselines", lambda: _baselines(env, raw, n_local, n_redis, n_miss)),
    ]
    if have("dogpile.cache"):
        steps.append(("dogpile.cache", lambda: _dogpile(env, raw, n_local, n_redis, n_miss)))
    if have("cashews"):
        steps.append(("cashews", lambda: asyncio.run(_cashews(env, raw, n_local, n_redis, n_miss))))
    if have("aiocache"):
        steps.append(("aiocache", lambda: asyncio.run(_aiocache(env, raw, n_local, n_redis, n_miss))))
    errors: dict[str, str] = {}
    total = len(steps) * ROUNDS
    with pinned(env) as cpu:
        for rnd in range(ROUNDS):
            for i, (label, step) in enumerate(steps):
                env.progress(f"{label} (round {rnd + 1}/{ROUNDS})", rnd * len(steps) + i, total)
                if label in errors:
                    continue
                try:
                    step()
                except Exception as exc:  # noqa: BLE001 - a broken peer must not sink the run
                    errors[label] = f"{type(exc).__name__}: {exc}"
                    env.say(f"\n  ! {label} failed: {errors[label]}")
    env.progress("done", total, total)
    rows = _merge(raw)
    trips: dict[str, dict[str, float]] = {}
    try:
        trips = round_trips(env)
    except Exception as exc:  # noqa: BLE001 - a count that fails must not sink the timings
        errors["round trips"] = f"{type(exc).__name__}: {exc}"
    for r in rows:
        r["round_trips"] = 0.0 if r["lib"] in LOCAL_ONLY else trips.get(r["lib"], {}).get(r["path"])
    return {"rows": rows, "ratios": ratios(rows), "errors": errors, "rounds": ROUNDS, "pinned_cpu": cpu,
            "round_trips": trips,
            "samples": {"local": n_local * ROUNDS, "redis": n_redis * ROUNDS, "miss": n_miss * ROUNDS}}


def _median(rows: list[dict[str, Any]], lib: str, path: str) -> float | None:
    for r in rows:
        if r["lib"] == lib and r["path"] == path:
            return float(r["median_us"])
    return None


LOCAL_ONLY = {"plain call", "cachetools LRUCache", "dogpile.cache memory", "cashews mem", "aiocache memory"}


def ratios(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each median over the relevant baseline's median (>1 means slower than the baseline)."""
    base = {
        "local hit": _median(rows, "cachetools LRUCache", "local hit"),
        "redis hit": _median(rows, "redis-py GET+json", "redis hit"),
        "miss": _median(rows, "redis-py GET+json", "miss"),
    }
    base["local miss"] = _median(rows, "cachetools LRUCache", "miss")
    out: dict[str, Any] = {"baseline_for_path": {
        "local hit": "cachetools LRUCache", "redis hit": "redis-py GET+json",
        "miss": "redis-py GET+json (two-tier/Redis libraries), cachetools LRUCache (in-memory ones)"}}
    for r in rows:
        path = r["path"]
        if r["lib"] == "plain call":
            continue
        if path == "miss" and r["lib"] in LOCAL_ONLY:
            path = "local miss"
        b = base.get(path)
        if b and r["median_us"]:
            out.setdefault(r["lib"], {})[r["path"]] = round(r["median_us"] / b, 3)
    plain = _median(rows, "plain call", "miss")
    ours_miss = _median(rows, "mistral_cache", "miss")
    redis_hit = _median(rows, "redis-py GET+json", "redis hit")
    if plain is not None and ours_miss is not None and redis_hit:
        out["mistral_cache_miss_overhead_round_trips"] = round((ours_miss - plain) / redis_hit, 2)
    return out


def table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["library", "path", "median", "p99", "× baseline", "round trips"]
    body = []
    rat = result["ratios"]
    for r in result["rows"]:
        ratio = rat.get(r["lib"], {}).get(r["path"])
        trips = r.get("round_trips")
        body.append([r["lib"], r["path"], fmt_us(r["median_us"]), fmt_us(r["p99_us"]),
                     "-" if ratio is None else f"{ratio:.2f}", "-" if trips is None else f"{trips:g}"])
    return head, body


def plot(result: dict[str, Any], out: str) -> list[str]:
    import matplotlib.pyplot as plt

    paths = ["local hit", "redis hit", "miss"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 6))
    for ax, path in zip(axes, paths, strict=True):
        rows = [r for r in result["rows"] if r["path"] == path and r["samples_us"]]
        if not rows:
            continue
        ax.boxplot([r["samples_us"] for r in rows], vert=False, showfliers=False)
        ax.set_yticks(range(1, len(rows) + 1), [r["lib"] for r in rows], fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("µs per call (log)")
        ax.set_title(path)
        for i, r in enumerate(rows, start=1):
            colour = "tab:red" if r["kind"] == "this" else ("tab:gray" if r["kind"] == "baseline" else "tab:blue")
            ax.get_yticklabels()[i - 1].set_color(colour)
    fig.suptitle("Latency per path (box: p25–p75, whiskers 1.5 IQR; red = mistral_cache, grey = baselines)")
    fig.tight_layout()
    name = os.path.join(out, "latency.png")
    fig.savefig(name, dpi=90)
    plt.close(fig)
    return [name]


def notes(result: dict[str, Any]) -> str:
    rows, rat = result["rows"], result["ratios"]
    ours = rat.get("mistral_cache", {})
    lines = [
        "Ratios are medians over the baseline's median in the same run (local hit: "
        "`cachetools.cached(LRUCache)`; Redis hit and two-tier misses: bare redis-py GET + json.loads, "
        "and GET-else-SET for a miss; in-memory libraries' misses: cachetools' miss).",
        "",
    ]
    if result.get("pinned_cpu") is not None:
        lines[-1:-1] = ["Measured with this process and the embedded Redis pinned to CPU "
                        f"{result['pinned_cpu']} (the same condition for every library).", ""]
    for path, target in (("local hit", 1.0), ("redis hit", 1.10)):
        r = ours.get(path)
        if r is not None:
            verdict = "meets" if r <= target else "misses"
            lines.append(f"- mistral_cache {path}: {r:.2f}× the baseline ({verdict} the target of "
                         f"≤ {target:.2f}×).")
    trips = rat.get("mistral_cache_miss_overhead_round_trips")
    if trips is not None:
        lines.append(f"- mistral_cache miss: takes as long as about {trips:.1f} bare GET+json calls on top of the "
                     "function (the target: at most 2 Redis round trips).")
    counted = result.get("round_trips", {}).get("mistral_cache")
    if counted:
        lines.append("- mistral_cache round trips counted (sends; a pipeline is one): "
                     + ", ".join(f"{path} {n:g}" for path, n in counted.items())
                     + ". Round trips are counted for redis-py clients only (cashews and aiocache: -).")
    peers = sorted({r["lib"] for r in rows if r["kind"] == "peer"})
    for path in ("local hit", "redis hit"):
        faster = [p for p in peers if rat.get(p, {}).get(path) is not None and ours.get(path) is not None
                  and rat[p][path] < ours[path]]
        if faster:
            lines.append(f"- peers faster than mistral_cache on the {path} path: {', '.join(faster)}.")
    return "\n".join(lines)
