"""The Redis hit's direct path (tiers.redis.direct.KeptConnections): connections kept between
hits, never shared with a forked child, dropped when a command fails."""

from __future__ import annotations

import os
import threading

import pytest

from mistral_cache import Cache
from mistral_cache.testing import RedisServer
from mistral_cache.tiers.redis import direct


def _payload(x: int) -> dict[str, object]:
    return {"x": x, "pad": "p" * 100}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_use_the_parent_connections(redis_url: str, namespace: str) -> None:
    cache = Cache(redis_url, namespace=namespace, local=None)
    f = cache.cached(ttl=60, key="fk:{x}")(_payload)
    try:
        for x in range(20):
            f(x)
        for x in list(range(20)) * 3:
            assert f(x) == _payload(x)  # hits: plain reads once most first reads find entries, on a kept connection
        assert cache.redis is not None and cache.redis.kept.connections  # kept: the parent's sockets
        pid = os.fork()
        if pid == 0:  # the child: none of the parent's kept connections, right values, the parent's stream untouched
            ok = not cache.redis.kept.connections
            ok = all(f(x) == _payload(x) for x in range(20) for _ in range(5)) and ok
            os._exit(0 if ok else 1)
        parent_ok = all(f(x) == _payload(x) for x in range(20) for _ in range(5))
        _, status = os.waitpid(pid, 0)
        assert parent_ok and os.waitstatus_to_exitcode(status) == 0
        assert f.stats()["redis_hits"] >= 120  # type: ignore[attr-defined]
    finally:
        cache.close()


def test_threads_share_a_bounded_set_of_kept_connections(redis_url: str, namespace: str) -> None:
    cache = Cache(redis_url, namespace=namespace, local=None)
    f = cache.cached(ttl=60, key="th:{x}")(_payload)
    wrong: list[object] = []
    try:
        for x in range(10):
            f(x)

        def reader() -> None:
            for i in range(300):
                value = f(i % 10)
                if value != _payload(i % 10):
                    wrong.append(value)

        threads = [threading.Thread(target=reader) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not wrong
        assert cache.redis is not None
        spare = cache.redis.kept.connections
        assert spare is not None
        assert 1 <= len(spare) <= min(8, direct.SPARE_MAX)
    finally:
        cache.close()


def test_a_kept_connection_that_fails_is_dropped_and_the_next_hit_reconnects(namespace: str) -> None:
    with RedisServer() as server:
        cache = Cache(server.url, namespace=namespace, local=None)
        f = cache.cached(ttl=60, key="rc:{x}")(_payload)
        try:
            f(1)
            assert f(1) == _payload(1)
            server.kill()
            server.restart()  # the kept connection's socket is dead; the value is gone with the server
            calls = f.stats()["computes"]  # type: ignore[attr-defined]
            value = f(1)  # fails open on the dead socket (computed), or reconnects and misses
            assert value == _payload(1)
            assert f(1) == _payload(1)
            assert f.stats()["computes"] >= calls + 1  # type: ignore[attr-defined]
        finally:
            cache.close()


def test_no_connection_is_kept_from_a_pool_that_could_run_short(redis_url: str, namespace: str) -> None:
    """A blocking pool, or one bounded below 4 x SPARE_MAX: each hit checks its connection out and back."""
    import redis

    for pool in (redis.BlockingConnectionPool.from_url(redis_url, max_connections=200),
                 redis.ConnectionPool.from_url(redis_url, max_connections=4 * direct.SPARE_MAX - 1)):
        cache = Cache(redis=redis.Redis(connection_pool=pool), namespace=namespace, local=None)
        f = cache.cached(ttl=60, key="bp:{x}")(_payload)
        try:
            for x in list(range(10)) * 8:
                assert f(x) == _payload(x)
            assert cache.redis is not None and (cache.redis.kept.pool, cache.redis.kept.connections) == (pool, None)
            assert f.stats()["redis_hits"] >= 40  # type: ignore[attr-defined]
        finally:
            cache.close()
            pool.disconnect()


def test_after_a_restart_no_dead_kept_connection_reaches_a_caller(namespace: str) -> None:
    """Threads leave several connections kept; Redis restarts. The first hit's failure
    drops them all, so its retry and every later call reconnect: no Redis error is
    counted and the breaker stays closed (with the dead ones popped one by one, the
    retries ran out and the breaker opened on a healthy server)."""
    with RedisServer() as server:
        cache = Cache(server.url, namespace=namespace, local=None)
        f = cache.cached(ttl=60, key="rs:{x}")(_payload)
        try:
            barrier = threading.Barrier(8)

            def reader() -> None:
                barrier.wait()
                for _ in range(200):
                    for x in range(10):
                        f(x)

            threads = [threading.Thread(target=reader) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert cache.redis is not None
            kept = cache.redis.kept.connections
            assert kept is not None and len(kept) >= 3, "the threads left too few kept connections to test this"
            server.kill()
            server.restart()
            for x in range(10):
                assert f(x) == _payload(x)
            stats = cache.stats()
            assert stats["redis_errors"] == 0 and stats["breaker"]["state"] == "closed", stats
        finally:
            cache.close()


def test_a_new_pool_hands_the_old_pools_kept_connections_back(redis_url: str) -> None:
    """A tier whose client changed (so its pool) returns what it kept to the old pool."""
    import redis

    kept = direct.KeptConnections()
    a, b = redis.Redis.from_url(redis_url), redis.Redis.from_url(redis_url)
    try:
        kept.run(a, "GET", "nothing")
        assert kept.pool is a.connection_pool and kept.connections is not None and len(kept.connections) == 1
        conn = kept.connections[0]
        kept.run(b, "GET", "nothing")
        assert kept.pool is b.connection_pool
        assert a.connection_pool.get_connection() is conn, "the old pool's connection stayed checked out"
    finally:
        a.close()
        b.close()
