"""No convoy of recomputations after an invalidation lands during a locked computation.

Real processes, a real Redis. Process H holds the lock and computes; the others
read the entry and its generations, find nothing, and wait on the lock. The tag is
invalidated while H computes, so H's value is stored under the old counters and
nobody may read it. One waiter must then compute under the new counters and the
rest take its value: 2 computations. A waiter that took the lock but kept the
counters of its first read (before the bump) stored a value nobody could read
either, and the next waiter computed again: one computation per process (6 here).

The order is a handshake, not a sleep: H's computation says it has started and
then blocks until the test has invalidated; every other process says when it
waits on the lock, from its cache's sleep (``Clock.sleep``), which a call sleeps
in only while polling another process's lock, after its reads and its lock
attempt. The test invalidates once it has heard all of them.

Worker functions live at module level so that ``spawn`` children can import them.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
from typing import Any

import redis

from mistral_cache import Cache, Clock
from tests.stampede_helpers import collect

CTX = mp.get_context("spawn")
NPROC = 6
JOIN = 60.0

_config: dict[str, Any] = {}


def _value() -> float:
    """Counts its runs in Redis. The first run in the whole system says so and
    blocks until the test's go (given once the invalidation has landed)."""
    client: redis.Redis = _config["client"]
    ns = _config["ns"]
    started = time.time()
    n = client.incr(f"{ns}:computes")
    if n == 1:
        _config["signals"].put(("computing", os.getpid()))
        if not _config["go"].wait(JOIN):
            raise RuntimeError("the test never gave the go")
    else:
        time.sleep(0.05)
    return started


def _sleep(seconds: float) -> None:
    """The cache's sleep: the first one tells the test this process waits on the lock."""
    if not _config.get("waiting"):
        _config["waiting"] = True
        _config["signals"].put(("waiting", os.getpid()))
    time.sleep(seconds)


def _worker(url: str, ns: str, signals: Any, go: Any, out: Any) -> None:
    client = redis.Redis.from_url(url)
    _config.update(client=client, ns=ns, signals=signals, go=go)
    cache = Cache(url, namespace=ns, clock=Clock(sleep=_sleep))
    try:
        f = cache.cached(ttl=300, key="k", tags=("t",))(_value)
        try:
            value = f()
        except BaseException as exc:  # heard at once, not after the test's timeout
            signals.put(("failed: " + repr(exc), os.getpid()))
            raise
        out.put((os.getpid(), value))
    finally:
        cache.close()
        client.close()


def _hear(signals: Any, n: int, timeout: float) -> list[str]:
    """The kinds of the first ``n`` signals (fewer if ``timeout`` runs out)."""
    heard: list[str] = []
    deadline = time.monotonic() + timeout
    while len(heard) < n:
        try:
            kind, _ = signals.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        heard.append(kind)
    return heard


def test_invalidation_during_locked_compute_costs_one_recompute(redis_url: str, namespace: str) -> None:
    ns = namespace
    client = redis.Redis.from_url(redis_url)
    admin = Cache(redis_url, namespace=ns, local=None)
    signals, go, out = CTX.Queue(), CTX.Event(), CTX.Queue()
    procs = [CTX.Process(target=_worker, args=(redis_url, ns, signals, go, out)) for _ in range(NPROC)]
    try:
        for p in procs:
            p.start()
        heard = _hear(signals, NPROC, JOIN)
        # one holder computing, and every other process past its reads, polling the lock
        assert sorted(heard) == ["computing"] + ["waiting"] * (NPROC - 1), heard
        assert admin.invalidate_tags("t")
        invalidated = time.time()
        go.set()

        got = collect(out, NPROC, procs, JOIN)
        computes = int(client.get(f"{ns}:computes") or 0)
        # the holder's (unreadable after the bump) and one waiter's, under the new counters
        assert computes == 2, f"{computes} computations for one invalidation (a convoy)"
        # Only the holder itself got the value computed before the invalidation.
        assert sum(1 for _, started in got if started < invalidated) == 1
    finally:
        go.set()
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        admin.close()
        client.close()
