"""A pinned micro-benchmark of the local tier: a hit (``LocalTier.peek`` and a
cached function's local hit) and a put that evicts, with and without TinyLFU.

Run it pinned, once per tree to compare, alternating::

    taskset -c 1 python -m benchmarks.local_micro            # prints one JSON line
    PYTHONPATH=/tmp/before taskset -c 1 python -m benchmarks.local_micro

Each figure is the median over ``ROUNDS`` rounds of ns per operation; the cases run
interleaved inside each round, so drift hits them alike.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["main", "measure"]

ROUNDS = 15
N = 20_000


def _entry(value: Any) -> Any:
    from mistral_cache.tiers.local import LocalEntry

    return LocalEntry(value, created_at=0.0, ttl=1e9, expires_at=1e9, soft_at=1e9, stale_until=1e9)


def cases(admission: str | None) -> dict[str, Callable[[], None]]:
    """name -> a callable doing ``N`` operations."""
    from mistral_cache import Cache, Local
    from mistral_cache.tiers.local import LocalTier

    kw: dict[str, Any] = {} if admission is None else {"admission": admission}
    tag = admission or "lru"
    hot = LocalTier(1024, **kw)
    keys = [f"ns:k:{i}" for i in range(512)]
    for k in keys:
        hot.put(k, _entry(k))
    hit_keys = (keys * (N // len(keys) + 1))[:N]

    def peek() -> None:
        p = hot.peek
        for k in hit_keys:
            p(k)

    full = LocalTier(1024, **kw)
    put_keys = [f"ns:p:{i}" for i in range(N)]
    entries = [_entry(i) for i in range(N)]
    for i in range(1024):
        full.put(f"ns:warm:{i}", _entry(i))

    def put() -> None:  # every put is a new key into a full tier: an eviction (or a rejection)
        p = full.put
        for k, e in zip(put_keys, entries, strict=True):
            p(k, e)

    cache = Cache(None, namespace="micro", local=Local(maxsize=1024, ttl=None, **kw), refresh=None)
    fn = cache.cached(ttl=3600, key="m:{k}")(lambda k: k)
    for i in range(64):
        fn(i)
    args = [i % 64 for i in range(N)]

    def wrapper_hit() -> None:
        for a in args:
            fn(a)

    return {f"peek[{tag}]": peek, f"put[{tag}]": put, f"cached hit[{tag}]": wrapper_hit}


def measure(with_admission: bool) -> dict[str, float]:
    import inspect

    from mistral_cache.tiers.local import LocalTier

    runs = dict(cases(None))
    if with_admission and "admission" in inspect.signature(LocalTier).parameters:  # not in trees before it
        runs.update(cases("tinylfu"))
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(ROUNDS):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - t0) / N * 1e9)
    return {name: round(statistics.median(ts), 1) for name, ts in times.items()}


def main() -> None:
    print(json.dumps(measure("--no-admission" not in sys.argv)))


if __name__ == "__main__":
    main()
