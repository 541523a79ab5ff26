"""Adaptive expiration: the estimator, the TTL rule, the policy under simulated
Poisson change processes, and one Redis-backed integration test.

Every random stream has a fixed seed, so these tests are deterministic; the
tolerances are chosen from the estimators' sampling error at the stated sample
sizes (documented at each assertion) so that they would hold for most seeds too.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Any

import pytest

from mistral_cache import Cache, Clock, Local
from mistral_cache.adaptive import (
    META_KEY,
    Adaptive,
    adaptive,
    data_rate,
    estimate_rate,
    new_state,
    observe,
    rate_of,
    read_stale_fraction,
    stable_hash,
    stale_fraction,
    window_for,
)


# -- the maths ------------------------------------------------------------------
def test_window_bounds_the_average_stale_read_fraction() -> None:
    for target in (0.001, 0.01, 0.1, 0.5):
        x = window_for(target)
        assert stale_fraction(x) == pytest.approx(target, rel=1e-9)
    # Bounding the *average* over the window allows about twice the TTL that
    # bounding the staleness of the window's last read (-ln(1 - target)) would.
    assert window_for(0.01) / -math.log(1 - 0.01) == pytest.approx(2.0, rel=0.02)
    # numerical check of the closed form against the integral
    x = 0.7
    n = 100_000
    avg = sum(1 - math.exp(-x * (i + 0.5) / n) for i in range(n)) / n
    assert stale_fraction(x) == pytest.approx(avg, rel=1e-6)


@pytest.mark.parametrize("rate,interval", [(0.1, 1.0), (0.1, 10.0), (0.1, 30.0), (1.0, 5.0), (0.01, 500.0)])
def test_estimator_regular_censored_checks(rate: float, interval: float) -> None:
    """Regular checks, including heavily censored ones (rate*interval = 3 and 5,
    where most checks saw a change): 5000 checks, MLE within 10%."""
    rng = random.Random(11)
    state = new_state()
    p = 1 - math.exp(-rate * interval)
    for _ in range(5000):
        observe(state, rng.random() < p, interval, 1.0)
    assert rate_of(state, 0.0, 1.0) == pytest.approx(rate, rel=0.10)
    if rate * interval < 3:  # the family's prior-free estimate (Cho & Garcia-Molina) holds while checks are not too censored
        assert data_rate(state) == pytest.approx(rate, rel=0.15)
    # The naive "changes / time" is badly biased under censoring; the MLE is not.
    naive = state["k"] / (5000 * interval)
    if rate * interval >= 3:
        assert naive < 0.5 * rate


def test_estimator_irregular_checks() -> None:
    """Exponentially distributed check intervals (mean 2/rate): 5000 checks, within 10%."""
    rng = random.Random(12)
    rate = 0.05
    state = new_state()
    for _ in range(5000):
        t = rng.expovariate(rate / 2)
        observe(state, rng.random() < 1 - math.exp(-rate * t), t, 1.0)
    assert rate_of(state, 0.0, 1.0) == pytest.approx(rate, rel=0.10)


def test_estimator_edge_cases() -> None:
    assert estimate_rate(0.0, 100.0, []) == 0.0  # never changed, no prior: rate 0
    assert estimate_rate(1.0, 100.0, []) == pytest.approx(0.01)  # prior only: a0 / exposure
    assert estimate_rate(1.0, 0.0, [(5.0, 1.0)]) > 1.0  # every check changed: fast
    assert math.isfinite(estimate_rate(1.0, 1e-9, [(1.0, 1e6)]))


def test_stable_hash() -> None:
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})
    assert stable_hash({1, 2, 3}) == stable_hash({3, 2, 1})
    assert stable_hash(object) == stable_hash(object)  # falls back to pickle


def test_new_key_starts_at_the_configured_ttl() -> None:
    pol = adaptive(0.01, min_ttl=0.1, max_ttl=3600, initial_ttl=30)
    ttl, meta, retain = pol.decide("v", key="k", meta=None, now=0.0, name="f")
    assert ttl == pytest.approx(30.0)
    assert meta[META_KEY]["h"] == stable_hash("v") and retain == 3600
    assert pol(None) == pytest.approx(30.0)  # context-free use gives the prior's TTL


def test_bounds_and_base_compose_with_result_based_ttls() -> None:
    pol = adaptive(
        0.01, min_ttl=1, max_ttl=lambda v: 5 if v["state"] == "RUNNING" else 3600, initial_ttl=60,
        base=lambda v: 86400 if v["state"] == "SUCCESS" else None,
    )
    assert pol.decide({"state": "RUNNING"}, key="a", meta=None, now=0, name="f")[0] == 5
    assert pol.decide({"state": "IDLE"}, key="b", meta=None, now=0, name="f")[0] == pytest.approx(60)
    assert pol.decide({"state": "SUCCESS"}, key="c", meta=None, now=0, name="f")[0] == 86400


# -- the policy under simulated Poisson changes ----------------------------------
def simulate(pol: Adaptive, rate: float, reads: int, read_rate: float, seed: int,
             shift_at: int | None = None, new_rate: float = 0.0) -> dict[str, Any]:
    """One key changing as a Poisson process, read as a Poisson process; the
    policy's state goes through the envelope meta as it does in Redis."""
    rng = random.Random(seed)
    t, version = 0.0, 0
    next_change = rng.expovariate(rate) if rate > 0 else math.inf
    meta: dict[str, Any] | None = None
    cached, expires = None, -1.0
    stale, computes = 0, 0
    stale_by_batch = [0] * 20
    rates: list[float] = []
    ttl = 0.0
    for i in range(reads):
        t += rng.expovariate(read_rate)
        if shift_at is not None and i == shift_at:
            rate = new_rate
            next_change = t + (rng.expovariate(rate) if rate > 0 else math.inf)
            rates.append(-1.0)  # marker
        while next_change <= t:
            version += 1
            next_change += rng.expovariate(rate) if rate > 0 else math.inf
        if cached is not None and t < expires:
            if cached != version:
                stale += 1
                stale_by_batch[i * 20 // reads] += 1
            continue
        computes += 1
        ttl, meta, _ = pol.decide(version, key="k", meta=meta, now=t, name="f")
        cached, expires = version, t + ttl
        rates.append(meta[META_KEY]["r"])
    return {"rate": rates[-1], "rates": rates, "stale": stale / reads, "computes": computes, "ttl": ttl,
            "batches": [20 * b / reads for b in stale_by_batch]}


@pytest.mark.parametrize("rate", [0.5, 0.05])
def test_estimated_rate_converges(rate: float) -> None:
    """Fast (mean change every 2 s) and slow (every 20 s) keys. With memory=3000
    recomputes about 60 changes are in view (checks see a change ~2% of the
    time), so the estimate's relative error is ~13%; the a0=1 pseudo-change adds
    a deliberate +2% bias. Tolerance: 35% (over 2.5 standard errors)."""
    pol = adaptive(0.01, min_ttl=0.001, max_ttl=3600, initial_ttl=1.0, memory=3000)
    res = simulate(pol, rate, reads=250_000, read_rate=10 / (0.02 / rate), seed=3)
    assert res["rate"] == pytest.approx(rate, rel=0.35)
    assert res["ttl"] == pytest.approx(window_for(0.01) / rate, rel=0.35)


def test_never_changing_key_grows_to_max_ttl() -> None:
    pol = adaptive(0.01, min_ttl=0.5, max_ttl=600, initial_ttl=1.0)
    res = simulate(pol, 0.0, reads=100_000, read_rate=1.0, seed=4)  # 100k s: T/x* = 30k s of exposure is needed for T = 600 s
    assert res["stale"] == 0
    assert res["ttl"] == 600
    # Growth is geometric (about x* = 2% per recompute with one pseudo-change):
    # reaching 600x the initial TTL takes a few hundred recomputes, not thousands.
    assert res["computes"] < 1000


@pytest.mark.parametrize("rate,target", [(0.2, 0.01), (0.02, 0.01), (0.2, 0.05)])
def test_stale_read_fraction_within_target(rate: float, target: float) -> None:
    """400k reads at ~10 reads per TTL window. Stale reads cluster in windows,
    so we use batch means (20 batches) for the standard error: the mean must be
    at most the target plus 2 standard errors, and never above 1.2 x target."""
    pol = adaptive(target, min_ttl=0.001, max_ttl=3600, initial_ttl=window_for(target) / rate)
    res = simulate(pol, rate, reads=400_000, read_rate=10 * rate / window_for(target), seed=5)
    b = res["batches"]
    mean = sum(b) / len(b)
    se = math.sqrt(sum((x - mean) ** 2 for x in b) / (len(b) - 1) / len(b))
    assert res["stale"] == pytest.approx(mean)
    assert mean <= target + 2 * se
    assert mean <= 1.2 * target
    assert mean >= 0.3 * target  # and not wastefully conservative


def test_read_stale_fraction_counts_the_fresh_miss() -> None:
    lam, ttl = 0.01, 2.0
    assert read_stale_fraction(lam, math.inf, ttl) == pytest.approx(stale_fraction(lam * ttl))
    assert read_stale_fraction(lam, 0.5, ttl) == pytest.approx(stale_fraction(lam * ttl) / 2)  # one read per window + the miss


@pytest.mark.parametrize("seed", [6, 7])
def test_sparse_reads_keep_values_longer_within_target(seed: int) -> None:
    """A key read ~0.3 times per densely-read TTL window: most reads are misses,
    which are always fresh, so the per-read target allows a longer TTL. Learnt
    from the wait between expiry and the next read; the stale-read fraction stays
    within the target (batch means as above) and the key costs fewer recomputes
    than with read_aware=False, which is far under the target."""
    rate, target = 0.02, 0.05
    read_rate = 0.3 * rate / window_for(target)
    kw = dict(min_ttl=0.001, max_ttl=1e6, initial_ttl=window_for(target) / rate)
    aware = simulate(adaptive(target, **kw), rate, reads=60_000, read_rate=read_rate, seed=seed)  # type: ignore[arg-type]
    plain = simulate(adaptive(target, read_aware=False, **kw), rate, reads=60_000, read_rate=read_rate, seed=seed)  # type: ignore[arg-type]
    b = aware["batches"]
    mean = sum(b) / len(b)
    se = math.sqrt(sum((x - mean) ** 2 for x in b) / (len(b) - 1) / len(b))
    assert mean <= target + 2 * se and mean <= 1.2 * target
    assert mean >= 0.5 * target
    assert plain["stale"] < 0.5 * target
    assert aware["computes"] < 0.85 * plain["computes"]


def test_new_keys_start_from_what_their_family_learnt() -> None:
    """20 keys changing every ~10 s teach the function's prior: a new key then
    starts near the TTL a 10 s key needs, not at the configured 60 s."""
    rng = random.Random(9)
    x = window_for(0.01)
    for family_prior, expect in ((5, x / 0.1), (0, 60.0)):
        pol = adaptive(0.01, min_ttl=0.001, max_ttl=3600, initial_ttl=60, family_prior=family_prior)
        for k in range(20):
            t, version, meta = 0.0, 0, None
            for _ in range(60):
                ttl, meta, _ = pol.decide(version, key=f"k{k}", meta=meta, now=t, name="f")
                t += max(ttl, 1.0)
                if rng.random() < -math.expm1(-0.1 * max(ttl, 1.0)):
                    version += 1
        ttl, _, _ = pol.decide("new", key="fresh", meta=None, now=0.0, name="f")
        assert ttl == pytest.approx(expect, rel=0.5)


def recompute_at_expiry(pol: Adaptive, rates: list[tuple[float, int]], seed: int) -> list[float]:
    """The dense-read limit (a read arrives the instant the entry expires): for
    each (rate, recomputes) phase, recompute that many times, the value having
    changed with probability 1 - exp(-rate * ttl). Returns the estimate after each."""
    rng = random.Random(seed)
    t, version = 0.0, 0
    ttl, meta, _ = pol.decide(version, key="k", meta=None, now=t, name="f")
    out = []
    for rate, n in rates:
        for _ in range(n):
            t += ttl
            if rng.random() < -math.expm1(-rate * ttl):
                version += 1
            ttl, meta, _ = pol.decide(version, key="k", meta=meta, now=t, name="f")
            out.append(meta[META_KEY]["r"])
    return out


@pytest.mark.parametrize("before,after", [(0.01, 0.1), (0.1, 0.01), (0.01, 1.0), (1.0, 0.01)])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_estimate_follows_a_rate_shift(before: float, after: float, seed: int) -> None:
    """After 3000 recomputes at one rate the rate shifts 10x or 100x either way:
    with memory=300 the estimate is back within 2x of the new rate in at most
    1500 recomputes (5 x memory) and stays within 2.5x for the next 1500."""
    pol = adaptive(0.01, min_ttl=1e-4, max_ttl=1e7, initial_ttl=window_for(0.01) / before, memory=300)
    est = recompute_at_expiry(pol, [(before, 3000), (after, 3000)], seed)
    assert before / 2 <= est[2999] <= before * 2
    after_shift = est[3000:]
    first = next((i for i, r in enumerate(after_shift, 1) if after / 2 <= r <= after * 2), None)
    assert first is not None and first <= 1500, first
    assert all(after / 2.5 <= r <= after * 2.5 for r in after_shift[1500:])


def test_large_moves_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    pol = adaptive(0.01, min_ttl=1e-4, max_ttl=1e7, initial_ttl=window_for(0.01) / 0.01, memory=300)
    with caplog.at_level(logging.INFO, logger="mistral_cache.adaptive"):
        recompute_at_expiry(pol, [(0.01, 1000)], seed=8)
        quiet = len(caplog.records)
        recompute_at_expiry(pol, [(0.01, 0), (1.0, 1500)], seed=8)
    moves = [r for r in caplog.records if "estimated change interval moved" in r.message]
    assert quiet <= 1  # a steady key is not reported (at most once while the prior washes out)
    assert moves and pol.stats("f")["large_moves"] >= 1


# -- through a real Cache ----------------------------------------------------------
class ManualClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_local_only_cache_learns_and_reports_stats() -> None:
    clock = ManualClock()
    cache = Cache(None, local=Local(ttl=None), refresh=None, clock=Clock(time=clock))
    pol = adaptive(0.01, min_ttl=1, max_ttl=3600, initial_ttl=1)
    hashes = []
    pol.hasher = lambda v: hashes.append(v) or stable_hash(v)  # type: ignore[method-assign]

    @cache.cached(ttl=pol)
    def f(k: str) -> str:
        return "same"

    for _ in range(400):
        f("a")
        hits_before = len(hashes)
        f("a")  # a hit: the policy does not run
        assert len(hashes) == hits_before
        clock.now += 3700
    s = f.stats()["adaptive"]  # type: ignore[attr-defined]
    assert s["keys"] == 1 and s["observations"] == 399 and s["changes"] == 0
    assert s["ttl"]["p50"] == 3600
    assert "adaptive" in cache.stats()["functions"][f.cache_name]  # type: ignore[attr-defined]


async def test_coroutines_learn_through_the_same_core(redis_url: str, namespace: str) -> None:
    """async def functions share the core flow: the policy learns from their
    recomputes too (state through the real Redis envelope), and shortens the TTL
    once the value starts changing."""
    clock = ManualClock()
    cache = Cache(redis_url, namespace=namespace, local=Local(coherence=False), refresh=None, clock=Clock(time=clock))
    pol = adaptive(0.05, min_ttl=0.01, max_ttl=3600, initial_ttl=10)
    version = [0]

    @cache.cached(ttl=pol)
    async def f(k: str) -> int:
        return version[0]

    try:
        for _ in range(30):
            await f("a")
            clock.now += pol.estimate(f.cache_name, f.cache_key("a"))[1] + 0.001  # type: ignore[attr-defined,index]
        calm = pol.estimate(f.cache_name, f.cache_key("a"))[1]  # type: ignore[attr-defined,index]
        for _ in range(30):
            version[0] += 1  # now it changes before every check
            await f("a")
            clock.now += pol.estimate(f.cache_name, f.cache_key("a"))[1] + 0.001  # type: ignore[attr-defined,index]
        busy = pol.estimate(f.cache_name, f.cache_key("a"))[1]  # type: ignore[attr-defined,index]
        s = f.stats()["adaptive"]  # type: ignore[attr-defined]
        assert s["observations"] == 59 and s["changes"] == 30
        assert calm > 10 * 10 and busy < calm / 10
    finally:
        cache.close()


def test_redis_backed_cache_shares_learning_across_processes(redis_url: str, namespace: str) -> None:
    """Two Cache objects (two "processes") share one Redis; the change-rate state
    rides in the envelope meta, so each learns from the other's recomputes."""
    clock = ManualClock()
    rng = random.Random(9)
    rate = 0.05  # one change every 20 s on average
    world = {"version": 0, "next": clock.now + rng.expovariate(rate)}

    def upstream() -> int:
        while world["next"] <= clock.now:
            world["version"] += 1
            world["next"] += rng.expovariate(rate)
        return world["version"]

    pol = adaptive(0.05, min_ttl=0.01, max_ttl=3600, initial_ttl=1.0, memory=400)
    caches = [Cache(redis_url, namespace=namespace, local=None, refresh=None, clock=Clock(time=clock)) for _ in range(2)]
    fns = []
    calls = [0, 0]
    for i, cache in enumerate(caches):
        def fetch(key: str, _i: int = i) -> int:
            calls[_i] += 1
            return upstream()
        fns.append(cache.cached(ttl=pol, key="obj:{key}")(fetch))
    try:
        reads = stale = 0
        for step in range(6000):
            clock.now += rng.expovariate(10.0)
            got = fns[step % 2]("x")
            reads += 1
            stale += got != upstream()
        raw = caches[0].redis.client().get(caches[0].keyspace.entry("obj:x"))  # type: ignore[union-attr]
        env = caches[0].codec.decode(raw)
        state = env.meta[META_KEY]
        assert env.meta["g"] and state["h"] == stable_hash(env.value)
        assert state["n"] > 100  # observations from both "processes" accumulated in one state
        assert calls[0] > 50 and calls[1] > 50
        assert state["r"] == pytest.approx(rate, rel=0.6)
        assert stale / reads < 0.05 * 1.5
        # Redis keeps the entry past its logical expiry so the state survives to the next recompute.
        pttl = caches[0].redis.client().pttl(caches[0].keyspace.entry("obj:x"))  # type: ignore[union-attr]
        assert pttl > env.ttl * 1000
    finally:
        for cache in caches:
            cache.close()
