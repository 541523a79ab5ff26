"""No convoy of recomputations after an invalidation lands during a locked computation.

Real processes, a real Redis. Process H holds the lock and computes (slowly); the
others read the entry and its generations, find nothing, and wait on the lock.
The tag is invalidated while H computes, so H's value is stored under the old
counters and nobody may read it. One waiter must then compute under the new
counters and the rest take its value: 2 computations. A waiter that took the lock
but kept the counters of its first read (before the bump) stored a value nobody
could read either, and the next waiter computed again: one computation per
process (6 here).

Worker functions live at module level so that ``spawn`` children can import them.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
from typing import Any

import redis

from mistral_cache import Cache

CTX = mp.get_context("spawn")
NPROC = 6
HOLD = 2.0  # the first computation's duration: the invalidation lands inside it
JOIN = 60.0

_config: dict[str, Any] = {}


def _value() -> float:
    """Counts its runs in Redis; the first run in the whole system takes HOLD seconds."""
    client: redis.Redis = _config["client"]
    ns = _config["ns"]
    started = time.time()
    n = client.incr(f"{ns}:computes")
    if n == 1:
        time.sleep(HOLD)
        client.set(f"{ns}:first_done", repr(time.time()))
    else:
        time.sleep(0.05)
    return started


def _worker(url: str, ns: str, barrier: Any, out: Any) -> None:
    client = redis.Redis.from_url(url)
    _config.update(client=client, ns=ns)
    cache = Cache(url, namespace=ns)
    try:
        f = cache.cached(ttl=300, key="k", tags=("t",))(_value)
        barrier.wait(JOIN)
        client.rpush(f"{ns}:calling", os.getpid())
        out.put((os.getpid(), f()))
    finally:
        cache.close()
        client.close()


def test_invalidation_during_locked_compute_costs_one_recompute(redis_url: str, namespace: str) -> None:
    ns = namespace
    client = redis.Redis.from_url(redis_url)
    admin = Cache(redis_url, namespace=ns, local=None)
    barrier = CTX.Barrier(NPROC + 1)
    out = CTX.Queue()
    procs = [CTX.Process(target=_worker, args=(redis_url, ns, barrier, out)) for _ in range(NPROC)]
    try:
        for p in procs:
            p.start()
        barrier.wait(JOIN)
        deadline = time.monotonic() + JOIN
        # every process has started its call, and one of them is computing
        while (int(client.get(f"{ns}:computes") or 0) < 1 or client.llen(f"{ns}:calling") < NPROC) and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.3)  # generous: the waiters' first reads (entry and counters) are done
        assert admin.invalidate_tags("t")
        invalidated = time.time()

        got = []
        while len(got) < NPROC:
            try:
                got.append(out.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                break
        for p in procs:
            p.join(timeout=max(1.0, deadline - time.monotonic()))
        assert [p.exitcode for p in procs] == [0] * NPROC, "a child hung or failed"
        assert len(got) == NPROC

        first_done = float(client.get(f"{ns}:first_done") or 0)
        assert invalidated < first_done, "the scenario needs the invalidation inside the first computation"
        computes = int(client.get(f"{ns}:computes") or 0)
        # 2: the holder's (unreadable after the bump) and one waiter's; one spare for slack
        assert computes <= 3, f"{computes} computations for one invalidation (a convoy)"
        # Only the holder itself got the value computed before the invalidation.
        assert sum(1 for _, started in got if started < invalidated) <= 1
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        admin.close()
        client.close()
