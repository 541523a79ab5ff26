"""What a Redis outage costs a caller: per-call latency with Redis killed (fail open,
breaker open and probing) or frozen, as a ratio to a local-only Cache doing the same work.

    python scripts/fault_latency.py

Two paths are measured, each on its own keys: *miss* (a new key every call: local
lookup, flow, the function, local fill) and *hit* (a key already in the local tier).
Numbers are medians and tails over many calls; nothing here is a test.
"""

from __future__ import annotations

import statistics
import time
import uuid

from mistral_cache import Cache
from mistral_cache.testing import RedisServer


def fn_value(x: int) -> dict[str, int]:
    return {"x": x, "y": 2 * x}


def measure(cache: Cache, n: int, label: str, seconds: float = 0.0) -> dict[str, float]:
    """``n`` miss calls, or more until ``seconds`` have passed (long enough to include breaker probes)."""
    fn = cache.cached(ttl=600, key=label + ":{x}")(fn_value)
    fn(-1)
    miss = []
    end = time.monotonic() + seconds
    x = 0
    while x < n or time.monotonic() < end:
        t0 = time.perf_counter()
        fn(x)
        miss.append(time.perf_counter() - t0)
        x += 1
    hit = []
    for x in range(n):
        t0 = time.perf_counter()
        fn(x % 100)
        hit.append(time.perf_counter() - t0)
    q = statistics.quantiles(miss, n=100)
    return {
        "miss_p50_us": statistics.median(miss) * 1e6, "miss_p99_us": q[98] * 1e6, "miss_max_ms": max(miss) * 1e3,
        "miss_mean_us": statistics.fmean(miss) * 1e6,
        "calls": len(miss), "hit_p50_us": statistics.median(hit) * 1e6, "hit_mean_us": statistics.fmean(hit) * 1e6,
    }


def run(n: int = 20000, duration_calls: int = 5) -> None:
    rows = {}
    rows["local-only"] = measure(Cache(None, namespace="lat"), n, "a")
    with RedisServer() as server:
        up = Cache(server.url, namespace="lat-" + uuid.uuid4().hex[:6])
        rows["redis up"] = measure(up, n // 4, "b")
        up.close()
        down = Cache(server.url, namespace="lat-" + uuid.uuid4().hex[:6])
        fn = down.cached(ttl=600)(fn_value)
        fn(0)  # connected, listener started
        server.kill()
        for x in range(1, 10):  # open the breaker
            fn(x)
        rows["redis killed"] = measure(down, n, "c", seconds=5.0)
        rows["redis killed"]["breaker_rejected"] = down.stats()["breaker"]["rejected"]
        rows["redis killed"]["half_opens"] = down.stats()["breaker"]["transitions"]["half_open"]
        server.restart()
        down.close()
        frozen = Cache(server.url, namespace="lat-" + uuid.uuid4().hex[:6])
        fn = frozen.cached(ttl=600)(fn_value)
        fn(0)
        server.pause()
        for x in range(1, 10):
            fn(x)
        rows["redis frozen"] = measure(frozen, n, "d", seconds=5.0)
        rows["redis frozen"]["half_opens"] = frozen.stats()["breaker"]["transitions"]["half_open"]
        server.resume()
        frozen.close()
    base = rows["local-only"]
    for name, row in rows.items():
        ratio = row["miss_p50_us"] / base["miss_p50_us"]
        mratio = row["miss_mean_us"] / base["miss_mean_us"]
        hratio = row["hit_p50_us"] / base["hit_p50_us"]
        extra = {k: v for k, v in row.items() if not k.endswith(("_us", "_ms")) and k != "calls"}
        extra["calls"] = row["calls"]
        print(f"{name:13s} miss p50 {row['miss_p50_us']:7.1f}us ({ratio:4.2f}x)  mean {row['miss_mean_us']:7.1f}us ({mratio:5.2f}x)  "
              f"p99 {row['miss_p99_us']:7.1f}us  max {row['miss_max_ms']:7.1f}ms  |  hit p50 {row['hit_p50_us']:5.2f}us ({hratio:4.2f}x)  {extra}")


if __name__ == "__main__":
    run()
