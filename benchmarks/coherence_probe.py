"""Coherence probe: how fast an invalidation reaches another process's local tier,
and what tags cost on a local hit.

    python -m benchmarks.coherence_probe [--redis-url URL] [--n 1000]

Without ``--redis-url`` an embedded ``redis-server`` is started on a free
loopback port. Propagation delay is measured from just before ``fn.invalidate()``
is called in this process to the moment the receiver process's listener thread
drops the key from its local tier (both clocks are CLOCK_MONOTONIC, shared by
every process on the host), so it includes the tombstone write, the PUBLISH,
delivery and the listener's apply.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
import timeit
import uuid
from typing import Any

from mistral_cache import Cache, Local


def _value(item: str) -> str:
    return "v:" + item


def _tagged(item: str) -> str:
    return "v:" + item


def _receiver(conn: Any, url: str, namespace: str) -> None:
    cache = Cache(url, namespace=namespace, local=Local(ttl=600))
    fn = cache.cached(ttl=600, key="probe:{item}")(_value)
    key = fn.cache_key("x")
    local = cache.local
    assert local is not None
    original = local.delete

    def delete(k: str) -> bool:  # runs on the listener thread: stamp the moment the entry goes
        removed = original(k)
        if k == key:
            conn.send(("gone", time.perf_counter()))
        return removed

    local.delete = delete  # type: ignore[method-assign]
    fn("x")
    cache.listener.connected.wait(5)  # type: ignore[union-attr]
    while True:
        cmd = conn.recv()
        if cmd == "stop":
            break
        fn("x")  # fill (from Redis: the invalidator's tombstone makes this a recompute)
        assert local.get(key) is not None
        conn.send(("ready", None))
    cache.close()


def propagation(url: str, n: int) -> list[float]:
    namespace = "probe-" + uuid.uuid4().hex[:8]
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_receiver, args=(child, url, namespace), daemon=True)
    proc.start()
    cache = Cache(url, namespace=namespace)
    fn = cache.cached(ttl=600, key="probe:{item}")(_value)
    delays = []
    try:
        for _ in range(n + 20):  # the first 20 warm up connections and scripts
            parent.send("fill")
            kind, _ = parent.recv()
            assert kind == "ready"
            t0 = time.perf_counter()
            fn.invalidate("x")
            if not parent.poll(5):
                raise RuntimeError("the receiver never saw the invalidation")
            kind, t1 = parent.recv()
            assert kind == "gone"
            delays.append(t1 - t0)
        parent.send("stop")
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
        cache.close()
    return delays[20:]


def local_hit_cost(url: str, number: int = 50_000, repeat: int = 7) -> tuple[float, float, float]:
    """Seconds per local hit: (without tags, with two tags, bare cachetools.cached(LRUCache) for scale)."""
    import cachetools

    cache = Cache(url, namespace="probe-" + uuid.uuid4().hex[:8], local=Local(ttl=600), refresh=None)
    plain = cache.cached(ttl=600, key="p:{item}")(_value)
    tagged = cache.cached(ttl=600, key="t:{item}", tags=["a:{item}", "b"])(_tagged)
    try:
        for fn in (plain, tagged):
            fn("x")
        cache.listener.connected.wait(5)  # type: ignore[union-attr]  # its first subscription flushes the tier
        for fn in (plain, tagged):
            fn("x")
            before = fn.stats()["local_hits"]
            fn("x")
            assert fn.stats()["local_hits"] == before + 1, "not a local hit"
        bare = cachetools.cached(cachetools.LRUCache(4096))(_value)
        bare("x")
        best = [float("inf")] * 3
        for _ in range(repeat):  # interleaved, so drift (CPU frequency, noise) hits all alike
            for i, fn in enumerate((plain, tagged, bare)):
                best[i] = min(best[i], timeit.timeit(lambda fn=fn: fn("x"), number=number) / number)
        return best[0], best[1], best[2]
    finally:
        cache.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--redis-url", default=None, help="a Redis to use; default: start an embedded redis-server")
    ap.add_argument("--n", type=int, default=1000, help="invalidations to time")
    args = ap.parse_args(argv)
    server = None
    url = args.redis_url
    if url is None:
        from mistral_cache.testing import RedisServer

        server = RedisServer().start()
        url = server.url
    try:
        delays = sorted(propagation(url, args.n))
        p99 = delays[min(len(delays) - 1, int(round(0.99 * len(delays))) - 1)]
        print(f"propagation over {len(delays)} invalidations (invalidate() call -> peer's local tier dropped the key):")
        print(f"  median {statistics.median(delays) * 1e3:.3f} ms   p99 {p99 * 1e3:.3f} ms   max {delays[-1] * 1e3:.3f} ms")
        plain, tagged, bare = local_hit_cost(url)
        print("local hit (best of 7 x 50k calls):")
        print(f"  without tags {plain * 1e9:.0f} ns   with 2 tags {tagged * 1e9:.0f} ns   ratio {tagged / plain:.2f}x"
              f"   (bare cachetools.cached(LRUCache): {bare * 1e9:.0f} ns)")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
