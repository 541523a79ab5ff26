"""Sentinel: one primary, one replica, three sentinels on loopback; kill the primary.

The cache follows the new primary, callers keep getting correct values, and no
value that was invalidated is served after the failover.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable

import pytest

from mistral_cache import Cache, ConfigurationError
from mistral_cache.embedded import RedisSentinelServer
from mistral_cache.tiers.redis import sync_client_from_url, topology

pytestmark = pytest.mark.sentinel


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


def test_failover_follows_new_primary_and_serves_nothing_stale() -> None:
    namespace = "s-" + uuid.uuid4().hex[:8]
    with RedisSentinelServer() as setup:
        a = Cache(setup.url, namespace=namespace, early_refresh=False, socket_timeout=0.5)
        b = Cache(setup.url, namespace=namespace, early_refresh=False, socket_timeout=0.5)
        assert a.redis is not None and topology(a.redis.client()) == "sentinel"
        source = {"v": 1}

        def make(cache: Cache) -> Callable[[int], list[int]]:
            @cache.cached(ttl=60, key="item:{i}")
            def get(i: int) -> list[int]:
                return [i, source["v"]]

            return get

        from mistral_cache.ops import doctor

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
        latencies: list[float] = []

        def caller() -> None:
            n = 0
            while not stop.is_set():
                i = n % 20
                n += 1
                t0 = time.perf_counter()
                try:
                    value = ga(i)
                except BaseException as exc:
                    errors.append(exc)
                    continue
                latencies.append(time.perf_counter() - t0)
                if value != [i, 1]:
                    wrong.append(value)

        threads = [threading.Thread(target=caller) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.2)
            setup.kill_primary()
            killed = time.monotonic()
            new_primary = setup.wait_for_failover(timeout=30)
            switched = time.monotonic() - killed
            time.sleep(0.3)
        finally:
            stop.set()
            for t in threads:
                t.join()
        print(
            f"\nsentinel failover: new primary {new_primary} after {switched:.2f}s; calls={len(latencies)} "
            f"errors={len(errors)} wrong={len(wrong)} max latency={max(latencies) * 1000:.0f}ms; "
            f"breaker={a.stats()['breaker']} computes={a.stats()['computes']} redis_errors={a.stats().get('redis_errors')}"
        )
        assert not errors and not wrong

        # The upstream changes; b invalidates through the new primary; a must not serve [i, 1] again.
        assert _wait(lambda: a.listener is not None and a.listener.connected.is_set(), 10)
        assert _wait(lambda: b.listener is not None and b.listener.connected.is_set(), 10)
        assert _wait(lambda: gb(3) is not None and b.stats()["breaker"]["state"] == "closed", 10)
        source["v"] = 2
        gb.invalidate(3)
        assert _wait(lambda: ga(3) == [3, 2], 2)
        assert ga(3) == [3, 2] and gb(3) == [3, 2]
        # Redis really is in use again: a value written through b is read by a fresh cache.
        c = Cache(setup.url, namespace=namespace, local_maxsize=0, early_refresh=False)
        assert make(c)(3) == [3, 2] and c.stats()["redis_hits"] == 1

        async def via_async() -> list[int]:
            @c.cached(ttl=60, key="item:{i}")
            async def aget(i: int) -> list[int]:
                return [i, -1]

            return await aget(3)

        assert asyncio.run(via_async()) == [3, 2]  # the asyncio Sentinel client finds the new primary too
        for cache in (a, b, c):
            cache.close()


def test_invalidation_waits_for_a_replica_to_hold_it() -> None:
    """Replication is asynchronous: an invalidation returns only once a replica
    holds the tombstone (Redis WAIT), so a failover right after cannot bring the
    old value back. A replica that does not answer in time is counted and logged."""
    namespace = "s-" + uuid.uuid4().hex[:8]
    with RedisSentinelServer() as setup:
        cache = Cache(setup.url, namespace=namespace, early_refresh=False, coherence=False)
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
