"""The estimator maths of adaptive expiration: pure functions, no state, no locks.

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
steps on ``log lam`` (:func:`estimate_rate`). For short, regular checks this reduces
to Cho & Garcia-Molina's ``-log((X + 0.5)/(n + 0.5))``-style estimators; the fixed
``a0`` pseudo-change also makes the TTL conservative in expectation
(``E[1/(k+1)] = (1 - e^-mu)/mu`` for Poisson ``k``), so sampling noise in the
estimate does not push the stale-read fraction above the target.

The TTL. A value cached at time 0 is stale at time ``s`` with probability
``1 - exp(-lam s)``. Reads spread over the TTL window, so the fraction of reads
served stale is the *average* of that over ``[0, T]``::

    f(x) = 1 - (1 - exp(-x)) / x,    x = lam * T   (about x/2 for small x)

We pick ``T = x* / lam`` with ``f(x*) = target_staleness`` (:func:`window_for`; so
``x*`` is about ``2 * target``: twice the TTL that bounding the staleness of a read
at the very end of the window, ``-ln(1 - target)/lam``, would give, at the same
stale-read fraction), then clamp it to ``[min_ttl, max_ttl]``.

Reads are counted too. The read that misses is always fresh, so a key read
``n = r * T`` times per window is stale on ``f(lam T) * n / (1 + n)`` of its reads
(:func:`read_stale_fraction`, :func:`ttl_for_target`).

Statistics across processes are kept as half-octave histograms (:func:`histogram`),
which merge by adding counts (:func:`merge_stats`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import pickle
from typing import Any

from ..exceptions import ConfigurationError

__all__ = [
    "stale_fraction", "window_for", "read_stale_fraction", "ttl_for_target", "estimate_rate",
    "stable_hash", "quantiles", "histogram", "histogram_quantiles", "merge_stats",
]


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


def quantiles(values: list[float]) -> dict[str, float] | None:
    """p10/p50/p90, min and max of ``values`` (nearest rank); None for none."""
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
