"""dogpile.cache regions on ``mistral_cache`` (the backend, and the oslo proxy in front
of ``dogpile.cache.redis``) against dogpile's own ``redis`` and ``memory`` backends,
all measured in one run on one Redis:

1. hit latency of ``region.get_or_create`` (what ``cache_on_arguments`` calls), as
   medians and as ratios to ``dogpile.cache.redis``;
2. upstream calls under a 4 processes x 16 threads stampede on a cold key;
3. staleness: how long another process keeps serving the old value after a
   ``region.delete`` and after a ``region.invalidate()``.

``python -m benchmarks.dogpile_backend [--redis-url URL] [--quick] [--json FILE]``
(a ``redis-server`` of its own is started when no URL is given).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import threading
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import redis
from dogpile.cache import make_region

CTX = mp.get_context("spawn")
VALUE = {"id": "3f1c2d9e", "workflow_name": "wf_0001", "state": "RUNNING", "tags": ["bench"], "input": '{"x": 1}'}
KINDS = ("dogpile.cache.memory", "dogpile.cache.redis", "dogpile.cache.redis+lock", "mistral_cache",
         "mistral_cache (no local tier)", "oslo proxy")
NEVER = 2.0  # staleness probes give up after this many seconds


def region_for(kind: str, url: str, ns: str) -> Any:
    region = make_region(key_mangler=lambda k: f"{ns}:{k}")
    if kind == "dogpile.cache.memory":
        return region.configure("dogpile.cache.memory", expiration_time=600)
    if kind.startswith("dogpile.cache.redis") or kind == "oslo proxy":
        region.configure("dogpile.cache.redis", expiration_time=600,
                         arguments={"url": url, "distributed_lock": kind.endswith("+lock"), "thread_local_lock": False,
                                    "lock_timeout": 10})
        if kind == "oslo proxy":
            from mistral_cache.oslo import LocalTierProxy
            region.wrap(LocalTierProxy)
        return region
    from mistral_cache.dogpile import RegionInvalidator
    args = {"redis_url": url, "namespace": ns, "local_maxsize": 0 if "no local" in kind else 4096, "local_ttl": 600}
    return region.configure("mistral_cache", expiration_time=600, arguments=args, region_invalidator=RegionInvalidator(region))


def _ready(region: Any) -> None:
    cache = getattr(region.backend, "cache", None)
    if cache is not None:
        cache.ensure_listener()
        cache.listener.connected.wait(5)


# -- 1. hit latency ----------------------------------------------------------------------------
def hit_latency(url: str, n: int) -> dict[str, float]:
    out = {}
    for kind in KINDS:
        if kind.endswith("+lock"):
            continue  # a hit takes no lock: the same as dogpile.cache.redis
        region = region_for(kind, url, "lat-" + uuid.uuid4().hex[:8])
        keys = [f"k{i}" for i in range(100)]
        for k in keys:
            region.get_or_create(k, lambda: VALUE)
        samples = []
        for r in range(n // len(keys)):
            start = time.perf_counter()
            for k in keys:
                region.get_or_create(k, lambda: VALUE)
            samples.append((time.perf_counter() - start) / len(keys))
        out[kind] = statistics.median(samples) * 1e6
    return out


# -- 2. stampede -----------------------------------------------------------------------------------
def _stampede_proc(kind: str, url: str, ns: str, threads: int, barrier: Any, done: Any) -> None:
    region = region_for(kind, url, ns)
    r = redis.Redis.from_url(url)

    def creator() -> Any:
        r.incr(f"{ns}:calls")
        time.sleep(0.05)
        return VALUE

    def one() -> None:
        barrier.wait()
        region.get_or_create("cold", creator)

    ts = [threading.Thread(target=one) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    done.put(1)


def stampede(url: str, procs: int = 4, threads: int = 16) -> dict[str, int]:
    out = {}
    r = redis.Redis.from_url(url)
    for kind in KINDS:
        if kind == "dogpile.cache.memory" or "no local" in kind:
            continue  # memory: one per process by construction; no-local: the same lock as mistral_cache
        ns = "st-" + uuid.uuid4().hex[:8]
        barrier, done = CTX.Barrier(procs * threads), CTX.Queue()
        ps = [CTX.Process(target=_stampede_proc, args=(kind, url, ns, threads, barrier, done)) for _ in range(procs)]
        for p in ps:
            p.start()
        for _ in ps:
            done.get(timeout=120)
        for p in ps:
            p.join(10)
        out[kind] = int(r.get(f"{ns}:calls") or 0)
    return out


# -- 3. staleness -------------------------------------------------------------------------------------
def _reader(kind: str, url: str, ns: str, conn: Any) -> None:
    region = region_for(kind, url, ns)
    _ready(region)
    r = redis.Redis.from_url(url)

    def creator() -> str:
        return (r.get(f"{ns}:src") or b"").decode()

    region.get_or_create("k", creator)
    conn.send("ready")
    conn.recv()  # the writer changed the source and invalidated
    started = time.perf_counter()
    while region.get_or_create("k", creator) != "new":
        if time.perf_counter() - started > NEVER:
            conn.send(None)
            return
        time.sleep(0.0002)
    conn.send(time.perf_counter() - started)


def staleness(url: str, how: str) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    r = redis.Redis.from_url(url)
    for kind in KINDS:
        if kind.endswith("+lock") or "no local" in kind:
            continue
        ns = "fr-" + uuid.uuid4().hex[:8]
        r.set(f"{ns}:src", "old")
        parent, child = CTX.Pipe()
        p = CTX.Process(target=_reader, args=(kind, url, ns, child))
        p.start()
        assert parent.poll(60) and parent.recv() == "ready"
        writer = region_for(kind, url, ns)
        _ready(writer)
        r.set(f"{ns}:src", "new")
        writer.delete("k") if how == "delete" else writer.invalidate()
        parent.send("go")
        assert parent.poll(30)
        out[kind] = parent.recv()
        p.join(10)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--redis-url")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    opts = ap.parse_args()
    server = None
    url = opts.redis_url
    if not url:
        from mistral_cache.testing import RedisServer
        server = RedisServer().start()
        url = server.url
    try:
        lat = hit_latency(url, 20_000 if opts.quick else 200_000)
        calls = stampede(url)
        stale = {"delete": staleness(url, "delete"), "invalidate": staleness(url, "invalidate")}
    finally:
        if server is not None:
            server.stop()
    base = lat["dogpile.cache.redis"]
    print(f"Redis {urlsplit(url).netloc}: hit latency of region.get_or_create, median")
    for kind, us in lat.items():
        print(f"  {kind:<32} {us:8.2f} us   {us / base:6.3f} x dogpile.cache.redis   {us / lat['dogpile.cache.memory']:6.2f} x memory")
    print("upstream calls, 4 processes x 16 threads on a cold key")
    for kind, n in calls.items():
        print(f"  {kind:<32} {n}")
    for how, res in stale.items():
        print(f"staleness in another process after region.{how}(): time until it serves the new value")
        for kind, s in res.items():
            shown = f"still stale after {NEVER:.0f} s" if s is None else f"{s * 1e3:.2f} ms"
            print(f"  {kind:<32} {shown}")
    if opts.json:
        with open(opts.json, "w") as fh:
            json.dump({"hit_latency_us": lat, "stampede_calls": calls, "staleness_s": stale}, fh, indent=1)


if __name__ == "__main__":
    main()
