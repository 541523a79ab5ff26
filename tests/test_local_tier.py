"""The local tier's hit path: the one spot that reads cachetools' private storage
(:func:`cachetools_storage`), its public-API fallback, and the wrappers' inlined hit
(one local read per call, the LRU touch on a hit). No Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import cachetools
import pytest

from mistral_cache import Cache, Local
from mistral_cache.tiers import local as local_mod
from mistral_cache.tiers.local import LocalEntry, LocalTier, cachetools_storage


def entry(v: Any) -> LocalEntry:
    return LocalEntry(v, created_at=0.0, ttl=60.0, expires_at=60.0, soft_at=60.0, stale_until=60.0)


def test_this_cachetools_has_the_storage_layout_the_fast_path_reads() -> None:
    """If a cachetools upgrade moves its storage, this fails (hits would silently take
    the slower public path otherwise)."""
    data, order = cachetools_storage(cachetools.LRUCache(4))
    assert isinstance(data, dict) and order is not None
    tier = LocalTier(4, max_bytes=0)
    find, touch = tier.hit_path()
    assert find is not tier.peek and touch is not local_mod._no_touch


def test_an_unknown_layout_falls_back_to_the_public_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_mod, "cachetools_storage", lambda lru: (None, None))
    tier = LocalTier(2, max_bytes=0)
    find, touch = tier.hit_path()
    assert find == tier.peek and touch is local_mod._no_touch
    _check_lru_order(tier)


def test_the_hit_path_touches_the_lru_order() -> None:
    _check_lru_order(LocalTier(2, max_bytes=0))


def test_with_admission_the_hit_path_is_the_recording_peek() -> None:
    """TinyLFU samples hits in ``peek``: the inlined path must go through it."""
    tier = LocalTier(2, max_bytes=0, admission="tinylfu")
    find, touch = tier.hit_path()
    assert find == tier.peek and touch is local_mod._no_touch


def _check_lru_order(tier: LocalTier) -> None:
    """a and b in a tier of two; a hit on a through hit_path, then c: b is evicted."""
    find, touch = tier.hit_path()
    tier.put("a", entry(1))
    tier.put("b", entry(2))
    found = find("a")
    assert found is not None and found.value == 1 and find("zz") is None
    touch("a")
    tier.put("c", entry(3))
    assert find("b") is None and find("a") is not None and find("c") is not None


def test_touching_a_key_removed_meanwhile_raises_key_error_only() -> None:
    tier = LocalTier(4, max_bytes=0)
    find, touch = tier.hit_path()
    tier.put("a", entry(1))
    assert find("a") is not None
    tier.delete("a")
    try:
        touch("a")  # the wrappers ignore this KeyError
    except KeyError:
        pass


def test_eviction_survives_an_lru_touch_during_its_iteration(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hit path touches the LRU order without the lock; cachetools' eviction
    iterates that order, and a touch landing inside the iteration makes it raise
    RuntimeError. The eviction must look again rather than fail the caller's put.
    (Simulated through cachetools' public ``popitem``, which our subclass calls.)"""
    real = cachetools.LRUCache.popitem
    raised = []

    def flaky(self: Any) -> Any:
        if not raised:
            raised.append(1)
            raise RuntimeError("OrderedDict mutated during iteration")
        return real(self)

    monkeypatch.setattr(cachetools.LRUCache, "popitem", flaky)
    tier = LocalTier(maxsize=2, max_bytes=0)
    tier.put("a", entry(1))
    tier.put("b", entry(2))
    assert tier.put("c", entry(3))
    assert raised == [1] and tier.get("a") is None and tier.get("c") is not None and len(tier) == 2


class _Counting:
    """Counts the reads of one tier through its public read methods."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads = 0
        real_hit_path, real_get, real_peek = LocalTier.hit_path, LocalTier.get, LocalTier.peek
        counter = self

        def hit_path(tier: LocalTier) -> Any:
            find, touch = real_hit_path(tier)

            def counted(key: str) -> Any:
                counter.reads += 1
                return find(key)

            return counted, touch

        def get(tier: LocalTier, key: str) -> Any:
            counter.reads += 1
            return real_get(tier, key)

        def peek(tier: LocalTier, key: str) -> Any:
            counter.reads += 1
            return real_peek(tier, key)

        monkeypatch.setattr(LocalTier, "hit_path", hit_path)
        monkeypatch.setattr(LocalTier, "get", get)
        monkeypatch.setattr(LocalTier, "peek", peek)


def test_a_miss_reads_the_local_tier_once(monkeypatch: pytest.MonkeyPatch) -> None:
    counting = _Counting(monkeypatch)
    cache = Cache(None, namespace="lt", local=Local(maxsize=8, ttl=None), refresh=None)
    calls: list[int] = []

    @cache.cached(ttl=60, tags=["t:{x}"])
    def f(x: int) -> int:
        calls.append(x)
        return x * 2

    assert f(1) == 2 and counting.reads == 1  # the miss: one read
    assert f(1) == 2 and counting.reads == 2 and calls == [1]  # the hit: one read
    assert f(x=2) == 4 and counting.reads == 3
    cache.close()


def test_a_miss_reads_the_local_tier_once_async(monkeypatch: pytest.MonkeyPatch) -> None:
    counting = _Counting(monkeypatch)
    cache = Cache(None, namespace="lt", local=Local(maxsize=8, ttl=None), refresh=None)

    @cache.cached(ttl=60)
    async def f(x: int) -> int:
        return x * 2

    async def go() -> None:
        assert await f(1) == 2 and counting.reads == 1
        assert await f(1) == 2 and counting.reads == 2

    asyncio.run(go())
    cache.close()


@pytest.mark.parametrize("version", [None, 3])
def test_a_cached_hit_keeps_its_key_recent(version: int | None) -> None:
    """Through the wrapper: a hit touches the LRU order, so the other key is evicted."""
    cache = Cache(None, namespace="lt", local=Local(maxsize=2, max_bytes=0, ttl=None), refresh=None)
    calls: list[int] = []

    @cache.cached(ttl=60, version=version)
    def f(x: int) -> int:
        calls.append(x)
        return x

    f(1), f(2), f(1), f(3)  # 1 is recent when 3 comes in: 2 goes
    f(1)
    assert calls == [1, 2, 3]
    f(2)
    assert calls == [1, 2, 3, 2]
    assert f(True) is True and calls[-1] is True  # f(1) and f(True) do not share an entry
    cache.close()
