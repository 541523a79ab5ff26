"""Stampede protection against a real Redis, real threads and real processes.

- 4 processes x 16 threads (and 4 processes x 64 asyncio tasks) on one cold key:
  the function runs exactly once, every caller gets its value;
- a lock holder SIGKILLed mid-computation: its lock expires, another process
  computes, nobody hangs;
- XFetch early refresh keeps a hot key from ever expiring under load.

Worker functions live at module level so that ``spawn`` children can import them.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import signal
import threading
import time
from typing import Any

import pytest
import redis

from mistral_cache import Cache, Local, RedisLock
from tests.stampede_helpers import collect

CTX = mp.get_context("spawn")
SLEEP = 0.2  # the cold function's compute time
JOIN = 60.0  # bound on a child process's whole life

# -- the cached functions (module level: spawn imports them) -------------------
CLIENTS: dict[str, redis.Redis] = {}
_config: dict[str, Any] = {}


def _counter() -> redis.Redis:
    url = _config["url"]
    client = CLIENTS.get(url)
    if client is None:
        client = CLIENTS[url] = redis.Redis.from_url(url)
    return client


def expected(x: int) -> dict[str, Any]:
    return {"x": x, "square": x * x, "label": f"item-{x}"}


def slow_value(x: int) -> dict[str, Any]:
    """Counts its calls in Redis (shared by every process), then takes 200 ms."""
    _counter().incr(f"{_config['ns']}:calls")
    time.sleep(SLEEP)
    return expected(x)


async def aslow_value(x: int) -> dict[str, Any]:
    _counter().incr(f"{_config['ns']}:calls")
    await asyncio.sleep(SLEEP)
    return expected(x)


def killable_value(x: int) -> dict[str, Any]:
    """The first call in the whole system hangs (its process gets SIGKILLed);
    later calls compute normally."""
    n = _counter().incr(f"{_config['ns']}:calls")
    if n == 1:
        _config["started"].set()
        time.sleep(60)
    time.sleep(0.1)
    return expected(x)


# -- child process bodies ------------------------------------------------------
def thread_worker(url: str, ns: str, threads: int, barrier: Any, out: Any) -> None:
    _config.update(url=url, ns=ns)
    cache = Cache(url, namespace=ns)
    fn = cache.cached(ttl=60, key="cold:{x}")(slow_value)
    cache.redis.client().ping()  # connect before the race: measure the stampede, not connect time
    results: list[Any] = []
    errors: list[str] = []

    def one() -> None:
        try:
            barrier.wait(timeout=30)
            results.append(fn(7))
        except Exception as exc:  # reported to the parent
            errors.append(f"{type(exc).__name__}: {exc}")

    workers = [threading.Thread(target=one) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=30)
    out.put((os.getpid(), results, errors, cache.stats()["computes"]))


def task_worker(url: str, ns: str, tasks: int, barrier: Any, out: Any) -> None:
    _config.update(url=url, ns=ns)
    cache = Cache(url, namespace=ns)
    fn = cache.cached(ttl=60, key="acold:{x}")(aslow_value)

    async def main() -> tuple[list[Any], list[str]]:
        await cache.redis.async_client().ping()
        await asyncio.get_running_loop().run_in_executor(None, lambda: barrier.wait(timeout=30))
        got = await asyncio.gather(*(fn(7) for _ in range(tasks)), return_exceptions=True)
        return [g for g in got if not isinstance(g, BaseException)], [repr(g) for g in got if isinstance(g, BaseException)]

    results, errors = asyncio.run(main())
    out.put((os.getpid(), results, errors, cache.stats()["computes"]))


def _killable_worker(url: str, ns: str, started: Any, ready: Any, out: Any) -> None:
    _config.update(url=url, ns=ns, started=started)
    cache = Cache(url, namespace=ns, lock=RedisLock(timeout=1.0, wait=20.0))
    fn = cache.cached(ttl=60, key="victim:{x}")(killable_value)
    cache.redis.client().ping()
    ready.set()
    t0 = time.monotonic()
    value = fn(3)
    out.put((os.getpid(), value, time.monotonic() - t0, time.time()))


def _calls(rclient: redis.Redis, ns: str) -> int:
    return int(rclient.get(f"{ns}:calls") or 0)


def _one_call_for_all(worker: Any, nproc: int, callers: int, parties: int, url: str, ns: str, rclient: redis.Redis) -> None:
    """``nproc`` processes of ``callers`` each (threads or tasks, released together by a
    barrier of ``parties``) on one cold key: every caller gets the value, computed once."""
    barrier, out = CTX.Barrier(parties), CTX.Queue()
    procs = [CTX.Process(target=worker, args=(url, ns, callers, barrier, out)) for _ in range(nproc)]
    for p in procs:
        p.start()
    got = collect(out, nproc, procs, JOIN)
    assert [e for _, _, errs, _ in got for e in errs] == []
    values = [v for _, vals, _, _ in got for v in vals]
    assert len(values) == nproc * callers
    assert all(v == expected(7) for v in values)
    assert _calls(rclient, ns) == 1
    assert sum(c for *_, c in got) == 1


# -- tests ---------------------------------------------------------------------
@pytest.mark.slow
def test_four_processes_sixteen_threads_one_call(redis_url: str, namespace: str, rclient: redis.Redis) -> None:
    _one_call_for_all(thread_worker, 4, 16, 4 * 16, redis_url, namespace, rclient)  # every thread waits at the barrier


@pytest.mark.slow
def test_four_processes_sixty_four_tasks_one_call(redis_url: str, namespace: str, rclient: redis.Redis) -> None:
    _one_call_for_all(task_worker, 4, 64, 4, redis_url, namespace, rclient)  # one barrier wait per process


@pytest.mark.slow
def test_killed_lock_holder_lock_expires_and_another_process_computes(
    redis_url: str, namespace: str, rclient: redis.Redis
) -> None:
    started, out = CTX.Event(), CTX.Queue()
    holder_ready = CTX.Event()
    holder = CTX.Process(target=_killable_worker, args=(redis_url, namespace, started, holder_ready, out))
    holder.start()
    assert started.wait(30), "the first caller never started computing"
    # It now holds the Redis lock (and its keeper extends it every lock_timeout/3).
    lock_keys = rclient.keys(f"mc:{namespace}:l:*")
    assert len(lock_keys) == 1

    readies = [CTX.Event() for _ in range(2)]
    waiters = [CTX.Process(target=_killable_worker, args=(redis_url, namespace, started, r, out)) for r in readies]
    for p in waiters:
        p.start()
    for r in readies:
        assert r.wait(30)
    time.sleep(0.5)  # both are now waiting on the holder's lock
    assert rclient.exists(lock_keys[0]), "the holder's lock must be kept alive while it computes"
    killed_at = time.time()
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(5)
    assert holder.exitcode == -signal.SIGKILL

    got = collect(out, 2, waiters, JOIN)
    recovered = max(done for *_, done in got) - killed_at
    assert all(value == expected(3) for _, value, _, _ in got)
    # the holder's call plus exactly one of the two waiters
    assert _calls(rclient, namespace) == 2
    # bounded: lock_timeout (1 s) + a compute (0.1 s) + polling, far under lock_wait (20 s)
    assert recovered < 10.0


def test_xfetch_refreshes_ahead_of_expiry(redis_url: str, namespace: str) -> None:
    cache = Cache(redis_url, namespace=namespace)
    calls = []

    @cache.cached(ttl=1.0, key="hot:{x}")
    def hot(x: int) -> dict[str, Any]:
        calls.append(time.monotonic())
        time.sleep(0.05)
        return expected(x)

    wrong: list[Any] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            v = hot(5)
            if v != expected(5):
                wrong.append(v)
            time.sleep(0.005)

    assert hot(5) == expected(5)
    threads = [threading.Thread(target=loop) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(3.6)  # three expiries
    stop.set()
    for t in threads:
        t.join(10)
    cache.close()
    s = hot.stats()
    assert wrong == []
    assert s["misses"] == 1, s
    assert s["early_refreshes"] >= 3, s
    assert s["computes"] == len(calls) == s["misses"] + s["early_refreshes"]


@pytest.mark.parametrize("with_redis", [False, True], ids=["local-only", "redis"])
async def test_cancelled_leader_does_not_cancel_its_followers(redis_url: str, namespace: str, with_redis: bool) -> None:
    """One caller's timeout (``wait_for``) cancels the coroutine computing a key; the other
    coroutines waiting for that key did not ask to be cancelled: they get the value."""
    cache = Cache(redis_url if with_redis else None, namespace=namespace, local=Local(coherence=False), lock=RedisLock(timeout=5.0))
    calls = []

    @cache.cached(ttl=60, key="c:{x}")
    async def fn(x: int) -> dict[str, Any]:
        calls.append(x)
        await asyncio.sleep(0.2)
        return expected(x)

    leader = asyncio.ensure_future(fn(4))
    await asyncio.sleep(0.02)
    followers = [asyncio.ensure_future(fn(4)) for _ in range(5)]
    await asyncio.sleep(0.02)
    leader.cancel()
    t0 = time.monotonic()
    got = await asyncio.wait_for(asyncio.gather(*followers, return_exceptions=True), 10)
    assert got == [expected(4)] * 5
    # the cancelled leader released its Redis lock: nobody waited for its 5 s timeout (a bound)
    assert time.monotonic() - t0 < 4.0
    assert len(calls) == 2  # the cancelled computation and one retry, not one per follower


def test_dogpile_creator_keeps_its_lock_past_the_timeout(redis_url: str, namespace: str, rclient: redis.Redis) -> None:
    """The dogpile mutex's lock is extended while held (the LockKeeper the Cache's locks
    have): held for 3 timeouts, it is still there, and gone once released."""
    pytest.importorskip("dogpile.cache")
    from dogpile.cache import make_region

    region = make_region().configure("mistral_cache", arguments={"redis_url": redis_url, "namespace": namespace, "lock_timeout": 0.6})
    lock_key = region.backend.keyspace.lock("k")
    mutex = region.backend.get_mutex("k")
    assert mutex.acquire()
    try:
        time.sleep(1.8)
        assert rclient.exists(lock_key), "the held lock expired"
    finally:
        mutex.release()
    assert not rclient.exists(lock_key)
    region.backend.cache.close()
