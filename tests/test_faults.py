"""Faults against a real Redis of the test's own (``own_redis``): killed, restarted,
frozen; and the function's own faults: stale-if-error, the caller's retry policy.

Timing assertions here are *bounds* (nothing hangs), never speed claims.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import tenacity

from mistral_cache import Cache, EarlyRefresh, Local, StaleIfError, TierUnavailable, Timeouts
from mistral_cache.resilience import CircuitBreaker
from mistral_cache.testing import RedisServer, seconds_until


def value_of(x: int) -> dict[str, Any]:
    return {"x": x, "triple": 3 * x, "name": f"wf-{x}"}


class Hammer:
    """Threads calling ``fn(i)`` over a range of keys until stopped; every result is checked."""

    def __init__(self, fn: Any, threads: int = 4, keys: int = 200) -> None:
        self.fn, self.keys = fn, keys
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.wrong: list[Any] = []
        self.calls = 0
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]

    def _run(self, n: int) -> None:
        i = n
        while not self.stop.is_set():
            x = i % self.keys
            try:
                v = self.fn(x)
            except BaseException as exc:  # any exception is a failure of fail-open
                self.errors.append(exc)
            else:
                if v != value_of(x):
                    self.wrong.append((x, v))
            self.calls += 1
            i += 7
            time.sleep(0.001)

    def __enter__(self) -> Hammer:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)
        assert not any(t.is_alive() for t in self.threads), "a caller hung"


# -- Redis killed and restarted -----------------------------------------------
def test_redis_killed_fail_open_breaker_opens_and_closes(own_redis: RedisServer, namespace: str) -> None:
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=0.5)
    cache = Cache(own_redis.url, namespace=namespace, breaker=breaker)
    computed = []

    @cache.cached(ttl=0.3)
    def fn(x: int) -> dict[str, Any]:
        computed.append(x)
        time.sleep(0.001)
        return value_of(x)

    with Hammer(fn) as h:
        time.sleep(0.4)
        assert cache.stats()["breaker"]["state"] == "closed"
        own_redis.kill()
        opened = seconds_until(lambda: cache.stats()["breaker"]["transitions"]["open"] >= 1, 10)
        assert opened is not None, "the breaker never opened"
        time.sleep(1.5)  # callers keep going on the local tier and the function
        down_calls = h.calls
        time.sleep(0.5)
        assert h.calls > down_calls, "callers stalled while Redis was down"
        own_redis.restart()
        closed = seconds_until(lambda: cache.stats()["breaker"]["state"] == "closed", 10)
        assert closed is not None, f"the breaker never closed: {cache.stats()['breaker']}"
        time.sleep(0.3)  # and keeps working once Redis is back
    cache.close()
    assert h.errors == [], h.errors[:3]
    assert h.wrong == []
    assert cache.stats()["redis_errors"] >= 1
    assert cache.stats()["breaker"]["transitions"]["closed"] >= 1
    # Redis is used again once it is back: a new value lands there
    assert fn(10_000) == value_of(10_000)
    assert own_redis.client().keys(f"mc:{namespace}:k:*")


def test_redis_killed_strict_mode_raises_tier_unavailable(own_redis: RedisServer, namespace: str) -> None:
    cache = Cache(own_redis.url, namespace=namespace, strict=True, local=Local(coherence=False))

    @cache.cached(ttl=60)
    def fn(x: int) -> dict[str, Any]:
        return value_of(x)

    assert fn(1) == value_of(1)
    own_redis.kill()
    with pytest.raises(TierUnavailable) as info:
        fn(2)
    assert info.value.__cause__ is not None or "breaker" in str(info.value)
    for _ in range(5):  # breaker open now, or still failing: always TierUnavailable, never a redis error
        with pytest.raises(TierUnavailable):
            fn(3)
    own_redis.restart()
    time.sleep(2.1)  # the default breaker's reset_timeout: let it probe
    assert seconds_until(lambda: _strict_ok(fn, 4), 10) is not None
    cache.close()


def _strict_ok(fn: Any, x: int) -> bool:
    try:
        return bool(fn(x) == value_of(x))
    except TierUnavailable:
        return False


async def test_redis_killed_async_fail_open(own_redis: RedisServer, namespace: str) -> None:
    cache = Cache(own_redis.url, namespace=namespace, breaker=CircuitBreaker(reset_timeout=0.5))

    @cache.cached(ttl=60)
    async def fn(x: int) -> dict[str, Any]:
        return value_of(x)

    assert await fn(1) == value_of(1)
    own_redis.kill()
    for x in range(20):
        assert await fn(x) == value_of(x)
    assert cache.stats()["breaker"]["transitions"]["open"] >= 1
    own_redis.restart()

    async def closed() -> bool:
        for x in range(100, 200):
            assert await fn(x) == value_of(x)
            if cache.stats()["breaker"]["state"] == "closed":
                return True
            await asyncio.sleep(0.05)
        return False

    assert await closed()
    cache.close()


# -- Redis frozen ---------------------------------------------------------------
def test_redis_frozen_calls_still_answer_within_a_bound(own_redis: RedisServer, namespace: str) -> None:
    socket_timeout = 0.25
    cache = Cache(own_redis.url, namespace=namespace, timeouts=Timeouts(socket=socket_timeout, connect=socket_timeout),
                  breaker=CircuitBreaker(failure_threshold=3, reset_timeout=0.5))

    @cache.cached(ttl=60)
    def fn(x: int) -> dict[str, Any]:
        return value_of(x)

    assert fn(0) == value_of(0)
    bound = socket_timeout * 3 + 2.0  # a bound, not a speed claim
    own_redis.pause()
    try:
        worst = 0.0
        results: list[Any] = []

        def caller(n: int) -> None:
            nonlocal worst
            for x in range(n * 10, n * 10 + 10):
                t0 = time.monotonic()
                results.append((x, fn(x)))
                worst = max(worst, time.monotonic() - t0)

        threads = [threading.Thread(target=caller, args=(n,)) for n in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads), "a caller hung on a frozen Redis"
        assert len(results) == 30
        assert all(v == value_of(x) for x, v in results)
        assert worst < bound, f"a call took {worst:.2f}s (bound {bound:.2f}s)"
        assert cache.stats()["breaker"]["transitions"]["open"] >= 1
    finally:
        own_redis.resume()
    # once it thaws, the breaker closes again (new keys: a local hit would never probe Redis)
    fresh = iter(range(1000, 100_000))

    def back() -> bool:
        x = next(fresh)
        return fn(x) == value_of(x) and cache.stats()["breaker"]["state"] == "closed"

    assert seconds_until(back, 10) is not None
    cache.close()


# -- the function's own faults -------------------------------------------------
class Flaky:
    """Succeeds, then raises on every call while ``failing`` is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.failing = False

    def __call__(self, x: int) -> dict[str, Any]:
        self.calls += 1
        if self.failing:
            raise ConnectionError("upstream is down")
        return value_of(x)


def test_stale_if_error_serves_the_stale_value(redis_url: str, namespace: str) -> None:
    cache = Cache(redis_url, namespace=namespace, local=Local(coherence=False), stale=StaleIfError(60))
    upstream = Flaky()

    @cache.cached(ttl=0.2)
    def fn(x: int) -> dict[str, Any]:
        return upstream(x)

    assert fn(1) == value_of(1)
    upstream.failing = True
    time.sleep(0.3)  # expired everywhere, still within stale_if_error
    assert fn(1) == value_of(1)
    assert upstream.calls == 2, "the function was tried"
    s = fn.stats()
    assert s["stale_served"] == 1
    assert s["compute_errors"] == 1
    assert cache.stats()["stale_served"] == 1
    # a key never computed has nothing stale: the error goes through unchanged
    with pytest.raises(ConnectionError, match="upstream is down"):
        fn(2)
    # the upstream recovers: a fresh value again
    upstream.failing = False
    assert fn(1) == value_of(1)
    cache.close()


def test_stale_if_error_from_redis_in_another_process_view(redis_url: str, namespace: str) -> None:
    """A fresh Cache (an empty local tier, as in another process) gets the stale value from Redis."""
    first = Cache(redis_url, namespace=namespace, local=Local(coherence=False), stale=StaleIfError(60))
    upstream = Flaky()
    fn1 = first.cached(ttl=0.2, key="s:{x}")(lambda x: upstream(x))
    assert fn1(5) == value_of(5)
    first.close()
    upstream.failing = True
    time.sleep(0.3)
    second = Cache(redis_url, namespace=namespace, local=Local(coherence=False), stale=StaleIfError(60))
    fn2 = second.cached(ttl=0.2, key="s:{x}")(lambda x: upstream(x))
    assert fn2(5) == value_of(5)
    assert second.stats()["stale_served"] == 1
    second.close()


def test_without_stale_if_error_the_error_is_raised(redis_url: str, namespace: str) -> None:
    cache = Cache(redis_url, namespace=namespace, local=Local(coherence=False))
    upstream = Flaky()
    fn = cache.cached(ttl=0.2, key="n:{x}")(lambda x: upstream(x))
    assert fn(1) == value_of(1)
    upstream.failing = True
    time.sleep(0.3)
    with pytest.raises(ConnectionError):
        fn(1)
    assert cache.stats()["stale_served"] == 0
    cache.close()


async def test_stale_if_error_async(redis_url: str, namespace: str) -> None:
    cache = Cache(redis_url, namespace=namespace, local=Local(coherence=False), stale=StaleIfError(60))
    upstream = Flaky()

    @cache.cached(ttl=0.2)
    async def fn(x: int) -> dict[str, Any]:
        return upstream(x)

    assert await fn(1) == value_of(1)
    upstream.failing = True
    await asyncio.sleep(0.3)
    assert await fn(1) == value_of(1)
    assert fn.stats()["stale_served"] == 1
    cache.close()


class FailsTimes:
    def __init__(self, failures: int) -> None:
        self.failures, self.calls = failures, 0

    def __call__(self, x: int) -> dict[str, Any]:
        self.calls += 1
        if self.calls <= self.failures:
            raise TimeoutError(f"attempt {self.calls} timed out")
        return value_of(x)


def _retry3() -> tenacity.Retrying:
    return tenacity.Retrying(stop=tenacity.stop_after_attempt(3), reraise=True)


def test_retry_policy_retries_a_flaky_function(redis_url: str, namespace: str) -> None:
    cache = Cache(redis_url, namespace=namespace, local=Local(coherence=False))
    upstream = FailsTimes(2)

    @cache.cached(ttl=60, retry=_retry3())
    def fn(x: int) -> dict[str, Any]:
        return upstream(x)

    assert fn(1) == value_of(1)
    assert upstream.calls == 3
    assert fn(1) == value_of(1)  # cached now
    assert upstream.calls == 3
    assert fn.stats()["computes"] == 1 and fn.stats()["compute_errors"] == 0
    cache.close()


def test_retry_policy_gives_up_with_the_original_exception(redis_url: str, namespace: str) -> None:
    cache = Cache(redis_url, namespace=namespace, local=Local(coherence=False))
    upstream = FailsTimes(10)

    @cache.cached(ttl=60, retry=_retry3())
    def fn(x: int) -> dict[str, Any]:
        return upstream(x)

    with pytest.raises(TimeoutError, match="attempt 3"):
        fn(1)
    assert upstream.calls == 3
    # nothing was cached and the lock was released: the next call tries again at once
    upstream.failures = 0
    t0 = time.monotonic()
    assert fn(1) == value_of(1)
    assert time.monotonic() - t0 < 5.0
    cache.close()


async def test_retry_policy_async(redis_url: str, namespace: str) -> None:
    cache = Cache(redis_url, namespace=namespace, local=Local(coherence=False))
    upstream = FailsTimes(2)

    @cache.cached(ttl=60, retry=_retry3())  # a sync tenacity policy drives the coroutine too
    async def fn(x: int) -> dict[str, Any]:
        return upstream(x)

    assert await fn(1) == value_of(1)
    assert upstream.calls == 3
    assert await fn(1) == value_of(1)
    assert upstream.calls == 3
    cache.close()


def test_nothing_stale_after_redis_comes_back(own_redis: RedisServer, namespace: str) -> None:
    """An invalidation sent while Redis was down never reached the other process's
    local tier: once Redis is back, that tier has been flushed and serves the new value."""
    source = {"v": 1}
    a = Cache(own_redis.url, namespace=namespace, breaker=CircuitBreaker(reset_timeout=0.3))
    b = Cache(own_redis.url, namespace=namespace, breaker=CircuitBreaker(reset_timeout=0.3))
    fa = a.cached(ttl=60, key="wf:{x}")(lambda x: {"x": x, "v": source["v"]})
    fb = b.cached(ttl=60, key="wf:{x}")(lambda x: {"x": x, "v": source["v"]})
    assert fa(1) == {"x": 1, "v": 1}
    assert seconds_until(lambda: a.stats()["coherence"]["connected"], 5) is not None
    own_redis.kill()
    source["v"] = 2
    fb.invalidate(1)  # lost: Redis is down (fail open, no exception)
    own_redis.restart()
    assert seconds_until(lambda: fa(1) == {"x": 1, "v": 2}, 10) is not None, "a stale value outlived the outage"
    assert fb(1) == {"x": 1, "v": 2}
    a.close()
    b.close()


async def test_cancelled_half_open_probe_does_not_wedge_the_breaker(own_redis: RedisServer, namespace: str) -> None:
    """The one caller let through to probe a half-open breaker is cancelled (a user's
    timeout) while Redis is frozen: the breaker must still close once Redis is back."""
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=0.3)
    cache = Cache(own_redis.url, namespace=namespace, breaker=breaker, local=Local(coherence=False))

    @cache.cached(ttl=60)
    async def fn(x: int) -> dict[str, Any]:
        return value_of(x)

    assert await fn(0) == value_of(0)
    own_redis.pause()
    try:
        assert await fn(1) == value_of(1)  # times out: open
        assert breaker.state == "open"
        await asyncio.sleep(0.4)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(fn(2), 0.05)  # the half-open probe, abandoned mid-flight
        assert breaker.state == "half_open"
    finally:
        own_redis.resume()

    async def closes() -> bool:
        for x in range(100, 200):
            assert await fn(x) == value_of(x)
            if breaker.state == "closed":
                return True
            await asyncio.sleep(0.05)
        return False

    assert await closes(), f"breaker wedged: {cache.stats()['breaker']}"


def test_default_redis_retry_backs_off_in_milliseconds() -> None:
    """The default policy's waits start at ~5 ms (tenacity's default jitter of 1 s
    used to push every wait to the 50 ms cap: ~100 ms per failing call)."""
    from mistral_cache.resilience import default_redis_retry

    policy = default_redis_retry()
    state = tenacity.RetryCallState(policy, fn=None, args=(), kwargs={})
    for _ in range(200):
        state.attempt_number = 1
        assert policy.wait(state) <= 0.0101
        state.attempt_number = 2
        assert policy.wait(state) <= 0.0151


@pytest.mark.parametrize("with_redis", [True, False], ids=["redis", "local-only"])
def test_failed_early_refresh_keeps_the_unexpired_value(redis_url: str, namespace: str, with_redis: bool) -> None:
    """XFetch picks a caller to refresh a value *before* it expires; if the upstream
    fails then, that caller gets the still-valid value, not the upstream's exception
    (even without stale_if_error: nothing stale is served)."""
    cache = Cache(redis_url if with_redis else None, namespace=namespace, local=Local(coherence=False), refresh=EarlyRefresh(beta=5))
    upstream = Flaky()

    @cache.cached(ttl=1.0, key="e:{x}")
    def fn(x: int) -> dict[str, Any]:
        time.sleep(0.05)
        return upstream(x)

    assert fn(1) == value_of(1)
    t0 = time.monotonic()
    upstream.failing = True
    while time.monotonic() - t0 < 0.7:  # well inside the value's ttl
        assert fn(1) == value_of(1)
        time.sleep(0.005)
    s = fn.stats()
    assert s["compute_errors"] >= 1, "XFetch never tried an early refresh"
    assert s["stale_served"] == 0
    time.sleep(0.4)  # now it has expired: with no stale_if_error the error goes through
    with pytest.raises(ConnectionError):
        fn(1)
