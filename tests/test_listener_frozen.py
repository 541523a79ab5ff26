"""A frozen Redis (SIGSTOP) must not leave the listener believing it is connected."""

from __future__ import annotations

import time

import pytest

from mistral_cache import Cache, coherence
from mistral_cache.testing import RedisServer


def test_listener_notices_a_frozen_server_and_flushes(own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coherence, "IDLE_PING", 0.3)
    monkeypatch.setattr(coherence, "PONG_TIMEOUT", 0.5)
    cache = Cache(own_redis.url, namespace="frozen")

    @cache.cached(ttl=600)
    def f(x: int) -> int:
        return x

    f(1)
    assert cache.listener is not None
    assert cache.listener.connected.wait(5)
    f(1)  # first fill may have been flushed by the subscription; refill
    assert cache.local is not None and len(cache.local) == 1
    own_redis.pause()
    try:
        deadline = time.monotonic() + 10
        while cache.listener.connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not cache.listener.connected.is_set(), "listener still claims a connection to a frozen server"
        assert len(cache.local) == 0, "local tier kept entries it can no longer keep coherent"
    finally:
        own_redis.resume()
    assert cache.listener.connected.wait(10)
    cache.close()
