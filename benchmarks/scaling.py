"""Scenario 4: scaling. Throughput of cached reads with 1, 2, 4 and 8 processes sharing
one Redis: this library's Redis-hit path (local tier off, so every read is a round trip)
and its two-tier path (local hits after the first read), against bare redis-py GET +
json.loads and dogpile.cache's Redis backend (``cache_on_arguments``, its default
pickle; every read a round trip, as ours without the local tier). Keys are warm;
each process reads a spread of 64 keys for a fixed time."""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

from mistral_cache import Local

from .common import Env, have, mp_context

NAME = "scaling"
TITLE = "Scaling: cached reads, processes sharing one Redis"
KEYS = 64
VARIANTS = ["mistral_cache redis hit", "mistral_cache two-tier", "redis-py GET+json", "dogpile.cache redis hit"]


def _value(i: int) -> dict[str, Any]:
    return {"id": i, "state": "SUCCESS", "workflow_name": f"wf_{i:04d}", "tags": ["bench"], "pad": "x" * 200}


def _reader(variant: str, url: str, ns: str, commands: Any, results: Any) -> None:
    """A worker kept for every point of one variant: warms up once, then for each
    ``(start_at, seconds)`` command reads from ``start_at`` for ``seconds``."""
    cache: Any = None
    try:
        if variant == "redis-py GET+json":
            import redis

            r = redis.Redis.from_url(url)

            def read(i: int) -> Any:
                return json.loads(r.get(f"{ns}:{i}"))  # type: ignore[arg-type]
        elif variant.startswith("dogpile"):
            from dogpile.cache import make_region

            region = make_region(key_mangler=lambda k: f"{ns}:{k}").configure(
                "dogpile.cache.redis", expiration_time=600, arguments={"url": url, "redis_expiration_time": 1200})
            read = region.cache_on_arguments()(_value)
        else:
            from mistral_cache import Cache

            cache = Cache(redis_url=url, namespace=ns, local=Local(maxsize=0 if variant.endswith("redis hit") else 4096))
            read = cache.cached(ttl=600, key="k:{i}")(_value)
        for i in range(KEYS):
            read(i)  # warm: connections, and the local tier where there is one
        results.put({"ready": os.getpid()})
    except Exception as exc:  # noqa: BLE001
        results.put({"ready": os.getpid(), "error": f"{type(exc).__name__}: {exc}"})
        return
    rng = random.Random(os.getpid())
    while True:
        command = commands.get()
        if command is None:
            if cache is not None:
                cache.close()
            return
        start_at, seconds = command
        time.sleep(max(0.0, start_at - time.time()))
        n = 0
        try:
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                for _ in range(25):
                    read(rng.randrange(KEYS))
                n += 25
            extra: dict[str, Any] = {}
            if cache is not None:
                st = cache.stats()
                extra = {k: st.get(k) for k in ("local_hits", "redis_hits", "misses", "redis_errors")}
                extra["breaker"] = (st.get("breaker") or {}).get("transitions")
            results.put({"reads": n, "cache_stats": extra})
        except Exception as exc:  # noqa: BLE001
            results.put({"reads": n, "error": f"{type(exc).__name__}: {exc}"})


def measure(variant: str, url: str, counts: list[int], seconds: float, env: Env, done: int, total: int) -> list[dict[str, Any]]:
    import redis

    ns = f"bench-scale-{os.getpid()}-{random.randrange(1 << 30)}"
    if variant == "redis-py GET+json":
        r = redis.Redis.from_url(url)
        r.mset({f"{ns}:{i}": json.dumps(_value(i)) for i in range(KEYS)})
        r.close()
    ctx = mp_context()
    results = ctx.Queue()
    queues = [ctx.Queue() for _ in range(max(counts))]
    kids = [ctx.Process(target=_reader, args=(variant, url, ns, q, results), daemon=True) for q in queues]
    for k in kids:
        k.start()
    errors = [m["error"] for m in (results.get(timeout=120) for _ in kids) if "error" in m]
    rows = []
    try:
        for i, procs in enumerate(counts):
            env.progress(f"{variant}, {procs} process(es)", done + i, total)
            if errors:
                rows.append({"variant": variant, "processes": procs, "reads": 0, "reads_per_s": 0, "errors": errors[:2]})
                continue
            start_at = time.time() + 0.05
            for q in queues[:procs]:
                q.put((start_at, seconds))
            outs = [results.get(timeout=60 + seconds) for _ in range(procs)]
            reads = sum(o["reads"] for o in outs)
            rows.append({"variant": variant, "processes": procs, "reads": reads, "reads_per_s": round(reads / seconds),
                         "errors": [o["error"] for o in outs if "error" in o][:2],
                         "cache_stats": [o.get("cache_stats") for o in outs if o.get("cache_stats")][:2]})
    finally:
        for q in queues:
            q.put(None)
        for k in kids:
            k.join(timeout=2)
            if k.is_alive():
                k.terminate()
    return rows


def run(env: Env) -> dict[str, Any]:
    counts = [1, 2, 4, 8]
    seconds = 0.5 if env.quick else 5.0
    rows: list[dict[str, Any]] = []
    total = len(counts) * len(VARIANTS)
    for vi, variant in enumerate(VARIANTS):
        if variant.startswith("dogpile") and not have("dogpile.cache"):
            env.say("  ! dogpile.cache missing: its Redis backend skipped (pip install dogpile.cache)")
            continue
        rows += measure(variant, env.redis_url, counts, seconds, env, vi * len(counts), total)
    env.progress("scaling done", total, total)
    return {"rows": rows, "seconds_per_point": seconds, "cpus": os.cpu_count(), "ratios": ratios(rows)}


BASELINE = "redis-py GET+json"
#: Issue 15's target: Redis-hit reads/s at 8 processes at least this share of the bare GET's.
TARGET = 0.9


def ratios(rows: list[dict[str, Any]]) -> dict[str, dict[int, float]]:
    """variant -> processes -> its reads/s over the bare GET's at the same count (same run)."""
    base = {r["processes"]: r["reads_per_s"] for r in rows if r["variant"] == BASELINE}
    out: dict[str, dict[int, float]] = {}
    for r in rows:
        b = base.get(r["processes"])
        if r["variant"] != BASELINE and b:
            out.setdefault(r["variant"], {})[r["processes"]] = round(r["reads_per_s"] / b, 3)
    return out


def table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    counts = sorted({r["processes"] for r in result["rows"]})
    head = ["reads/s"] + [f"{c} proc" for c in counts]
    body = []
    rat = result.get("ratios") or ratios(result["rows"])
    for variant in VARIANTS:
        by = {r["processes"]: r for r in result["rows"] if r["variant"] == variant}
        body.append([variant] + [f"{by[c]['reads_per_s']:,}" if c in by else "-" for c in counts])
    for variant in VARIANTS:  # each Redis-read variant against the bare GET, per process count
        share = {int(k): v for k, v in (rat.get(variant) or {}).items()}  # JSON made the keys str
        if share and "two-tier" not in variant:
            body.append([f"{variant} / {BASELINE}"] + [f"{share[c]:.2f}x" if c in share else "-" for c in counts])
    return head, body


def plot(result: dict[str, Any], out: str) -> list[str]:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for variant in VARIANTS:
        rows = sorted((r for r in result["rows"] if r["variant"] == variant), key=lambda r: r["processes"])
        ax.plot([r["processes"] for r in rows], [r["reads_per_s"] for r in rows], "o-", label=variant)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("processes")
    ax.set_ylabel("cached reads per second (all processes)")
    ax.set_title(f"Scaling on {result['cpus']} CPUs, one Redis")
    ax.legend(fontsize=8)
    fig.tight_layout()
    name = os.path.join(out, "scaling.png")
    fig.savefig(name, dpi=90)
    plt.close(fig)
    return [name]


def notes(result: dict[str, Any]) -> str:
    text = (f"Each point runs {result['seconds_per_point']} s on a {result['cpus']}-CPU machine that also runs the "
            "Redis server, so the Redis-bound curves flatten once processes outnumber cores; local-tier reads "
            "scale with cores only.")
    share = {int(k): v for k, v in (result.get("ratios") or ratios(result["rows"])).get("mistral_cache redis hit", {}).items()}
    top = max(share) if share else None
    if top is not None:
        verdict = "meets" if share[top] >= TARGET else "misses"
        text += (f" mistral_cache's Redis hit at {top} processes: {share[top]:.2f}x the bare GET's reads/s "
                 f"({verdict} the target of at least {TARGET:.2f}x).")
    return text
