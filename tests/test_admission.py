"""TinyLFU admission for the local tier (mistral_cache.tiers.admission).

The sketch, the doorkeeper and the admission rule are tested pure (no I/O); the
tier keeps a hot set through a scan where plain LRU loses it; and the whole cache
contract runs again with admission on, local only and in front of Redis.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from mistral_cache import Cache, ConfigurationError, Local
from mistral_cache.testing.contract import CacheContract, CacheFactory, cache_factory
from mistral_cache.tiers.admission import Doorkeeper, FrequencySketch, TinyLFU
from mistral_cache.tiers.local import LocalEntry, LocalTier


def entry(value: object) -> LocalEntry:
    return LocalEntry(value, created_at=0.0, ttl=60.0, expires_at=1e12, soft_at=1e12, stale_until=1e12)


# -- the sketch -----------------------------------------------------------------------
def test_sketch_counts_and_saturates_at_15() -> None:
    sketch = FrequencySketch(64, sample=1 << 30)
    for _ in range(5):
        sketch.increment("a")
    assert sketch.frequency("a") == 5
    assert sketch.frequency("never") == 0
    for _ in range(40):
        sketch.increment("a")
    assert sketch.frequency("a") == 15  # 4-bit counters
    sketch.increment("b", 20)  # a weighted update saturates too
    assert sketch.frequency("b") == 15


def test_sketch_estimates_never_undercount() -> None:
    """Count-min: a collision can only add, so every key's estimate is at least its
    true count (below saturation), with many keys sharing a small table."""
    sketch = FrequencySketch(16, sample=1 << 30)
    truth = {f"k{i}": i % 7 for i in range(300)}
    for key, n in truth.items():
        for _ in range(n):
            sketch.increment(key)
    assert all(sketch.frequency(k) >= n for k, n in truth.items())
    # Sized for them (4 rows of 2,048 counters for 300 keys), nearly all are exact.
    sized = FrequencySketch(300, sample=1 << 30)
    for key, n in truth.items():
        sized.increment(key, n)
    exact = sum(sized.frequency(k) == n for k, n in truth.items())
    assert exact > 270


def test_sketch_ages_by_halving() -> None:
    sketch = FrequencySketch(16, sample=1 << 30)
    for _ in range(12):
        sketch.increment("hot")
    for _ in range(3):
        sketch.increment("warm")
    sketch.halve()
    assert sketch.frequency("hot") == 6 and sketch.frequency("warm") == 1
    sketch.halve()
    sketch.halve()
    assert sketch.frequency("hot") == 1 and sketch.frequency("warm") == 0


def test_sketch_halves_itself_after_its_sample() -> None:
    sketch = FrequencySketch(16, sample=100)
    for _ in range(10):
        sketch.increment("x")
    for i in range(95):
        sketch.increment(f"other{i}")
    assert sketch.frequency("x") == 5  # 105 additions: one halving
    assert sketch.additions < 100


# -- the doorkeeper ----------------------------------------------------------------------
def test_doorkeeper_remembers_then_forgets_on_clear() -> None:
    door = Doorkeeper(1000)
    assert door.add("a") is False  # first sighting
    assert door.add("a") is True
    assert "a" in door and "b" not in door
    door.clear()
    assert "a" not in door


def test_doorkeeper_false_positive_rate_is_small() -> None:
    door = Doorkeeper(1000)
    for i in range(1000):
        door.add(f"in{i}")
    assert all(f"in{i}" in door for i in range(1000))
    false = sum(f"out{i}" in door for i in range(10_000))
    assert false < 500  # ~3% expected at 8 bits per key


def test_one_hit_wonders_stay_out_of_the_sketch() -> None:
    lfu = TinyLFU(100)
    lfu.record("once")
    assert lfu.sketch.frequency("once") == 0 and lfu.frequency("once") == 1
    lfu.record("once")
    assert lfu.sketch.frequency("once") == 1 and lfu.frequency("once") == 2


# -- admission ---------------------------------------------------------------------------
def test_admit_only_a_more_frequent_candidate() -> None:
    lfu = TinyLFU(100)
    for _ in range(5):
        lfu.record("hot")
    lfu.record("new")
    assert not lfu.admit("new", "hot")
    assert lfu.admit("hot", "new")
    lfu.record("twin")
    assert not lfu.admit("twin", "new")  # a tie keeps the incumbent
    for _ in range(6):
        lfu.record("new")
    assert lfu.admit("new", "hot")  # enough requests win a place


def test_aging_lets_yesterdays_hot_key_go() -> None:
    lfu = TinyLFU(10, period=200)
    for _ in range(15):
        lfu.record("old")
    for i in range(400):  # two periods of other traffic: "old" halves, the doorkeeper forgets it
        lfu.record(f"noise{i % 50}")
        lfu.record("new") if i % 8 == 0 else None
    assert lfu.frequency("old") < lfu.frequency("new")
    assert lfu.admit("new", "old")


def test_weighted_hits_count_as_many() -> None:
    lfu = TinyLFU(100)
    lfu.record("k")
    lfu.record_hits(["k"], 8)
    assert lfu.frequency("k") == 9  # 1 (doorkeeper) + 8
    assert lfu.seen == 9


# -- the tier ------------------------------------------------------------------------------
def _run_scan(admission: str | None) -> tuple[int, LocalTier]:
    """A hot set of 50 read 6 times each, then a scan of 2,000 keys read once; then how
    many of the hot keys are still in a tier of 100."""
    tier = LocalTier(100, max_bytes=0, admission=admission)
    hot = [f"hot:{i}" for i in range(50)]
    for _ in range(6):
        for key in hot:
            if tier.peek(key) is None:
                tier.put(key, entry(key))
    for i in range(2000):
        key = f"scan:{i}"
        if tier.peek(key) is None:
            tier.put(key, entry(key))
    kept = sum(tier.peek(k) is not None for k in hot)
    return kept, tier


def test_tinylfu_keeps_a_hot_set_through_a_scan_lru_loses_it() -> None:
    kept_lru, lru = _run_scan(None)
    kept_lfu, lfu = _run_scan("tinylfu")
    assert kept_lru == 0
    assert kept_lfu == 50, f"TinyLFU kept {kept_lfu} of 50 hot keys"
    assert lfu.rejections >= 1900 and lru.rejections == 0
    assert len(lfu) == 100  # the free half still took scan keys


def test_admission_in_a_byte_bounded_tier() -> None:
    tier = LocalTier(100, admission="tinylfu")  # the default: entries and bytes
    for _ in range(6):
        for i in range(100):
            key = f"hot:{i}"
            if tier.peek(key) is None:
                assert tier.put(key, entry(i))
    assert not tier.put("cold", entry(0))
    assert tier.rejections == 1 and tier.peek("cold") is None and len(tier) == 100


def test_rejected_key_is_admitted_once_it_is_asked_for_often() -> None:
    tier = LocalTier(4, max_bytes=0, admission="tinylfu")
    for key in "abcd":
        tier.put(key, entry(key))
        for _ in range(3):
            tier.peek(key)
    stored = [tier.put("e", entry("e")) for _ in range(12)]
    assert stored[0] is False and stored[-1] is True and tier.peek("e") is not None


def test_existing_key_replacement_is_never_refused() -> None:
    tier = LocalTier(2, max_bytes=0, admission="tinylfu")
    tier.put("a", entry(1))
    tier.put("b", entry(2))
    assert tier.put("a", entry(3))
    found = tier.peek("a")
    assert found is not None and found.value == 3


def test_invalidation_and_tags_work_with_admission() -> None:
    tier = LocalTier(10, max_bytes=0, admission="tinylfu")
    since = tier.begin()
    e = entry(1)
    e.tags = ("t",)
    assert tier.put("k", e, since)
    assert tier.delete_tags(["t"]) == 1 and tier.peek("k") is None
    again = entry(2)
    again.tags = ("t",)
    assert not tier.put("k", again, since)  # its tag was invalidated since the read began
    assert tier.put("k", again, tier.begin())


def test_concurrent_hits_and_puts_keep_the_tier_consistent() -> None:
    """Lock-free sampled hits race puts, drains and evictions: nothing raises and the
    bound holds (the counts may lose an update: they are estimates)."""
    tier = LocalTier(64, max_bytes=0, admission="tinylfu")
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            for i in range(20_000):
                key = f"k{(i * 7 + seed) % (200 if i % 3 else 40)}"
                if tier.peek(key) is None:
                    tier.put(key, entry(i))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(tier) <= 64


def test_settings_validate_admission() -> None:
    assert Local(admission="tinylfu").admission == "tinylfu"
    with pytest.raises(ConfigurationError, match="admission"):
        Local(admission="lfu")
    with pytest.raises(ValueError, match="admission"):
        LocalTier(10, admission="clock")


def test_cache_builds_its_local_tier_with_admission() -> None:
    cache = Cache(None, namespace="adm", local=Local(maxsize=10, admission="tinylfu"))
    try:
        fn = cache.cached(ttl=60, key="k:{x}")(lambda x: x * 2)
        assert [fn(i % 3) for i in range(9)] == [0, 2, 4] * 3
    finally:
        cache.close()


# -- the contract, admission on ---------------------------------------------------------------
class TestLocalAdmission(CacheContract):
    has_redis = False

    @pytest.fixture
    def make_cache(self, namespace: str) -> Iterator[CacheFactory]:
        with cache_factory(namespace=namespace, local=Local(admission="tinylfu")) as make:
            yield make


class TestBothAdmission(CacheContract):
    @pytest.fixture
    def make_cache(self, redis_url: str, namespace: str) -> Iterator[CacheFactory]:
        with cache_factory(redis_url=redis_url, namespace=namespace, local=Local(admission="tinylfu")) as make:
            yield make
