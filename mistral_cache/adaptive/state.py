"""The per-key state adaptive expiration keeps in an entry's envelope meta (under
:data:`META_KEY`, ``"ad"``), and what it learns from it.

The state (:class:`AdState`: last hash, last check time, decayed exposure, prior
weight, a small histogram of changed intervals, the last TTL and the expiry-to-read
waits) lives in Redis, so every process learns from every recompute; without Redis
(or when the entry is gone) the policy falls back to a bounded in-process table.
Old observations are forgotten geometrically (weight ``decay = 1 - 1/memory`` per
recompute, :func:`observe`), so the estimate follows a key whose rate shifts.

A state read from Redis is checked field by field before use
(:func:`checked_state`): anyone who can write to Redis can plant one, so a malformed
state is no state, never an exception to the caller.
"""

from __future__ import annotations

import math
from typing import Any, TypedDict, cast

from .model import estimate_rate

__all__ = [
    "META_KEY", "AdState", "new_state", "observe", "rate_of", "data_rate", "read_rate_of",
    "checked_state", "compact",
]

META_KEY = "ad"
"""The envelope meta key the state is stored under."""


class _Required(TypedDict):
    h: str | None  # stable hash of the value at the last check
    t: float | None  # time of the last check
    u: float  # decayed seconds of checks that saw no change
    c: dict[str, list[float]]  # half-octave bin of changed intervals -> [decayed weight, weighted interval sum]
    n: float  # decayed count of checks
    k: float  # decayed count of checks that saw a change


class AdState(_Required, total=False):
    """The persisted state, as JSON in the envelope meta. The one-letter names keep
    every entry small; optional fields are absent in states older than them."""

    w: float  # weight of the prior still in force (decays as the key's own history grows)
    r: float | None  # the rate last estimated (the next Newton start); null until learnt
    a: float  # the rate last reported (anchor of the "large move" log)
    T: float | None  # the TTL last chosen; null until chosen
    gs: float  # decayed sum of waits from expiry to the recompute that followed
    gn: float  # decayed count of those waits


def new_state() -> AdState:
    """The state of a key never checked."""
    return {"h": None, "t": None, "u": 0.0, "w": 1.0, "c": {}, "n": 0.0, "k": 0.0, "r": None, "a": 0.0}


def observe(state: AdState, changed: bool, elapsed: float, decay: float) -> None:
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


def rate_of(state: AdState, a0: float, prior_interval: float) -> float:
    """``prior_interval`` is the prior's mean change interval *now* (the family's, once
    learnt), weighted by how much of the key's own history has not yet replaced it."""
    changed = [(w, wt / w) for w, wt in state["c"].values() if w > 0]
    return estimate_rate(a0, state["u"] + state["w"] * a0 * prior_interval, changed, state.get("r"))


def data_rate(state: AdState) -> float:
    """The key's rate from its own checks alone, no prior (Cho & Garcia-Molina's
    ``-log((X + 0.5) / (n + 0.5))`` per mean check interval, ``X`` unchanged checks
    of ``n``): what a key contributes to its family's prior."""
    n, k = float(state["n"]), float(state["k"])
    span = float(state["u"]) + sum(float(wt) for _, wt in state["c"].values())
    if n <= 0 or span <= 0:
        return 0.0
    return -math.log((n - k + 0.5) / (n + 0.5)) * n / span


def read_rate_of(state: AdState) -> float:
    """Reads per second, from the waits between expiry and the next recompute
    (exponential for Poisson reads); ``+1`` keeps the estimate high (conservative)."""
    gs = state.get("gs") or 0.0
    return (state.get("gn", 0.0) + 1) / gs if gs > 0 else math.inf


_MAX_BINS = 256  # half-octave bins from 1e-6 s up span ~130; more is not our writing
_MAX_NUMBER = 1e15  # counts, exposures and durations stay far below; bigger ones overflow the maths


def _number(x: Any) -> bool:
    """A finite, non-negative, not absurd JSON number (``True`` is not a number here)."""
    return type(x) in (int, float) and 0 <= x <= _MAX_NUMBER


def checked_state(state: Any) -> tuple[AdState | None, str]:
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
    return cast(AdState, dict(state)), ""


def compact(state: AdState) -> AdState:
    """A copy with its numbers rounded to 5 or 6 significant digits, for a small entry."""
    out: dict[str, Any] = dict(state)
    for k in ("u", "w", "n", "k", "a", "gs", "gn", "T"):
        if out.get(k) is not None and math.isfinite(out[k]):
            out[k] = float(f"{out[k]:.6g}")
    out["c"] = {b: [float(f"{w:.5g}"), float(f"{wt:.6g}")] for b, (w, wt) in out["c"].items()}
    if out["r"] is not None:
        out["r"] = float(f"{out['r']:.6g}")
    return cast(AdState, out)
