"""Sentinel: one primary, one replica, three sentinels on loopback.

The contract runs on the session's ``sentinel`` (with and without a local tier).
The failover tests kill the primary of a Sentinel set-up of their own
(``own_sentinel``): the cache follows the new primary, callers keep getting
correct values, and no value that was invalidated is served after the failover.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from mistral_cache import Cache, ConfigurationError, Local, Timeouts
from mistral_cache.testing import RedisSentinelServer
from mistral_cache.testing.contract import CacheContract, CacheFactory, cache_factory
from mistral_cache.tiers.redis import sync_client_from_url, topology

pytestmark = pytest.mark.sentinel


class TestSentinelContract(CacheContract):
    """Sentinel alone, and behind a local tier."""

    @pytest.fixture(params=[None, Local()], ids=["redis", "local+redis"])
    def make_cache(self, request: pytest.FixtureRequest, sentinel: RedisSentinelServer, namespace: str) -> Iterator[CacheFactory]:
        with cache_factory(redis_url=sentinel.url, local=request.param, timeouts=Timeouts(socket=1.0), namespace=namespace) as make:
            yield make


def test_sentinel_url_needs_a_service() -> None:
    with pytest.raises(ConfigurationError, match="service"):
        sync_client_from_url("redis+sentinel://127.0.0.1:26379")


def _wait(pred: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def test_failover_follows_new_primary_and_serves_nothing_stale(own_sentinel: RedisSentinelServer) -> None:
    namespace = "s-" + uuid.uuid4().hex[:8]
    setup = own_sentinel
    a = Cache(setup.url, namespace=namespace, refresh=None, timeouts=Timeouts(socket=0.5))
    b = Cache(setup.url, namespace=namespace, refresh=None, timeouts=Timeouts(socket=0.5))
    assert a.redis is not None and topology(a.redis.client()) == "sentinel"
    source = {"v": 1}

    def make(cache: Cache) -> Callable[[int], list[int]]:
        @cache.cached(ttl=60, key="item:{i}")
        def get(i: int) -> list[int]:
            return [i, source["v"]]

        return get

    from mistral_cache.admin.doctor import doctor

    report = doctor(setup.url, pings=3)
    topo = next(c for c in report["checks"] if c["name"] == "topology")
    assert report["topology"] == "sentinel" and topo["sentinels_alive"] == 3 and topo["replicas"] == 1, report

    ga, gb = make(a), make(b)
    for i in range(20):
        assert ga(i) == [i, 1]
    a.ensure_listener()
    b.ensure_listener()
    assert a.listener is not None and a.listener.connected.wait(5)

    stop = threading.Event()
    errors: list[BaseException] = []
    wrong: list[object] = []

    def caller() -> None:
        n = 0
        while not stop.is_set():
            i = n % 20
            n += 1
            try:
                value = ga(i)
            except BaseException as exc:
                errors.append(exc)
                continue
            if value != [i, 1]:
                wrong.append(value)

    threads = [threading.Thread(target=caller) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.2)
        setup.kill_primary()
        setup.wait_for_failover(timeout=30)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors and not wrong, f"errors={errors[:3]} wrong={wrong[:3]} stats={a.stats()}"

    # The upstream changes; b invalidates through the new primary; a must not serve [i, 1] again.
    assert _wait(lambda: a.listener is not None and a.listener.connected.is_set(), 10)
    assert _wait(lambda: b.listener is not None and b.listener.connected.is_set(), 10)
    assert _wait(lambda: gb(3) is not None and b.stats()["breaker"]["state"] == "closed", 10)
    source["v"] = 2
    gb.invalidate(3)
    assert _wait(lambda: ga(3) == [3, 2], 2)
    assert ga(3) == [3, 2] and gb(3) == [3, 2]
    # Redis really is in use again: a value written through b is read by a fresh cache.
    c = Cache(setup.url, namespace=namespace, local=None, refresh=None)
    assert make(c)(3) == [3, 2] and c.stats()["redis_hits"] == 1

    async def via_async() -> list[int]:
        @c.cached(ttl=60, key="item:{i}")
        async def aget(i: int) -> list[int]:
            return [i, -1]

        return await aget(3)

    assert asyncio.run(via_async()) == [3, 2]  # the asyncio Sentinel client finds the new primary too
    for cache in (a, b, c):
        cache.close()


def test_invalidation_waits_for_a_replica_to_hold_it(own_sentinel: RedisSentinelServer) -> None:
    """Replication is asynchronous: an invalidation returns only once a replica
    holds the tombstone (Redis WAIT), so a failover right after cannot bring the
    old value back. A replica that does not answer in time is counted and logged."""
    namespace = "s-" + uuid.uuid4().hex[:8]
    setup = own_sentinel
    cache = Cache(setup.url, namespace=namespace, local=Local(coherence=False), refresh=None)
    assert cache.redis is not None and cache.redis.topology == "sentinel"

    @cache.cached(ttl=60, key="item:{i}")
    def get(i: int) -> int:
        return i

    replica = setup.replica.client()
    try:
        for i in range(5):
            get(i)
        for i in range(3):
            get.invalidate(i)  # type: ignore[attr-defined]
            raw = replica.get(cache.keyspace.entry(get.cache_key(i)))  # type: ignore[attr-defined]
            assert raw is not None and cache.codec.decode(raw).tombstone  # already on the replica
        assert cache.stats()["unreplicated"] == 0
        setup.replica.pause()
        try:
            t0 = time.monotonic()
            get.invalidate(4)  # type: ignore[attr-defined]
            waited = time.monotonic() - t0
        finally:
            setup.replica.resume()
        assert cache.stats()["unreplicated"] == 1
        assert waited < 2.0  # bounded by replica_wait (0.1 s), not hung
        assert get(4) == 4
    finally:
        replica.close()
        cache.close()
