"""The contract every tier configuration keeps: local only, Redis only, both.

The suite is :class:`mistral_cache.testing.contract.CacheContract` (in the manner
of dogpile's ``_GenericBackendTestSuite``); each class below is one topology,
with a real Redis where Redis is involved, and runs every test sync and async.
Cluster and Sentinel subclass it in ``test_cluster.py`` and ``test_sentinel.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mistral_cache import Cache, Codec, ConfigurationError
from mistral_cache.testing.contract import CacheContract, CacheFactory, cache_factory


class TestLocal(CacheContract):
    has_redis = False

    @pytest.fixture
    def make_cache(self, namespace: str) -> Iterator[CacheFactory]:
        with cache_factory(namespace=namespace) as make:
            yield make


class TestRedis(CacheContract):
    @pytest.fixture
    def make_cache(self, redis_url: str, namespace: str) -> Iterator[CacheFactory]:
        with cache_factory(redis_url=redis_url, local=None, namespace=namespace) as make:
            yield make


class TestBoth(CacheContract):
    @pytest.fixture
    def make_cache(self, redis_url: str, namespace: str) -> Iterator[CacheFactory]:
        with cache_factory(redis_url=redis_url, namespace=namespace) as make:
            yield make


def test_bad_options_are_named() -> None:
    with pytest.raises(ConfigurationError, match="unknown parameters"):
        Cache().cached(ttl=1, key="{nope}")(lambda x: x)
    with pytest.raises(ConfigurationError, match="ttl"):
        Cache().cached(ttl=-1)(lambda x: x)
    with pytest.raises(ConfigurationError, match="serializer"):
        Cache(codec=Codec("yaml"))
    with pytest.raises(ConfigurationError, match="secret"):
        Cache(codec=Codec("pickle"))
