"""Scenario 3: stampede. P processes × T threads (tasks, for the asyncio libraries) ask
for one cold key at the same moment; the function takes ``UPSTREAM_S`` seconds. Counts
how often the function ran and the time until every caller had its value, for this
library, the tutorial recipe (GET, else compute and SET), dogpile.cache's Redis backend
with ``distributed_lock=True``, cashews with ``lock=True`` and aiocache's
``cached_stampede``."""

from __future__ import annotations

import asyncio
import os
import queue
import random
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from .common import Env, have, mp_context

NAME = "stampede"
TITLE = "Stampede on a cold key"
UPSTREAM_S = 0.1

LIBS = {
    "mistral_cache": None,
    "tutorial (GET/SET)": None,
    "dogpile.cache redis distributed_lock": "dogpile.cache",
    "cashews redis lock=True": "cashews",
    "aiocache cached_stampede": "aiocache",
}


def _sync_getter(lib: str, url: str, ns: str, upstream: Callable[[], Any]) -> Callable[[], Any]:
    if lib == "mistral_cache":
        from mistral_cache import Cache

        cache = Cache(redis_url=url, namespace=ns)
        return cache.cached(ttl=60, key="stampede")(upstream)  # type: ignore[no-any-return]
    if lib == "tutorial (GET/SET)":
        import json

        import redis

        r = redis.Redis.from_url(url)

        def tutorial() -> Any:
            raw = r.get(f"{ns}:value")
            if raw is not None:
                return json.loads(raw)
            value = upstream()
            r.set(f"{ns}:value", json.dumps(value), ex=300)
            return value

        return tutorial
    from dogpile.cache import make_region

    region = make_region(key_mangler=lambda k: f"{ns}:{k}").configure(
        "dogpile.cache.redis", expiration_time=60,
        arguments={"url": url, "distributed_lock": True, "thread_local_lock": False,
                   "lock_timeout": 10, "redis_expiration_time": 120},
    )
    return lambda: region.get_or_create("stampede", upstream)


def _async_getter(lib: str, url: str, ns: str, upstream: Callable[[], Any]) -> Callable[[], Any]:
    if lib.startswith("cashews"):
        from cashews import Cache as CashewsCache

        c = CashewsCache()
        c.setup(url)
        return c(ttl=60, key=f"{ns}:stampede", lock=True)(upstream)  # type: ignore[no-any-return]
    from aiocache import RedisCache, cached_stampede

    parts = urlsplit(url)
    db = int((parts.path or "/0").strip("/") or 0)
    return cached_stampede(lease=2, ttl=60, key="stampede", namespace=ns, cache=RedisCache,  # type: ignore[no-any-return]
                           endpoint=parts.hostname, port=parts.port, db=db)(upstream)


def _child(lib: str, url: str, ns: str, threads: int, ready: Any, go: Any, results: Any) -> None:
    import redis

    counter = redis.Redis.from_url(url)
    is_async = lib.startswith(("cashews", "aiocache"))
    ends: list[float] = []
    errors: list[str] = []
    try:
        if is_async:
            async def aupstream() -> Any:
                counter.incr(f"{ns}:calls")
                await asyncio.sleep(UPSTREAM_S)
                return {"value": 42}

            get = _async_getter(lib, url, ns, aupstream)

            async def main() -> None:
                async def one() -> None:
                    try:
                        await get()
                        ends.append(time.time())
                    except Exception as exc:  # noqa: BLE001
                        errors.append(f"{type(exc).__name__}: {exc}")

                ready.put(os.getpid())
                await asyncio.get_running_loop().run_in_executor(None, go.wait)
                await asyncio.gather(*(one() for _ in range(threads)))

            asyncio.run(main())
        else:
            def upstream() -> Any:
                counter.incr(f"{ns}:calls")
                time.sleep(UPSTREAM_S)
                return {"value": 42}

            sget = _sync_getter(lib, url, ns, upstream)
            start = threading.Event()

            def worker() -> None:
                start.wait()
                try:
                    sget()
                    ends.append(time.time())
                except Exception as exc:  # noqa: BLE001
                    errors.append(f"{type(exc).__name__}: {exc}")

            pool = [threading.Thread(target=worker) for _ in range(threads)]
            for t in pool:
                t.start()
            ready.put(os.getpid())
            go.wait()
            start.set()
            for t in pool:
                t.join()
    except Exception as exc:  # noqa: BLE001
        errors.append(f"{type(exc).__name__}: {exc}")
        ready.put(os.getpid())
    results.put({"ends": ends, "errors": errors[:3], "n_errors": len(errors)})
    results.close()
    results.join_thread()  # flushed to the parent before we leave
    os._exit(0)  # don't wait for the libraries' background threads (listeners, pools)


def trial(lib: str, url: str, procs: int, threads: int) -> dict[str, Any]:
    import redis

    ctx = mp_context()
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    ns = f"bench-stampede-{os.getpid()}-{random.randrange(1 << 30)}"
    children = [ctx.Process(target=_child, args=(lib, url, ns, threads, ready, go, results), daemon=True)
                for _ in range(procs)]
    for c in children:
        c.start()
    for _ in children:
        ready.get(timeout=60)
    time.sleep(0.2)  # let every thread reach its start line
    t_go = time.time()
    go.set()
    outs: list[dict[str, Any]] = []
    deadline = time.time() + 120
    while len(outs) < len(children) and time.time() < deadline:
        try:
            outs.append(results.get(timeout=1))
        except queue.Empty:
            if not any(c.is_alive() for c in children):  # a child died without reporting: don't wait out the deadline
                break
    lost = len(children) - len(outs)
    outs += [{"ends": [], "errors": ["worker process died without reporting"], "n_errors": threads}] * lost
    for c in children:
        c.join(timeout=2)
        if c.is_alive():
            c.terminate()
    ends = [e for o in outs for e in o["ends"]]
    calls = int(redis.Redis.from_url(url).get(f"{ns}:calls") or 0)
    return {
        "lib": lib, "processes": procs, "threads": threads, "callers": procs * threads,
        "served": len(ends), "upstream_calls": calls,
        "time_to_all_served_ms": round(1000 * (max(ends) - t_go), 1) if ends else None,
        "errors": sum(o["n_errors"] for o in outs),
        "error_samples": [e for o in outs for e in o["errors"]][:3],
    }


def run(env: Env) -> dict[str, Any]:
    procs, threads, reps = (4, 16, 1) if env.quick else (4, 16, 3)
    libs = [lib for lib, need in LIBS.items() if need is None or have(need)]
    rows = []
    total = len(libs) * reps
    for i, lib in enumerate(libs):
        for r in range(reps):
            env.progress(f"{lib} ({procs}×{threads})", i * reps + r, total)
            try:
                rows.append(trial(lib, env.redis_url, procs, threads))
            except Exception as exc:  # noqa: BLE001
                rows.append({"lib": lib, "error": f"{type(exc).__name__}: {exc}"})
    env.progress("stampede done", total, total)
    return {"rows": rows, "upstream_s": UPSTREAM_S, "processes": procs, "threads": threads}


def table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["stampede", "callers", "upstream calls", "served", "time to all served", "errors"]
    body = []
    for r in result["rows"]:
        if "error" in r:
            body.append([r["lib"], "-", "-", "-", "-", r["error"][:60]])
            continue
        body.append([r["lib"], f"{r['processes']}×{r['threads']}", str(r["upstream_calls"]), str(r["served"]),
                     "-" if r["time_to_all_served_ms"] is None else f"{r['time_to_all_served_ms']:.0f} ms",
                     str(r["errors"])])
    return head, body


def plot(result: dict[str, Any], out: str) -> list[str]:
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if "error" not in r]
    if not rows:
        return []
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = [r["lib"] for r in rows]
    a1.barh(labels, [r["upstream_calls"] for r in rows], color="tab:orange")
    a1.set_xlabel("upstream calls (ideal: 1)")
    a2.barh(labels, [r["time_to_all_served_ms"] or 0 for r in rows], color="tab:blue")
    a2.axvline(1000 * result["upstream_s"], color="gray", ls="--", label="one upstream call")
    a2.set_xlabel("time until every caller was served (ms)")
    a2.legend(fontsize=8)
    a2.set_yticks([])
    fig.suptitle(f"Stampede: {result['processes']} processes × {result['threads']} threads on one cold key")
    fig.tight_layout()
    name = os.path.join(out, "stampede.png")
    fig.savefig(name, dpi=90)
    plt.close(fig)
    return [name]


def notes(result: dict[str, Any]) -> str:
    lines = [f"The function sleeps {result['upstream_s']} s; the ideal is 1 upstream call and every caller "
             f"served shortly after {1000 * result['upstream_s']:.0f} ms. Asyncio libraries run their callers "
             "as tasks of one event loop per process rather than threads."]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"- {r['lib']}: failed ({r['error']})")
        else:
            lines.append(f"- {r['lib']}: {r['upstream_calls']} upstream call(s), all {r['served']} callers served "
                         f"after {r['time_to_all_served_ms']} ms, {r['errors']} errors.")
    return "\n".join(lines)
