"""The adaptive TTL policy: :class:`Adaptive` (a :class:`mistral_cache.api.TTLPolicy`)
and its factory :func:`adaptive`.

``cache.cached(ttl=adaptive(target_staleness=0.01, min_ttl=1, max_ttl=3600))``

On every recompute the policy reads the key's previous state from the entry's meta
(:mod:`.state`), folds in whether the value changed since, estimates the change rate
and picks the TTL (:mod:`.model`). Nothing runs on a hit.

The read rate ``r`` is learnt without touching the hit path: the wait from an entry's
expiry to the recompute that follows it is exponential with rate ``r`` for Poisson
reads (periodic pollers make it look faster, which is the safe side; bursty readers
make it look slower: ``read_aware=False`` for them).

The prior. A new key of a function starts from what its siblings taught: once
``family_prior`` keys have been checked, the prior's mean rate is the mean of their
prior-free rates (Cho & Garcia-Molina's estimator on each key's own checks), and a
young key's prior is re-based on it as it learns. Until then the configured
``initial_ttl`` / ``prior_interval`` holds. (The family prior is per process, learnt
from the recomputes it makes; the per-key state is shared through Redis. Waits are
measured across processes' clocks, so skew between hosts shows up as read-rate error
on sub-second TTLs.)

A malformed state read from Redis is no state: counted as ``corrupt`` and as
``malformed_states``, logged, never an exception to the caller.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..exceptions import ConfigurationError
from ..observability.stats import Stats
from .model import histogram, quantiles, stable_hash, ttl_for_target, window_for
from .state import META_KEY, AdState, checked_state, compact, data_rate, new_state, observe, rate_of, read_rate_of

__all__ = ["Bound", "FamilyStats", "AdaptiveStats", "Adaptive", "adaptive"]

log = logging.getLogger("mistral_cache.adaptive")

Bound = float | int | _dt.timedelta | Callable[[Any], Any]


def _seconds(spec: Any, value: Any, what: str) -> float:
    if callable(spec) and not isinstance(spec, _dt.timedelta):
        spec = spec(value)
    if isinstance(spec, _dt.timedelta):
        return spec.total_seconds()
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return float(spec)
    raise ConfigurationError(f"adaptive: {what} must be seconds, a timedelta or a callable returning one; got {spec!r}")


class FamilyStats:
    """What one function's keys taught in this process: counters for ``stats()`` and
    the prior-free rates of its checked keys (the family prior)."""

    __slots__ = ("observations", "changes", "moves", "malformed", "keys", "learnt", "rate_sum")

    def __init__(self) -> None:
        self.observations = 0
        self.changes = 0
        self.moves = 0
        self.malformed = 0  # states read from Redis that failed their checks
        self.keys: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self.learnt: dict[str, float] = {}  # rate of each tracked key that has been checked at least once
        self.rate_sum = 0.0

    def forget(self, key: str) -> None:
        self.rate_sum -= self.learnt.pop(key, 0.0)

    def family_rate(self, min_keys: int) -> float | None:
        """Mean rate over the family's checked keys, each from its own checks only
        (prior-free, so the family prior does not feed on itself): the prior for a
        new key. The mean (not the median) keeps a new key's expected stale-read
        fraction near the target across the family, fast keys weighing as they should."""
        n = len(self.learnt)
        if n < min_keys:
            return None
        mean = self.rate_sum / n
        # Keys that never changed contribute exactly 0, but the running sum keeps
        # rounding residue: treat a vanishing mean as "nothing learnt" (the configured prior).
        return mean if mean > 1e-12 else None


class AdaptiveStats(Stats):
    """The engine's counters plus an ``adaptive`` entry in ``fn.stats()``."""

    policy: Adaptive
    fn_name: str

    def snapshot(self) -> dict[str, Any]:
        out = super().snapshot()
        out["adaptive"] = self.policy.stats(self.fn_name)
        return out


class Adaptive:
    """A TTL strategy that learns each key's change rate; see the package docstring.

    ``min_ttl``/``max_ttl`` may be callables of the result (so a result-based
    policy can set the bounds, e.g. tight for a RUNNING execution); ``base``, a
    callable of the result returning seconds or None, overrides the learnt TTL
    for the results it answers (observations are still recorded).
    """

    def __init__(
        self,
        target_staleness: float = 0.01,
        min_ttl: Bound = 1.0,
        max_ttl: Bound = 3600.0,
        prior_interval: float | _dt.timedelta | None = None,
        *,
        initial_ttl: float | _dt.timedelta | None = None,
        prior_weight: float = 1.0,
        memory: float = 300.0,
        base: Callable[[Any], Any] | None = None,
        retain: Bound | None = None,
        log_factor: float = 4.0,
        max_tracked: int = 10_000,
        hasher: Callable[[Any], str] = stable_hash,
        read_aware: bool = True,
        family_prior: int = 5,
    ) -> None:
        self.target = float(target_staleness)
        self.x = window_for(self.target)
        self.min_ttl, self.max_ttl = min_ttl, max_ttl
        for b in (min_ttl, max_ttl):
            if not callable(b) or isinstance(b, _dt.timedelta):
                if _seconds(b, None, "ttl bound") <= 0:
                    raise ConfigurationError(f"adaptive: ttl bounds must be positive, got {b!r}")
        if prior_interval is None:
            if initial_ttl is None:
                initial_ttl = min_ttl if not callable(min_ttl) or isinstance(min_ttl, _dt.timedelta) else 1.0
            prior_interval = _seconds(initial_ttl, None, "initial_ttl") / self.x
        self.prior_interval = _seconds(prior_interval, None, "prior_interval")
        if self.prior_interval <= 0 or prior_weight <= 0 or memory <= 1:
            raise ConfigurationError("adaptive: prior_interval and prior_weight must be positive, memory > 1")
        self.a0 = float(prior_weight)
        self.decay = 1.0 - 1.0 / memory
        self.base = base
        self.retain = retain
        self.log_factor = log_factor
        self.max_tracked = max_tracked
        self.hasher = hasher
        self.read_aware = read_aware
        self.family_min = family_prior
        self._lock = threading.Lock()
        self._fns: dict[str, FamilyStats] = {}
        self._bound: dict[str, Stats] = {}  # the engine counters of each function (last bound wins)
        self._local: OrderedDict[tuple[str, str], AdState] = OrderedDict()

    def __repr__(self) -> str:
        return (f"adaptive(target_staleness={self.target}, min_ttl={self.min_ttl!r}, max_ttl={self.max_ttl!r}, "
                f"prior_interval={self.prior_interval:.4g})")

    # -- the TTL arithmetic ---------------------------------------------------
    def ttl_for_rate(self, lam: float, value: Any = None, reads: float = math.inf) -> float:
        lo = _seconds(self.min_ttl, value, "min_ttl")
        hi = _seconds(self.max_ttl, value, "max_ttl")
        ttl = ttl_for_target(lam, reads, self.target, self.x, hi)
        return min(max(ttl, lo), hi)

    def __call__(self, value: Any) -> float:
        """Context-free use (no engine state): the prior's TTL, or ``base``'s."""
        if self.base is not None:
            b = self.base(value)
            if b is not None:
                return _seconds(b, value, "base")
        return self.ttl_for_rate(1.0 / self.prior_interval, value)

    # -- the TTLPolicy protocol (see api.TTLPolicy) ----------------------------
    def bind(self, name: str, stats: Stats) -> Stats:
        """The function's counters become ones that also report what was learnt."""
        bound = AdaptiveStats()
        bound.merge(stats)
        bound.policy, bound.fn_name = self, name
        with self._lock:
            self._fns.setdefault(name, FamilyStats())
            self._bound[name] = bound
        return bound

    def decide(self, value: Any, *, key: str, meta: dict[str, Any] | None, now: float, name: str) -> tuple[float, dict[str, Any], float]:
        """On a recompute: learn from the previous entry's state, choose the TTL.
        A malformed state in ``meta`` counts as none (see :func:`.state.checked_state`)."""
        raw = meta.get(META_KEY) if isinstance(meta, dict) else None
        state, why = checked_state(raw) if raw is not None else (None, "")
        if why:
            self._malformed(name, key, why)
        if state is None:
            with self._lock:
                local = self._local.get((name, key))
            state = local.copy() if local is not None else new_state()
        with self._lock:
            fs = self._fns.get(name)
            family = fs.family_rate(self.family_min) if fs is not None and self.family_min else None
        digest = self.hasher(value)
        try:
            changed, lam = self._learn(state, digest, now, family)
        except (ArithmeticError, ValueError, TypeError, KeyError, AttributeError) as exc:
            # Checked fields in a combination the maths cannot take: start afresh.
            self._malformed(name, key, f"{type(exc).__name__}: {exc}")
            state = new_state()
            changed, lam = self._learn(state, digest, now, family)
        # Log against the rate last reported (not the last recompute's), so a
        # drift by a large factor is reported however gradual it was.
        anchor = state.get("a") or lam
        moved = bool(lam > 0 and max(anchor / lam, lam / anchor) >= self.log_factor)
        if moved or not state.get("a"):
            state["a"] = lam
        ttl = None
        if self.base is not None:
            b = self.base(value)
            if b is not None:
                ttl = _seconds(b, value, "base")
        if ttl is None:
            ttl = self.ttl_for_rate(lam, value, read_rate_of(state) if self.read_aware else math.inf)
        state["T"] = ttl
        retain = _seconds(self.retain if self.retain is not None else self.max_ttl, value, "retain")
        state = compact(state)
        self._record(name, key, state, changed, anchor if moved else None, lam, ttl)
        return ttl, {META_KEY: state}, retain

    def _learn(self, state: AdState, digest: str, now: float, family: float | None) -> tuple[bool | None, float]:
        """Fold this recompute into ``state`` (in place): (changed since the last check?, rate)."""
        state.setdefault("w", 1.0)
        state["c"] = {b: list(v) for b, v in state["c"].items()}
        changed = None
        last, expiry = state["t"], state.get("T")
        if state["h"] is not None and last is not None and now > last:
            changed = digest != state["h"]
            observe(state, changed, now - last, self.decay)
        if expiry is not None and last is not None and now >= last + expiry:
            # The wait from expiry to the next recompute is a sample of the wait for the next read.
            state["gs"] = (state.get("gs") or 0.0) * self.decay + (now - last - expiry)
            state["gn"] = (state.get("gn") or 0.0) * self.decay + 1
        state["h"], state["t"] = digest, now
        lam = rate_of(state, self.a0, 1.0 / family if family else self.prior_interval)
        if not math.isfinite(lam) or lam < 0:
            raise ArithmeticError(f"rate {lam!r}")
        state["r"] = lam
        return changed, lam

    def _malformed(self, name: str, key: str, why: str) -> None:
        """Count (per function and as ``corrupt``) and log a state that cannot be used."""
        with self._lock:
            fs = self._fns.get(name)
            if fs is None:
                fs = self._fns[name] = FamilyStats()
            fs.malformed += 1
            bound = self._bound.get(name)
        if bound is not None:
            bound.corrupt += 1
        log.warning("%s: key %s: ignoring a malformed adaptive state in Redis (%s)", name, key, why[:200])

    def _record(self, name: str, key: str, state: AdState, changed: bool | None,
                old: float | None, lam: float, ttl: float) -> None:
        moved = old is not None
        with self._lock:
            local = self._local
            local[(name, key)] = state
            local.move_to_end((name, key))
            while len(local) > self.max_tracked:
                local.popitem(last=False)
            fs = self._fns.get(name)
            if fs is None:
                fs = self._fns[name] = FamilyStats()
            if changed is not None:
                fs.observations += 1
                fs.changes += changed
            fs.moves += moved
            fs.keys[key] = (1.0 / lam if lam > 0 else math.inf, ttl)
            fs.keys.move_to_end(key)
            if state["n"] > 0:
                fs.forget(key)
                own = fs.learnt[key] = data_rate(state)
                fs.rate_sum += own
            while len(fs.keys) > self.max_tracked:
                fs.forget(fs.keys.popitem(last=False)[0])
        if moved and old:
            log.info("%s: key %s: estimated change interval moved %.3gs -> %.3gs (ttl now %.3gs)",
                     name, key, 1 / old, 1 / lam if lam else math.inf, ttl)

    # -- explainability -------------------------------------------------------
    def estimate(self, name: str, key: str) -> tuple[float, float] | None:
        """(estimated mean change interval, TTL in use) last chosen for a key, if tracked."""
        with self._lock:
            fs = self._fns.get(name)
            return fs.keys.get(key) if fs is not None else None

    def stats(self, name: str | None = None) -> dict[str, Any]:
        """Per function: observations, changes seen, large moves, and the distribution
        over tracked keys of the estimated change interval and the TTL in use."""
        with self._lock:
            items = [(n, fs) for n, fs in self._fns.items() if name is None or n == name]
            out: dict[str, Any] = {}
            for n, fs in items:
                intervals = [i for i, _ in fs.keys.values() if math.isfinite(i)]
                ttls = [t for _, t in fs.keys.values()]
                out[n] = {
                    "target_staleness": self.target,
                    "observations": fs.observations,
                    "changes": fs.changes,
                    "large_moves": fs.moves,
                    "malformed_states": fs.malformed,
                    "keys": len(fs.keys),
                    "change_interval": quantiles(intervals),
                    "ttl": quantiles(ttls),
                    "histogram": {"change_interval": histogram([i for i, _ in fs.keys.values()]),
                                  "ttl": histogram(ttls)},
                }
        if name is not None:
            one: dict[str, Any] = out.get(name, {})
            return one
        return out


def adaptive(
    target_staleness: float = 0.01,
    min_ttl: Bound = 1.0,
    max_ttl: Bound = 3600.0,
    prior_interval: float | _dt.timedelta | None = None,
    **options: Any,
) -> Adaptive:
    """``cached(ttl=adaptive(...))``: see :class:`Adaptive`."""
    return Adaptive(target_staleness, min_ttl, max_ttl, prior_interval, **options)
