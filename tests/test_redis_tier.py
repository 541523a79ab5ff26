"""The Redis tier across real processes, and what it does with bad bytes."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
from typing import Any

import pytest
import redis

from mistral_cache import Cache, Clock, Codec, Local

CALLS_KEY = "test:calls:{ns}"


def _make(url: str, ns: str) -> tuple[Cache, object]:
    cache = Cache(url, namespace=ns)
    counter = redis.Redis.from_url(url)

    @cache.cached(ttl=60, key="item:{x}")
    def item(x: int) -> dict[str, int]:
        counter.incr(CALLS_KEY.format(ns=ns))
        return {"x": x, "square": x * x}

    return cache, item


def _child(url: str, ns: str, action: str, q: mp.Queue) -> None:  # type: ignore[type-arg]
    cache, item = _make(url, ns)
    if action == "invalidate":
        item.invalidate(7)  # type: ignore[attr-defined]
        q.put(None)
    else:
        q.put((item(7), item.stats()))  # type: ignore[operator, attr-defined]


def _in_child(url: str, ns: str, action: str) -> object:
    q: mp.Queue = mp.get_context("spawn").Queue()  # type: ignore[type-arg]
    p = mp.get_context("spawn").Process(target=_child, args=(url, ns, action, q))
    p.start()
    out = q.get(timeout=60)
    p.join(30)
    assert p.exitcode == 0
    return out


def test_second_process_reads_from_redis_and_invalidate_reaches_everyone(redis_url: str, namespace: str) -> None:
    r = redis.Redis.from_url(redis_url)
    calls = CALLS_KEY.format(ns=namespace)
    value, stats = _in_child(redis_url, namespace, "get")  # type: ignore[misc]
    assert value == {"x": 7, "square": 49} and stats["misses"] == 1
    value, stats = _in_child(redis_url, namespace, "get")  # type: ignore[misc]
    assert value == {"x": 7, "square": 49} and stats["redis_hits"] == 1 and stats["misses"] == 0
    assert int(r.get(calls) or 0) == 1
    _in_child(redis_url, namespace, "invalidate")
    value, stats = _in_child(redis_url, namespace, "get")  # type: ignore[misc]
    assert stats["misses"] == 1 and int(r.get(calls) or 0) == 2


def test_async_functions_share_redis(redis_url: str, namespace: str) -> None:
    a, b = Cache(redis_url, namespace=namespace), Cache(redis_url, namespace=namespace)
    calls: list[str] = []

    def define(cache: Cache):  # type: ignore[no-untyped-def]
        @cache.cached(ttl=60, key="a:{x}")
        async def f(x: str) -> str:
            calls.append(x)
            return x.upper()

        return f

    fa, fb = define(a), define(b)

    async def main() -> None:
        assert await fa("q") == "Q"
        assert await fb("q") == "Q"
        assert fb.stats()["redis_hits"] == 1
        await fb.invalidate("q")
        assert await fa("q") == "Q" or True

    asyncio.run(main())
    assert calls.count("q") >= 1
    a.close(), b.close()


def test_garbage_foreign_and_tampered_bytes_are_misses(redis_url: str, namespace: str) -> None:
    cache = Cache(redis_url, namespace=namespace, local=None, codec=Codec("pickle", secret="s3cret"))
    calls = []

    @cache.cached(ttl=60, key="k:{x}")
    def f(x: int) -> list[int]:
        calls.append(x)
        return [x]

    assert f(1) == [1]
    r = redis.Redis.from_url(redis_url)
    entry = cache.keyspace.entry("k:1")
    good = r.get(entry)
    assert good is not None
    for bad in (b"garbage", b"MC\x09" + good[3:], good[:-1] + bytes([good[-1] ^ 1]), good[:20]):
        r.set(entry, bad)
        assert f(1) == [1]
    assert len(calls) == 5
    assert f.stats()["corrupt"] == 4


def test_oversized_values_are_served_not_cached(redis_url: str, namespace: str) -> None:
    cache = Cache(redis_url, namespace=namespace, codec=Codec(compress_threshold=None, max_value_size=100))
    calls = []

    @cache.cached(ttl=60)
    def big(n: int) -> str:
        calls.append(n)
        return "x" * n

    assert big(1000) == "x" * 1000
    assert big(1000) == "x" * 1000
    assert calls == [1000, 1000] and big.stats()["rejected"] == 2
    cache.close()


class _Counting(redis.Connection):
    """Counts what is sent: one send is one round trip (a pipeline is one send)."""

    sends = 0

    def send_packed_command(self, command: object, check_health: bool = True) -> None:
        type(self).sends += 1
        super().send_packed_command(command, check_health)  # type: ignore[arg-type]


def test_round_trips_per_path(redis_url: str, namespace: str) -> None:
    """A Redis hit is one round trip. A miss is two: the first read takes the lock
    in the same script when the entry is gone or expired, on a value this process
    held past its TTL and on a key it never held while such reads mostly find
    nothing (Engine.absent; a process starts there)."""
    pool = redis.ConnectionPool.from_url(redis_url, connection_class=_Counting)
    now = [1000.0]
    caches = [Cache(redis=redis.Redis(connection_pool=pool), namespace=namespace, local=Local(coherence=False), refresh=None,
                    clock=Clock(time=lambda: now[0])) for _ in range(2)]
    fns = []
    calls = [0]
    for c in caches:
        @c.cached(ttl=60, key="rt:{x}")
        def f(x: int) -> int:
            calls[0] += 1
            return x * 2 + now[0]

        fns.append(f)

    def sends(fn: object, x: int) -> tuple[object, int]:
        before = _Counting.sends
        value = fn(x)  # type: ignore[operator]
        return value, _Counting.sends - before

    try:
        fns[0](0)  # load the scripts once
        now[0] += 61
        fns[0](0)
        for x in range(1, 4):
            assert sends(fns[0], x) == (2 * x + now[0], 2)  # first miss here: read-or-lock, write-and-release
            assert sends(fns[1], x) == (2 * x + now[0], 1)  # the other cache: a Redis hit
            assert sends(fns[0], x) == (2 * x + now[0], 0)  # local hit
        now[0] += 61  # every value is past its TTL (Redis still holds the bytes)
        for x in range(1, 4):
            assert sends(fns[0], x) == (2 * x + now[0], 2)  # read-or-lock, write-and-release
            assert sends(fns[1], x) == (2 * x + now[0], 1)  # the refreshed value, in one
        assert calls[0] == 2 + 6
    finally:
        for c in caches:
            c.close()


def test_lock_scripts_treat_our_own_token_as_acquired(redis_url: str, namespace: str) -> None:
    """A retried call whose first reply was lost finds the lock holding its own
    token: that is ours, not someone else's to wait for."""
    cache = Cache(redis_url, namespace=namespace, local=Local(coherence=False))
    try:
        rt, ks = cache.redis, cache.keyspace
        assert rt is not None
        entry, lock = ks.entry("own"), ks.lock("own")
        for attempt in range(2):
            got = rt.run(rt.read_or_acquire(lock, b"token-1", 5000, 0.0, [entry, ks.generation]))
            assert got[0] == 1, attempt
        assert rt.run(rt.read_or_acquire(lock, b"token-2", 5000, 0.0, [entry, ks.generation]))[0] == 0
        for attempt in range(2):
            assert rt.run(rt.acquire(ks.lock("own2"), b"token-3", 5000, [ks.entry("own2")]))[0] == 1, attempt
        assert rt.run(rt.acquire(ks.lock("own2"), b"token-4", 5000, [ks.entry("own2")]))[0] == 0
    finally:
        cache.close()


def test_lock_freed_when_storing_fails_or_the_clock_steps_back(redis_url: str, namespace: str) -> None:
    probe = redis.Redis.from_url(redis_url)
    now = [1000.0]

    class SteppingBack(redis.Redis):
        """A client after whose read-or-lock script the clock steps back (before our own judgement)."""

        def evalsha(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return super().evalsha(*args, **kwargs)
            finally:
                now[0] = 1000.0

    client = SteppingBack.from_url(redis_url, socket_timeout=1)
    cache = Cache(redis=client, namespace=namespace, local=Local(coherence=False), refresh=None, clock=Clock(time=lambda: now[0]))

    def refuse(value: int) -> bool:
        if value < 0:
            raise ValueError("should_cache refused to decide")
        return True

    @cache.cached(ttl=60, key="lf:{x}", should_cache=refuse)
    def f(x: int) -> int:
        return x

    try:
        assert f(1) == 1
        now[0] = 1061.0  # past the TTL: the read-or-lock script judges the entry expired and locks
        assert f(1) == 1
        assert probe.get(cache.keyspace.lock(f.cache_key(1))) is None  # type: ignore[attr-defined]
        with pytest.raises(ValueError, match="refused"):
            f(-1)
        assert probe.get(cache.keyspace.lock(f.cache_key(-1))) is None  # type: ignore[attr-defined]
    finally:
        cache.close()
        client.close()
        probe.close()
