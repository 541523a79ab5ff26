"""Adaptive expiration: each key's TTL learned from how often its value really changes.

``cache.cached(ttl=adaptive(target_staleness=0.01, min_ttl=1, max_ttl=3600))``

Model. A key's value changes as a Poisson process of unknown rate ``lam``. We
only see it when we recompute: each recompute compares a stable hash of the new
value with the previous one and records ``(changed?, elapsed since the last
check)``. That is *censored* data (a check that saw a change does not say how
many changes or when), so the naive "changes / time" is biased low when checks
are far apart. We maximise the exact censored likelihood (Cho & Garcia-Molina,
"Estimating frequency of change", irregular-interval MLE)::

    log L(lam) = sum_changed log(1 - exp(-lam t_i)) - lam * sum_unchanged t_j

times a Gamma(a0, b0) prior (``a0 = prior_weight`` pseudo-changes over
``b0 = prior_weight * prior_interval`` seconds, so a new key starts at the TTL the
prior interval implies). The maximiser is found by a few safeguarded Newton
steps on ``log lam``. For short, regular checks this reduces to Cho &
Garcia-Molina's ``-log((X + 0.5)/(n + 0.5))``-style estimators; the fixed
``a0`` pseudo-change also makes the TTL conservative in expectation
(``E[1/(k+1)] = (1 - e^-mu)/mu`` for Poisson ``k``), so sampling noise in the
estimate does not push the stale-read fraction above the target.

Old observations are forgotten geometrically (weight ``1 - 1/memory`` per
recompute), so the estimate follows a key whose rate shifts.

The TTL. A value cached at time 0 is stale at time ``s`` with probability
``1 - exp(-lam s)``. Reads spread over the TTL window, so the fraction of reads
served stale is the *average* of that over ``[0, T]``::

    f(x) = 1 - (1 - exp(-x)) / x,    x = lam * T   (about x/2 for small x)

We pick ``T = x* / lam`` with ``f(x*) = target_staleness`` (so ``x*`` is about
``2 * target``: twice the TTL that bounding the staleness of a read at the very
end of the window, ``-ln(1 - target)/lam``, would give, at the same stale-read
fraction), then clamp it to ``[min_ttl, max_ttl]``.

Reads are counted too. The read that misses is always fresh, so a key read
``n = r * T`` times per window is stale on ``f(lam T) * n / (1 + n)`` of its reads;
a sparsely read key may keep its value longer for the same per-read target. The
read rate ``r`` is learnt without touching the hit path: the wait from an entry's
expiry to the recompute that follows it is exponential with rate ``r`` for
Poisson reads (periodic pollers make it look faster, which is the safe side;
bursty readers make it look slower: ``read_aware=False`` for them).

The prior. A new key of a function starts from what its siblings taught: once
``family_prior`` keys have been checked, the prior's mean rate is the mean of their
prior-free rates (Cho & Garcia-Molina's estimator on each key's own checks), and a
young key's prior is re-based on it as it learns. Until then the configured
``initial_ttl`` / ``prior_interval`` holds. (The family prior is per process, learnt
from the recomputes it makes; the per-key state is shared through Redis. Waits are
measured across processes' clocks, so skew between hosts shows up as read-rate error
on sub-second TTLs.)

State (``"ad"`` in the envelope meta: last hash, last check time, decayed
exposure, prior weight, a small histogram of changed intervals, the last TTL
and the expiry-to-read waits) lives in Redis, so every
process learns from every recompute; without Redis (or when the entry is gone)
it falls back to a bounded in-process table. Nothing runs on a hit. A state read
from Redis is checked field by field before use: anyone who can write to Redis can
plant one, so a malformed state is no state (counted as ``corrupt`` and as
``malformed_states``, logged), never an exception to the caller.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import pickle
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .exceptions import ConfigurationError
from .observability.stats import Stats

log = logging.getLogger("mistral_cache.adaptive")

META_KEY = "ad"
Bound = float | int | _dt.timedelta | Callable[[Any], Any]


# -- pure maths ---------------------------------------------------------------
def stale_fraction(x: float) -> float:
    """Average probability that a read in a window of ``x`` expected changes is stale."""
    if x <= 0:
        return 0.0
    if x < 1e-4:
        return x / 2 - x * x / 6
    return 1.0 - (-math.expm1(-x)) / x


def window_for(target: float) -> float:
    """``x`` with ``stale_fraction(x) == target`` (expected changes per TTL)."""
    if not 0 < target < 1:
        raise ConfigurationError(f"target_staleness must be in (0, 1), got {target!r}")
    lo, hi = 0.0, 1.0
    while stale_fraction(hi) < target:
        hi *= 2
    for _ in range(80):
        mid = (lo + hi) / 2
        if stale_fraction(mid) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def read_stale_fraction(lam: float, reads: float, ttl: float) -> float:
    """Fraction of a key's reads served stale: a window of ``ttl`` holds ``reads * ttl``
    reads on average, after the one miss (always fresh) that filled it."""
    n = reads * ttl
    return stale_fraction(lam * ttl) * (n / (1 + n) if math.isfinite(n) else 1.0)


def ttl_for_target(lam: float, reads: float, target: float, x: float, hi: float) -> float:
    """The TTL whose stale-read fraction is ``target`` (at most ``hi``)."""
    if lam <= 0:
        return math.inf
    ttl = x / lam  # exact for a key read densely; a sparser one can keep its value longer
    if ttl >= hi or not math.isfinite(reads):
        return ttl
    if read_stale_fraction(lam, reads, hi) <= target:
        return hi
    return _solve(lam, reads, target, ttl, hi)


def _solve(lam: float, reads: float, target: float, lo: float, hi: float) -> float:
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        if read_stale_fraction(lam, reads, mid) < target:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1.0001:
            break
    return lo


def read_rate_of(state: dict[str, Any]) -> float:
    """Reads per second, from the waits between expiry and the next recompute
    (exponential for Poisson reads); ``+1`` keeps the estimate high (conservative)."""
    gs = state.get("gs") or 0.0
    return (state.get("gn", 0.0) + 1) / gs if gs > 0 else math.inf


def _phi(y: float) -> tuple[float, float]:
    """``y / (e^y - 1)`` and its derivative in ``y``."""
    if y < 1e-6:
        return 1.0 - y / 2, -0.5
    if y > 700:
        return 0.0, 0.0
    em1 = math.expm1(y)
    val = y / em1
    return val, (em1 - y * (em1 + 1)) / (em1 * em1)


def estimate_rate(a0: float, exposure: float, changed: list[tuple[float, float]], start: float | None = None) -> float:
    """MAP change rate: Gamma(a0, ·) prior, ``exposure`` seconds of unchanged checks
    (prior pseudo-exposure included) and ``changed`` as ``(weight, interval)`` pairs.

    Solves ``h(u) = a0 + sum w phi(lam t) - exposure * lam = 0`` for ``u = log lam``
    (``h`` is strictly decreasing) by Newton steps kept inside a shrinking bracket.
    """
    changed = [(w, t) for w, t in changed if w > 0 and t > 0]
    total = a0 + sum(w for w, _ in changed)
    if total <= 0:
        return 0.0
    if exposure <= 0 and a0 <= 0 and not changed:
        return 0.0
    if exposure <= 0:
        exposure = 1e-9  # all checks saw changes and no prior: a very fast key

    def h(u: float) -> tuple[float, float]:
        lam = math.exp(u)
        val, der = a0 - exposure * lam, -exposure * lam
        for w, t in changed:
            p, dp = _phi(lam * t)
            val += w * p
            der += w * dp * lam * t
        return val, der

    lo, hi = math.log(1e-15), math.log(1e9)
    u = math.log(start) if start and start > 0 else math.log(total / (exposure + sum(w * t for w, t in changed)))
    u = min(max(u, lo), hi)
    for _ in range(60):
        val, der = h(u)
        if abs(val) < 1e-10 * max(1.0, total):
            break
        if val > 0:
            lo = u
        else:
            hi = u
        nxt = u - val / der if der < 0 else (lo + hi) / 2
        if not lo < nxt < hi:
            nxt = (lo + hi) / 2
        if abs(nxt - u) < 1e-12:
            u = nxt
            break
        u = nxt
    return math.exp(u)


def stable_hash(value: Any) -> str:
    """A hash of the value's content that every process computes the same way
    (canonical JSON with sorted keys; pickle, then repr, for what JSON cannot hold)."""
    try:
        data = json.dumps(value, sort_keys=True, separators=(",", ":"), default=_canon).encode()
    except (TypeError, ValueError):
        try:
            data = pickle.dumps(value, protocol=4)
        except Exception:
            data = repr(value).encode()
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def _canon(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError


def _seconds(spec: Any, value: Any, what: str) -> float:
    if callable(spec) and not isinstance(spec, _dt.timedelta):
        spec = spec(value)
    if isinstance(spec, _dt.timedelta):
        return spec.total_seconds()
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return float(spec)
    raise ConfigurationError(f"adaptive: {what} must be seconds, a timedelta or a callable returning one; got {spec!r}")


def _quantiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    s = sorted(values)

    def q(p: float) -> float:
        return s[min(len(s) - 1, int(p * (len(s) - 1) + 0.5))]

    return {"p10": q(0.1), "p50": q(0.5), "p90": q(0.9), "min": s[0], "max": s[-1]}


def histogram(values: list[float]) -> dict[str, int]:
    """Half-octave bins (``floor(2 log2 v)``, ``"inf"`` for never): mergeable across processes."""
    out: dict[str, int] = {}
    for v in values:
        b = "inf" if not math.isfinite(v) else str(math.floor(2 * math.log2(max(v, 1e-9))))
        out[b] = out.get(b, 0) + 1
    return out


def histogram_quantiles(hist: dict[str, int]) -> dict[str, float] | None:
    """p10/p50/p90 of a :func:`histogram` (each bin at its geometric midpoint)."""
    bins = sorted(((math.inf if b == "inf" else 2 ** ((int(b) + 0.5) / 2), n) for b, n in hist.items() if n > 0))
    total = sum(n for _, n in bins)
    if not total:
        return None
    out = {}
    for name, p in (("p10", 0.1), ("p50", 0.5), ("p90", 0.9)):
        seen = 0
        for value, n in bins:
            seen += n
            if seen >= p * total:
                out[name] = value
                break
    return out


def merge_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One function's :meth:`Adaptive.stats` from several processes, combined."""
    out: dict[str, Any] = {"processes": len(parts)}
    for field in ("observations", "changes", "large_moves", "keys"):
        out[field] = sum(int(p.get(field, 0)) for p in parts)
    out["target_staleness"] = next((p["target_staleness"] for p in parts if "target_staleness" in p), None)
    for what in ("change_interval", "ttl"):
        merged: dict[str, int] = {}
        for p in parts:
            for b, n in p.get("histogram", {}).get(what, {}).items():
                merged[b] = merged.get(b, 0) + int(n)
        out[what] = histogram_quantiles(merged)
    return out


# -- the state kept in the envelope ------------------------------------------
def new_state() -> dict[str, Any]:
    return {"h": None, "t": None, "u": 0.0, "w": 1.0, "c": {}, "n": 0.0, "k": 0.0, "r": None, "a": 0.0}


def observe(state: dict[str, Any], changed: bool, elapsed: float, decay: float) -> None:
    """Fold one check into ``state`` in place, forgetting older ones by ``decay``."""
    state["u"] *= decay
    state["w"] *= decay
    state["n"] = state["n"] * decay + 1
    state["k"] = state["k"] * decay + (1 if changed else 0)
    bins: dict[str, list[float]] = state["c"]
    for b in list(bins):
        w, wt = bins[b]
        w, wt = w * decay, wt * decay
        if w < 1e-3:
            del bins[b]
        else:
            bins[b] = [w, wt]
    if changed:
        b = str(math.floor(math.log2(max(elapsed, 1e-6)) * 2))  # half-octave bins of the changed intervals
        w, wt = bins.get(b, [0.0, 0.0])
        bins[b] = [w + 1, wt + elapsed]
    else:
        state["u"] += elapsed


def rate_of(state: dict[str, Any], a0: float, prior_interval: float) -> float:
    """``prior_interval`` is the prior's mean change interval *now* (the family's, once
    learnt), weighted by how much of the key's own history has not yet replaced it."""
    changed = [(w, wt / w) for w, wt in state["c"].values() if w > 0]
    return estimate_rate(a0, state["u"] + state["w"] * a0 * prior_interval, changed, state.get("r"))


def data_rate(state: dict[str, Any]) -> float:
    """The key's rate from its own checks alone, no prior (Cho & Garcia-Molina's
    ``-log((X + 0.5) / (n + 0.5))`` per mean check interval, ``X`` unchanged checks
    of ``n``): what a key contributes to its family's prior."""
    n, k = float(state["n"]), float(state["k"])
    span = float(state["u"]) + sum(float(wt) for _, wt in state["c"].values())
    if n <= 0 or span <= 0:
        return 0.0
    return -math.log((n - k + 0.5) / (n + 0.5)) * n / span


_MAX_BINS = 256  # half-octave bins from 1e-6 s up span ~130; more is not our writing
_MAX_NUMBER = 1e15  # counts, exposures and durations stay far below; bigger ones overflow the maths


def _number(x: Any) -> bool:
    """A finite, non-negative, not absurd JSON number (``True`` is not a number here)."""
    return type(x) in (int, float) and 0 <= x <= _MAX_NUMBER


def _checked_state(state: Any) -> tuple[dict[str, Any] | None, str]:
    """``state`` as read from an entry's meta, or None and why it is unusable.

    Redis is writable by more than this library: every field the maths reads is
    checked for type and range, so no planted state can raise or poison the estimate.
    """
    if not isinstance(state, dict):
        return None, f"a {type(state).__name__}, not an object"
    missing = [f for f in ("h", "t", "u", "c", "n", "k") if f not in state]
    if missing:
        return None, f"missing {', '.join(missing)}"
    h, t = state["h"], state["t"]
    if not (h is None or (isinstance(h, str) and len(h) <= 1024)):
        return None, "bad h"
    if not (t is None or (type(t) in (int, float) and math.isfinite(t))):
        return None, "bad t"
    for f in ("u", "n", "k"):
        if not _number(state[f]):
            return None, f"bad {f}"
    if state["k"] > state["n"]:
        return None, "more changes than checks"
    for f in ("w", "a", "gs", "gn"):  # absent in older states; never null
        if f in state and not _number(state[f]):
            return None, f"bad {f}"
    for f in ("r", "T"):  # null until learnt
        if state.get(f) is not None and not _number(state[f]):
            return None, f"bad {f}"
    bins = state["c"]
    if not isinstance(bins, dict) or len(bins) > _MAX_BINS:
        return None, "bad c"
    for b, pair in bins.items():
        if not (isinstance(b, str) and len(b) <= 8 and isinstance(pair, list) and len(pair) == 2
                and _number(pair[0]) and _number(pair[1])):
            return None, "bad c bin"
    return dict(state), ""


def _compact(state: dict[str, Any]) -> dict[str, Any]:
    out = dict(state)
    for k in ("u", "w", "n", "k", "a", "gs", "gn", "T"):
        if out.get(k) is not None and math.isfinite(out[k]):
            out[k] = float(f"{out[k]:.6g}")
    out["c"] = {b: [float(f"{w:.5g}"), float(f"{wt:.6g}")] for b, (w, wt) in out["c"].items()}
    if out["r"] is not None:
        out["r"] = float(f"{out['r']:.6g}")
    return out


class _FnStats:
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
    """A TTL strategy that learns each key's change rate; see the module docstring.

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
        self._fns: dict[str, _FnStats] = {}
        self._bound: dict[str, Stats] = {}  # the engine counters of each function (last bound wins)
        self._local: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()

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
            self._fns.setdefault(name, _FnStats())
            self._bound[name] = bound
        return bound

    def decide(self, value: Any, *, key: str, meta: dict[str, Any] | None, now: float, name: str) -> tuple[float, dict[str, Any], float]:
        """On a recompute: learn from the previous entry's state, choose the TTL.
        A malformed state in ``meta`` counts as none (see :func:`_checked_state`)."""
        raw = meta.get(META_KEY) if isinstance(meta, dict) else None
        state, why = _checked_state(raw) if raw is not None else (None, "")
        if why:
            self._malformed(name, key, why)
        if state is None:
            with self._lock:
                local = self._local.get((name, key))
            state = dict(local) if local is not None else new_state()
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
        state = _compact(state)
        self._record(name, key, state, changed, anchor if moved else None, lam, ttl)
        return ttl, {META_KEY: state}, retain

    def _learn(self, state: dict[str, Any], digest: str, now: float, family: float | None) -> tuple[bool | None, float]:
        """Fold this recompute into ``state`` (in place): (changed since the last check?, rate)."""
        state.setdefault("w", 1.0)
        state["c"] = {b: list(v) for b, v in state["c"].items()}
        changed = None
        if state["h"] is not None and state["t"] is not None and now > state["t"]:
            changed = digest != state["h"]
            observe(state, changed, now - state["t"], self.decay)
        if state.get("T") is not None and state["t"] is not None and now >= state["t"] + state["T"]:
            # The wait from expiry to the next recompute is a sample of the wait for the next read.
            state["gs"] = (state.get("gs") or 0.0) * self.decay + (now - state["t"] - state["T"])
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
                fs = self._fns[name] = _FnStats()
            fs.malformed += 1
            bound = self._bound.get(name)
        if bound is not None:
            bound.corrupt += 1
        log.warning("%s: key %s: ignoring a malformed adaptive state in Redis (%s)", name, key, why[:200])

    def _record(self, name: str, key: str, state: dict[str, Any], changed: bool | None,
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
                fs = self._fns[name] = _FnStats()
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
                    "change_interval": _quantiles(intervals),
                    "ttl": _quantiles(ttls),
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
