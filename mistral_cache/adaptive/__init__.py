"""Adaptive expiration: each key's TTL learned from how often its value really changes.

``cache.cached(ttl=adaptive(target_staleness=0.01, min_ttl=1, max_ttl=3600))``

Each recompute compares a stable hash of the new value with the previous one, folds
``(changed?, elapsed)`` into the key's state kept in the entry's meta in Redis, and
picks the TTL whose expected fraction of stale reads is ``target_staleness``.

- :mod:`.model`: the estimator maths (the censored-check MLE, :func:`window_for`,
  :func:`ttl_for_target`, half-octave histograms); pure functions.
- :mod:`.state`: the typed state persisted under :data:`META_KEY` (``"ad"``), its
  validation and how one check is folded into it.
- :mod:`.policy`: :class:`Adaptive`, a :class:`mistral_cache.api.TTLPolicy`, and
  :func:`adaptive`.
"""

from .model import (
    estimate_rate,
    histogram,
    histogram_quantiles,
    merge_stats,
    quantiles,
    read_stale_fraction,
    stable_hash,
    stale_fraction,
    ttl_for_target,
    window_for,
)
from .policy import Adaptive, AdaptiveStats, Bound, FamilyStats, adaptive
from .state import META_KEY, AdState, checked_state, compact, data_rate, new_state, observe, rate_of, read_rate_of

__all__ = [
    "META_KEY", "AdState", "Adaptive", "AdaptiveStats", "Bound", "FamilyStats", "adaptive",
    "checked_state", "compact", "data_rate", "estimate_rate", "histogram", "histogram_quantiles",
    "merge_stats", "new_state", "observe", "quantiles", "rate_of", "read_rate_of", "read_stale_fraction",
    "stable_hash", "stale_fraction", "ttl_for_target", "window_for",
]
