"""Measure the facade against a real Mistral server (a script, not a test).

    python -m mistral_cache.mistral.measure --mistral-url http://127.0.0.1:8989/v2 [--redis-url redis://...]

1. Read latency: uncached client vs the facade (local-tier hit, Redis hit), medians.
2. A polling loop: 10 pollers (each its own client and its own Cache, as 10
   processes would have, sharing one Redis) poll one execution every 100 ms until
   they see SUCCESS; upstream requests with and without the cache, and how late
   each poller saw SUCCESS after the server had it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from .. import Cache
from .facade import CachedMistralClient

__all__ = ["DEFINITION", "latency", "polling", "main"]


def _client(url: str) -> Any:
    from mistralclient.api import client

    return client.client(mistral_url=url)


class _Counter:
    def __init__(self, client: Any) -> None:
        self.n = 0
        self._lock = threading.Lock()
        http = client.workflows.http_client
        for method in ("get", "post", "put", "delete"):
            original = getattr(http, method)

            def counted(*args: Any, _o: Any = original, **kwargs: Any) -> Any:
                with self._lock:
                    self.n += 1
                return _o(*args, **kwargs)

            setattr(http, method, counted)


def _median_us(fn: Callable[[], Any], n: int) -> float:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1e6


@contextlib.contextmanager
def _redis(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from ..testing import RedisServer

    with RedisServer() as server:
        yield server.url


DEFINITION = """---
version: '2.0'
{name}:
  tasks:
    nap:
      action: std.sleep seconds={seconds}
"""


def latency(mistral_url: str, redis_url: str, n: int) -> dict[str, Any]:
    raw = _client(mistral_url)
    name = f"measure_{uuid.uuid4().hex[:8]}"
    raw.workflows.create(DEFINITION.format(name=name, seconds=0))
    ex = raw.executions.create(name)
    while raw.executions.get(ex.id).state not in ("SUCCESS", "ERROR"):
        time.sleep(0.1)
    reads: dict[str, Callable[[Any], Any]] = {
        "workflows.get": lambda c: c.workflows.get(name),
        "executions.get": lambda c: c.executions.get(ex.id),
        "actions.list(limit=50)": lambda c: c.actions.list(limit=50),
    }
    namespace = "measure-" + uuid.uuid4().hex[:8]
    both = CachedMistralClient(_client(mistral_url), cache=Cache(redis_url, namespace=namespace))
    redis_only = CachedMistralClient(_client(mistral_url), cache=Cache(redis_url, namespace=namespace, local=None))
    out = {}
    try:
        for label, read in reads.items():
            uncached = _median_us(lambda r=read: r(raw), n)  # type: ignore[misc]
            read(both)
            local = _median_us(lambda r=read: r(both), n * 20)  # type: ignore[misc]
            read(redis_only)
            redis_hit = _median_us(lambda r=read: r(redis_only), n * 5)  # type: ignore[misc]
            out[label] = {
                "uncached_us": round(uncached, 1), "local_hit_us": round(local, 2), "redis_hit_us": round(redis_hit, 1),
                "ratio_local": round(uncached / local), "ratio_redis": round(uncached / redis_hit, 1),
            }
    finally:
        both.cache.close()
        redis_only.cache.close()
        raw.executions.delete(ex.id)
        raw.workflows.delete(name)
    return out


def polling(mistral_url: str, redis_url: str, pollers: int, interval: float, sleep_seconds: int) -> dict[str, Any]:
    raw = _client(mistral_url)
    name = f"measure_poll_{uuid.uuid4().hex[:8]}"
    raw.workflows.create(DEFINITION.format(name=name, seconds=sleep_seconds))
    namespace = "measure-" + uuid.uuid4().hex[:8]
    facades, counters = [], []
    for _ in range(pollers):
        c = _client(mistral_url)
        counters.append(_Counter(c))
        facades.append(CachedMistralClient(c, cache=Cache(redis_url, namespace=namespace)))
    ex = raw.executions.create(name)
    start = threading.Barrier(pollers + 1)
    polls = [0] * pollers
    seen_at: list[float | None] = [None] * pollers
    server_success: list[float] = []

    def monitor() -> None:  # the truth, on its own uncounted client, every 20 ms
        mon = _client(mistral_url)
        while raw_state(mon) != "SUCCESS":
            time.sleep(0.02)
        server_success.append(time.monotonic())

    def raw_state(c: Any) -> str:
        return str(c.executions.get(ex.id).state)

    def poll(i: int) -> None:
        start.wait()
        while True:
            polls[i] += 1
            if facades[i].executions.get(ex.id).state == "SUCCESS":
                seen_at[i] = time.monotonic()
                return
            time.sleep(interval)

    threads = [threading.Thread(target=poll, args=(i,)) for i in range(pollers)]
    threads.append(threading.Thread(target=monitor))
    for t in threads:
        t.start()
    started = time.monotonic()
    start.wait()
    for t in threads:
        t.join()
    # after SUCCESS, the pollers keep asking (dashboards do): 10 more reads each
    for i, f in enumerate(facades):
        for _ in range(10):
            f.executions.get(ex.id)
            polls[i] += 1
    upstream = sum(c.n for c in counters)
    lags = [s - server_success[0] for s in seen_at if s is not None]
    for f in facades:
        f.cache.close()
    raw.executions.delete(ex.id)
    raw.workflows.delete(name)
    total = sum(polls)
    return {
        "pollers": pollers, "interval_s": interval, "execution_seconds": round(server_success[0] - started, 2),
        "reads": total, "upstream_requests_uncached": total, "upstream_requests_cached": upstream,
        "saved_pct": round(100 * (1 - upstream / total), 1),
        "success_lag_s": {"max": round(max(lags), 3), "median": round(statistics.median(lags), 3)},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mistral-url", default=os.environ.get("MISTRAL_URL"))
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument("-n", type=int, default=200, help="uncached reads per measure")
    parser.add_argument("--pollers", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--sleep", type=int, default=5, help="seconds the polled execution runs")
    args = parser.parse_args(argv)
    if not args.mistral_url:
        parser.error("--mistral-url or MISTRAL_URL is required (scripts/mistral-server start prints one)")
    with _redis(args.redis_url) as redis_url:
        report = {
            "latency": latency(args.mistral_url, redis_url, args.n),
            "polling": polling(args.mistral_url, redis_url, args.pollers, args.interval, args.sleep),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
