"""Scenario 4: scaling. Throughput of cached reads with 1, 2, 4 and 8 processes sharing
one Redis: this library's Redis-hit path (local tier off, so every read is a round trip)
and its two-tier path (local hits after the first read), against bare redis-py GET +
json.loads. Keys are warm; each process reads a spread of 256 keys for a fixed time."""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

from .common import Env, mp_context

NAME = "scaling"
TITLE = "Scaling: cached reads, processes sharing one Redis"
KEYS = 256
VARIANTS = ["mistral_cache redis hit", "mistral_cache two-tier", "redis-py GET+json"]


def _value(i: int) -> dict[str, Any]:
    return {"id": i, "state": "SUCCESS", "workflow_name": f"wf_{i:04d}", "tags": ["bench"], "pad": "x" * 200}


def _reader(variant: str, url: str, ns: str, seconds: float, ready: Any, go: Any, results: Any) -> None:
    try:
        if variant == "redis-py GET+json":
            import redis

            r = redis.Redis.from_url(url)

            def read(i: int) -> Any:
                return json.loads(r.get(f"{ns}:{i}"))  # type: ignore[arg-type]
        else:
            from mistral_cache import Cache

            cache = Cache(redis_url=url, namespace=ns, local_maxsize=0 if variant.endswith("redis hit") else 4096)
            read = cache.cached(ttl=600, key="k:{i}")(_value)
        for i in range(KEYS):
            read(i)  # warm: connections, and the local tier where there is one
        ready.put(os.getpid())
        go.wait()
        n = 0
        rng = random.Random(os.getpid())
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            for _ in range(50):
                read(rng.randrange(KEYS))
            n += 50
        results.put({"reads": n, "seconds": seconds})
    except Exception as exc:  # noqa: BLE001
        ready.put(os.getpid())
        results.put({"reads": 0, "seconds": seconds, "error": f"{type(exc).__name__}: {exc}"})


def measure(variant: str, url: str, procs: int, seconds: float) -> dict[str, Any]:
    import redis

    ns = f"bench-scale-{os.getpid()}-{random.randrange(1 << 30)}"
    if variant == "redis-py GET+json":
        r = redis.Redis.from_url(url)
        r.mset({f"{ns}:{i}": json.dumps(_value(i)) for i in range(KEYS)})
        r.close()
    ctx = mp_context()
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    kids = [ctx.Process(target=_reader, args=(variant, url, ns, seconds, ready, go, results), daemon=True)
            for _ in range(procs)]
    for k in kids:
        k.start()
    for _ in kids:
        ready.get(timeout=60)
    go.set()
    outs = [results.get(timeout=60 + seconds) for _ in kids]
    for k in kids:
        k.join(timeout=10)
    reads = sum(o["reads"] for o in outs)
    errors = [o["error"] for o in outs if "error" in o]
    return {"variant": variant, "processes": procs, "reads": reads,
            "reads_per_s": round(reads / seconds), "errors": errors[:2]}


def run(env: Env) -> dict[str, Any]:
    counts = [1, 2, 4, 8]
    seconds = 0.6 if env.quick else 5.0
    rows = []
    total = len(counts) * len(VARIANTS)
    for vi, variant in enumerate(VARIANTS):
        for ci, procs in enumerate(counts):
            env.progress(f"{variant}, {procs} process(es)", vi * len(counts) + ci, total)
            rows.append(measure(variant, env.redis_url, procs, seconds))
    env.progress("scaling done", total, total)
    return {"rows": rows, "seconds_per_point": seconds, "cpus": os.cpu_count()}


def table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    counts = sorted({r["processes"] for r in result["rows"]})
    head = ["reads/s"] + [f"{c} proc" for c in counts]
    body = []
    for variant in VARIANTS:
        by = {r["processes"]: r for r in result["rows"] if r["variant"] == variant}
        body.append([variant] + [f"{by[c]['reads_per_s']:,}" if c in by else "-" for c in counts])
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
    return (f"Each point runs {result['seconds_per_point']} s on a {result['cpus']}-CPU machine that also runs the "
            "Redis server, so the Redis-bound curves flatten once processes outnumber cores; local-tier reads "
            "scale with cores only.")
