"""Freshness scenario: adaptive TTLs versus fixed TTLs on keys with mixed change rates.

A population of keys whose values change as Poisson processes (mean change
intervals log-uniform between a few seconds and a day, a fifth that never
change) is read on a Zipf pattern under a simulated clock, through a real
:class:`mistral_cache.Cache` (local tier; the clock is injected with ``timer=``).
For each policy we count upstream calls and stale reads (a read that returned an
older version than the upstream held at that instant), and plot the
hit-rate / stale-read frontier: fixed TTLs (swept) against adaptive TTLs (swept
over ``target_staleness``).

``python -m benchmarks.freshness [--quick] [--out DIR]``
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import math
import os
import random
import time
from collections.abc import Callable
from typing import Any

from mistral_cache import Cache, Clock, Local
from mistral_cache.adaptive import adaptive

from . import freshness_mistral

FIXED_REPORTED = (1.0, 10.0, 60.0, 300.0)
FIXED_SWEEP = (1.0, 3.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
TARGETS = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9)
PLOT_NAME = "freshness_frontier.png"
#: The tutorial recipe's fixed TTL (seconds): what the README and the issues call "the tutorial".
TUTORIAL_TTL = 300
MISTRAL_PLOT_NAME = "freshness_mistral.png"


def tutorial_read(redis: Any, key: str, load: Callable[[], Any], ttl: int = TUTORIAL_TTL) -> Any:
    """The tutorial recipe, for the benchmarks that compare against it: Redis GET,
    else ``load()`` and SET with a fixed TTL (JSON), no invalidation, no local tier."""
    raw = redis.get(key)
    if raw is not None:
        return json.loads(raw)
    value = load()
    redis.set(key, json.dumps(value), ex=ttl)
    return value


class World:
    """Keys whose upstream value is a version counter bumped by a Poisson process."""

    def __init__(self, n_keys: int, seed: int) -> None:
        rng = random.Random(seed)
        self.rates: list[float] = []
        for _ in range(n_keys):
            if rng.random() < 0.2:
                self.rates.append(0.0)
            else:
                self.rates.append(1.0 / math.exp(rng.uniform(math.log(5.0), math.log(86400.0))))
        self.rng = random.Random(seed + 1)
        self.version = [0] * n_keys
        self.next_change = [self.rng.expovariate(r) if r > 0 else math.inf for r in self.rates]
        self.now = 0.0

    def current(self, k: int) -> int:
        nc = self.next_change[k]
        if nc <= self.now:
            rate, v = self.rates[k], self.version[k]
            while nc <= self.now:
                v += 1
                nc += self.rng.expovariate(rate)
            self.version[k], self.next_change[k] = v, nc
        return self.version[k]


def simulate(ttl: Any, *, n_keys: int, reads: int, read_rate: float, zipf_s: float, seed: int) -> dict[str, Any]:
    world = World(n_keys, seed)
    order = list(range(n_keys))
    random.Random(seed + 2).shuffle(order)  # popularity independent of change rate
    cum = list(itertools.accumulate(1.0 / (i + 1) ** zipf_s for i in range(n_keys)))
    total = cum[-1]
    cache = Cache(None, local=Local(maxsize=n_keys + 10, ttl=None, coherence=False), lock=None, refresh=None, clock=Clock(time=lambda: world.now))
    upstream = [0]

    @cache.cached(ttl=ttl)
    def fetch(k: int) -> int:
        upstream[0] += 1
        return world.current(k)

    rng = random.Random(seed + 3)
    stale = 0
    started = time.perf_counter()
    for _ in range(reads):
        world.now += rng.expovariate(read_rate)
        k = order[bisect.bisect_left(cum, rng.random() * total)]
        if fetch(k) != world.current(k):
            stale += 1
    wall = time.perf_counter() - started
    out = {
        "reads": reads, "upstream_calls": upstream[0], "stale_reads": stale,
        "hit_rate": 1 - upstream[0] / reads, "stale_fraction": stale / reads,
        "us_per_read": 1e6 * wall / reads, "sim_seconds": world.now,
    }
    ad = fetch.stats().get("adaptive")  # type: ignore[attr-defined]
    if ad:
        out["ttl_p50"] = (ad.get("ttl") or {}).get("p50")
        out["change_interval_p50"] = (ad.get("change_interval") or {}).get("p50")
    return out


def run(quick: bool = True, out_dir: str | None = None, mistral: bool = True) -> dict[str, Any]:
    n_keys, reads = (300, 60_000) if quick else (2_000, 600_000)
    params = dict(n_keys=n_keys, reads=reads, read_rate=20.0, zipf_s=1.0, seed=7)
    rows: dict[str, dict[str, Any]] = {}
    for t in FIXED_SWEEP:
        rows[f"fixed {t:g}s"] = simulate(t, **params) | {"kind": "fixed", "param": t}  # type: ignore[arg-type]
    for target in TARGETS:
        policy = adaptive(target_staleness=target, min_ttl=0.5, max_ttl=3600.0, initial_ttl=10.0)
        rows[f"adaptive {target:g}"] = simulate(policy, **params) | {"kind": "adaptive", "param": target}  # type: ignore[arg-type]
    result: dict[str, Any] = {"scenario": "freshness", "quick": quick, "params": params, "policies": rows}
    result["table"] = table(rows)
    result["dominated_fixed"] = dominance(rows)
    result["hit_path_us"] = {"fixed 60s": hit_cost(60.0), "adaptive 0.01": hit_cost(adaptive(0.01))}
    if mistral:
        m = result["mistral"] = freshness_mistral.run(quick)
        m["dominated_fixed"] = dominance(m["policies"])
        m["dominated_fixed_by_state_rules_adaptive"] = dominance(m["policies"], "state rules + adaptive")
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        result["plot"] = plot(rows, os.path.join(out_dir, PLOT_NAME))
        if mistral:
            result["mistral"]["plot"] = plot(result["mistral"]["policies"], os.path.join(out_dir, MISTRAL_PLOT_NAME),
                                             "Mistral polling workload: adaptive vs fixed TTL")
        with open(os.path.join(out_dir, "freshness.json"), "w") as fh:
            json.dump(result, fh, indent=2, default=str)
    return result


def hit_cost(ttl: Any, n: int = 50_000) -> float:
    """Microseconds per local hit: the adaptive policy must add nothing here."""
    cache = Cache(None, local=Local(ttl=None, coherence=False), refresh=None)

    @cache.cached(ttl=ttl)
    def f(k: int) -> int:
        return k

    f(1)
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            f(1)
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
    return round(best, 3)


def dominance(rows: dict[str, dict[str, Any]], kind: str = "adaptive") -> dict[str, bool]:
    """Per fixed TTL: does the ``kind`` frontier (linear between targets) reach a
    higher hit rate at that fixed TTL's stale fraction?"""
    pts = sorted((r["stale_fraction"], r["hit_rate"]) for r in rows.values() if r["kind"] == kind)
    out = {}
    for name, r in rows.items():
        if r["kind"] != "fixed":
            continue
        s = r["stale_fraction"]
        best = None
        for (s0, h0), (s1, h1) in itertools.pairwise(pts):
            if s0 <= s <= s1:
                best = h0 + (h1 - h0) * ((s - s0) / (s1 - s0) if s1 > s0 else 0)
        if best is None and s >= pts[-1][0]:
            best = pts[-1][1]
        out[name] = best is not None and best > r["hit_rate"]
    return out


def table(rows: dict[str, dict[str, Any]], every_fixed: bool = False) -> str:
    lines = ["| policy | upstream calls | stale reads | hit rate | stale-read fraction | median TTL | us/read |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        if r["kind"] == "fixed" and r["param"] not in FIXED_REPORTED and not every_fixed:
            continue
        med = r.get("ttl_p50")
        lines.append(f"| {name} | {r['upstream_calls']} | {r['stale_reads']} | {r['hit_rate']:.4f} | "
                     f"{r['stale_fraction']:.5f} | {'' if med is None else f'{med:.3g}s'} | {r['us_per_read']:.1f} |")
    return "\n".join(lines)


def plot(rows: dict[str, dict[str, Any]], path: str,
         title: str = "Freshness frontier: adaptive vs fixed TTL (Zipf reads, mixed change rates)") -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind, style in (("fixed", "o-"), ("adaptive", "s-"), ("state rules + adaptive", "^-")):
        pts = sorted((r["stale_fraction"], r["hit_rate"], r["param"]) for r in rows.values() if r["kind"] == kind)
        ax.plot([max(p[0], 1e-5) for p in pts], [p[1] for p in pts], style, label=f"{kind} TTL")
        for s, h, p in pts:
            ax.annotate(f"{p:g}{'s' if kind == 'fixed' else ''}", (max(s, 1e-5), h), fontsize=7,
                        textcoords="offset points", xytext=(4, -8))
    for name, r in rows.items():
        if r["kind"] == "state rules (default)":
            ax.plot([max(r["stale_fraction"], 1e-5)], [r["hit_rate"]], "D", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("stale-read fraction (log)")
    ax.set_ylabel("hit rate (1 - upstream calls / reads)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="bench-out")
    ap.add_argument("--all", action="store_true", help="list every swept fixed TTL in the table")
    ap.add_argument("--no-mistral", action="store_true", help="skip the Mistral polling workload")
    args = ap.parse_args(argv)
    res = run(args.quick, args.out, mistral=not args.no_mistral)
    print(table(res["policies"], every_fixed=args.all))
    print("adaptive frontier above fixed TTL:", res["dominated_fixed"])
    print("hit path (us/hit):", res["hit_path_us"])
    print("plot:", res.get("plot"))
    if "mistral" in res:
        m = res["mistral"]
        print(freshness_mistral.table(m["policies"]))
        print("Mistral: adaptive frontier above fixed TTL:", m["dominated_fixed"])
        print("Mistral: state rules + adaptive frontier above fixed TTL:", m["dominated_fixed_by_state_rules_adaptive"])
        print("plot:", m.get("plot"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
