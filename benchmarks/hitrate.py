"""Scenario 2: hit rate.

(a) Zipf workloads (s = 0.8, 1.0, 1.2) over N keys, local capacity 1% and 10% of N:
hit rate per tier of this library against the offline optimum (Belady) at the same
local capacity, with the local tier a plain LRU (the default) and with TinyLFU
admission (``Local(admission="tinylfu")``). The Redis tier is sized for the working
set (as deployments are), so a local miss on a key seen before is a Redis hit and
only first sightings reach the function. Then the same three policies on a
scan-heavy trace (a hot set mixed with a loop over more keys than the cache holds)
and on the key sequence of (b)'s Mistral polling workload, replayed at local
capacities below its working set (at the bench's 4,096 every policy holds it all).
Traces are seeded; TinyLFU's hashing is Python's, randomised per process, so its
figures move in the third decimal from run to run.

(b) A Mistral polling workload on the (simulated or given) Mistral API: pollers on
running executions, dashboards listing workflows and executions, occasional writes
(new executions). Hit rate, upstream requests saved and stale reads against the
simulator's ground truth, for this library, the tutorial recipe (Redis GET/SET with a
fixed 300 s TTL) and no cache.
"""

from __future__ import annotations

import heapq
import json
import os
import random
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from mistral_cache import Local

from .common import Env, have

NAME = "hitrate"
TITLE = "Hit rate"

SKEWS = (0.8, 1.0, 1.2)
CAPACITIES = (0.01, 0.10)


# -- (a) Zipf ---------------------------------------------------------------------------
def zipf_trace(n_keys: int, n_requests: int, s: float, seed: int) -> list[int]:
    import numpy as np

    rng = np.random.default_rng(seed)
    ranks = np.arange(1, n_keys + 1, dtype=np.float64)
    p = ranks ** (-s)
    p /= p.sum()
    perm = rng.permutation(n_keys)  # popular keys are not the small numbers
    return [int(k) for k in perm[rng.choice(n_keys, size=n_requests, p=p)]]


def belady_hits(trace: list[int], capacity: int) -> int:
    """Hits of the clairvoyant policy (evict the key used farthest in the future)."""
    n = len(trace)
    nxt = [n] * n
    last: dict[int, int] = {}
    for i in range(n - 1, -1, -1):
        nxt[i] = last.get(trace[i], n + i)  # never again: distinct "infinity"
        last[trace[i]] = i
    cached: dict[int, int] = {}  # key -> its next use
    heap: list[tuple[int, int]] = []  # (-next use, key), lazily deleted
    hits = 0
    for i, key in enumerate(trace):
        if key in cached:
            hits += 1
        elif len(cached) >= capacity:
            while True:
                neg, victim = heapq.heappop(heap)
                if cached.get(victim) == -neg:
                    del cached[victim]
                    break
        cached[key] = nxt[i]
        heapq.heappush(heap, (-nxt[i], key))
    return hits


def scan_trace(capacity: int, n_requests: int, hot_share: float, seed: int) -> list[int]:
    """A hot set of ``capacity // 2`` keys read uniformly (share ``hot_share``) mixed
    with a loop over ``4 * capacity`` other keys, read in order, again and again: a
    periodic batch job or a crawler next to the interactive traffic. An LRU lets the
    loop push the hot set out; the loop itself never hits at this capacity."""
    rng = random.Random(seed)
    hot, loop = max(1, capacity // 2), 4 * capacity
    out, j = [], 0
    for _ in range(n_requests):
        if rng.random() < hot_share:
            out.append(rng.randrange(hot))
        else:
            out.append(hot + j % loop)
            j += 1
    return out


def polling_trace(pollers: int, polls: int, dashboards: int, watched: int = 32) -> list[int]:
    """The key sequence of (b)'s workload, as its threads interleave: each poller reads
    90% its own 8 executions in turn (a window of ``watched``, shifted by poller) and
    10% any; every 4th poll round a dashboard lists executions or workflows. Keys:
    executions ``0..watched-1``, then the two lists. Seeded as (b)'s pollers are."""
    rngs = [random.Random(seed) for seed in range(pollers)]
    ids = list(range(watched))
    mine = [ids[s % watched:] + ids[:s % watched] for s in range(pollers)]
    out: list[int] = []
    views = [0] * dashboards
    for i in range(polls):
        for p in range(pollers):
            out.append(mine[p][i % 8] if rngs[p].random() < 0.9 else rngs[p].choice(ids))
        if i % 4 == 0:
            for d in range(dashboards):
                out.append(watched + views[d] % 2)
                views[d] += 1
    return out


def ours_local_hits(trace: list[int], capacity: int, admission: str | None = None) -> tuple[int, int]:
    """(local hits, function calls) of this library's local tier on ``trace``."""
    from mistral_cache import Cache

    cache = Cache(redis_url=None, namespace="zipf", local=Local(maxsize=capacity, ttl=None, admission=admission),
                  refresh=None)
    calls = [0]

    def load(k: int) -> int:
        calls[0] += 1
        return k

    fn = cache.cached(ttl=3600, key="z:{k}")(load)
    for k in trace:
        fn(k)
    cache.close()
    return len(trace) - calls[0], calls[0]


def _policies(trace: list[int], cap: int) -> dict[str, Any]:
    """LRU, TinyLFU and Belady hit rates on one trace at one capacity."""
    n = len(trace)
    lru, _ = ours_local_hits(trace, cap)
    lfu, _ = ours_local_hits(trace, cap, "tinylfu")
    opt = belady_hits(trace, cap)
    return {
        "requests": n, "capacity": cap,
        "local_hit_rate": round(lru / n, 4), "tinylfu_local_hit_rate": round(lfu / n, 4),
        "belady_local_hit_rate": round(opt / n, 4),
        "local_vs_belady": round(lru / opt, 4) if opt else None,
        "tinylfu_vs_belady": round(lfu / opt, 4) if opt else None,
    }


def run_traces(env: Env) -> list[dict[str, Any]]:
    """The scan-heavy and the Mistral polling traces, three policies each."""
    rows: list[dict[str, Any]] = []
    cap, n_req = (100, 40_000) if env.quick else (1000, 400_000)
    for share in (0.3, 0.5):
        env.progress(f"scan trace, hot share {share:.0%}", len(rows), 5)
        rows.append({"trace": f"scan: hot {cap // 2} keys {share:.0%}, loop {4 * cap}", "capacity_frac": None,
                     **_policies(scan_trace(cap, n_req, share, seed=int(share * 100)), cap)})
    pollers, polls = (6, 70) if env.quick else (12, 300)
    trace = polling_trace(pollers, polls * 4, 3)  # 4x (b)'s polls: more than a warm-up
    distinct = len(set(trace))
    for cap in (4, 8, 16):
        env.progress(f"Mistral polling trace, capacity {cap}", len(rows), 5)
        rows.append({"trace": f"Mistral polling ({distinct} keys)", "capacity_frac": cap / distinct,
                     **_policies(trace, cap)})
    env.progress("traces done", 5, 5)
    return rows


def run_zipf(env: Env) -> list[dict[str, Any]]:
    n_keys, n_req = (10_000, 20_000) if env.quick else (100_000, 1_000_000)
    rows = []
    total = len(SKEWS) * len(CAPACITIES)
    done = 0
    for s in SKEWS:
        trace = zipf_trace(n_keys, n_req, s, seed=int(s * 100))
        distinct = len(set(trace))
        for frac in CAPACITIES:
            env.progress(f"zipf s={s} local capacity {frac:.0%}", done, total)
            cap = max(1, int(n_keys * frac))
            row = _policies(trace, cap)
            local = round(row["local_hit_rate"] * n_req)
            redis_hits = n_req - local - distinct  # local misses on keys seen before (LRU)
            rows.append({
                "s": s, "keys": n_keys, "capacity_frac": frac, **row,
                "redis_hit_rate": round(redis_hits / n_req, 4),
                "miss_rate": round(distinct / n_req, 4),
                "total_hit_rate": round(1 - distinct / n_req, 4),
            })
            done += 1
    env.progress("zipf done", total, total)
    return rows


# -- (b) Mistral polling ----------------------------------------------------------------
def _client(url: str) -> Any:
    from mistralclient.api import client as mc

    return mc.client(mistral_url=url)


def _state_ttl(value: Any) -> float:
    state = value.get("state") if isinstance(value, dict) else None
    if state == "SUCCESS":
        return 24 * 3600.0
    if state in ("ERROR", "CANCELLED"):
        return 300.0
    if isinstance(value, list):
        return 5.0
    return 2.0


class _Api:
    """The three ways a program reads Mistral: uncached, the tutorial recipe, this library."""

    def __init__(self, variant: str, env: Env, ns: str) -> None:
        self.variant = variant
        self.upstream = 0
        self.lock = threading.Lock()
        self.via = variant
        self.local = threading.local()
        self.env = env
        self.cache: Any = None
        self.facade: Any = None
        if variant == "tutorial":
            import redis

            self.redis = redis.Redis.from_url(env.redis_url)
        elif variant == "mistral_cache":
            from mistral_cache import Cache

            self.cache = Cache(redis_url=env.redis_url, namespace=ns, local=Local(maxsize=4096))
            try:
                from mistral_cache.mistral import CachedMistralClient

                self.facade = CachedMistralClient(_client(env.mistral_url), cache=self.cache, retry=None)
                self.via = "mistral_cache (CachedMistralClient)"
            except Exception:  # noqa: BLE001 - facade not there yet: cache the calls directly
                self.facade = None
                self.via = "mistral_cache (Cache + state-dependent ttl callable)"
                self._get = self.cache.cached(ttl=_state_ttl, key="exec:{ident}", tags=("exec",))(self._raw_get)
                self._list_ex = self.cache.cached(ttl=5.0, key="execs", tags=("execs",))(self._raw_list_ex)
                self._list_wf = self.cache.cached(ttl=3600.0, key="wfs", tags=("wfs",))(self._raw_list_wf)

    def client(self) -> Any:
        c = getattr(self.local, "client", None)
        if c is None:
            c = self.local.client = _client(self.env.mistral_url)
        return c

    def count(self) -> None:
        with self.lock:
            self.upstream += 1

    def _raw_get(self, ident: str) -> dict[str, Any]:
        self.count()
        return dict(self.client().executions.get(ident).to_dict())

    def _raw_list_ex(self) -> list[dict[str, Any]]:
        self.count()
        return [e.to_dict() for e in self.client().executions.list(limit=100, sort_keys="created_at", sort_dirs="desc")]

    def _raw_list_wf(self) -> list[dict[str, Any]]:
        self.count()
        return [w.to_dict() for w in self.client().workflows.list()]

    def _tutorial(self, key: str, load: Callable[[], Any]) -> Any:
        raw = self.redis.get(key)
        if raw is not None:
            return json.loads(raw)
        value = load()
        self.redis.set(key, json.dumps(value), ex=300)
        return value

    def get_execution(self, ident: str) -> dict[str, Any]:
        if self.facade is not None:
            value = dict(self.facade.executions.get(ident).to_dict())
            return value
        if self.variant == "tutorial":
            return dict(self._tutorial(f"{self.ns_key}:exec:{ident}", lambda: self._raw_get(ident)))
        if self.variant == "mistral_cache":
            return dict(self._get(ident))
        return self._raw_get(ident)

    def list_executions(self) -> list[dict[str, Any]]:
        if self.facade is not None:
            value = [e.to_dict() for e in self.facade.executions.list(limit=100, sort_keys="created_at", sort_dirs="desc")]
            return value
        if self.variant == "tutorial":
            return list(self._tutorial(f"{self.ns_key}:execs", self._raw_list_ex))
        if self.variant == "mistral_cache":
            return list(self._list_ex())
        return self._raw_list_ex()

    def list_workflows(self) -> list[dict[str, Any]]:
        if self.facade is not None:
            value = [w.to_dict() for w in self.facade.workflows.list()]
            return value
        if self.variant == "tutorial":
            return list(self._tutorial(f"{self.ns_key}:wfs", self._raw_list_wf))
        if self.variant == "mistral_cache":
            return list(self._list_wf())
        return self._raw_list_wf()

    def write(self, wf_name: str) -> None:
        if self.facade is not None:
            self.facade.executions.create(wf_name)
            return
        self.client().executions.create(wf_name)
        if self.variant == "mistral_cache":
            self.cache.invalidate_tags("execs")

    ns_key = "tutorial-" + os.urandom(4).hex()

    def upstream_reads(self) -> int:
        if self.facade is not None:
            st = self.cache.stats()
            return int(st["computes"])
        return self.upstream

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


def run_polling(env: Env) -> dict[str, Any]:
    sim = env.sim
    client = _client(env.mistral_url)
    workflows = [w.name for w in client.workflows.list()][:5]
    done = [e.id for e in client.executions.list(limit=60) if e.state == "SUCCESS"][:8]

    def fresh_running(n: int) -> list[str]:
        """Executions started now, so they change state while the pollers watch them."""
        if sim is not None:
            return list(sim.seed_executions(n, running_fraction=1.0, spread=0.0))
        return [client.executions.create(workflows[i % len(workflows)]).id for i in range(n)]

    pollers, polls, interval = (6, 70, 0.05) if env.quick else (12, 300, 0.05)
    dashboards, views, view_interval = (2, 16, 0.2) if env.quick else (3, 60, 0.25)
    writes, write_interval = (3, 1.0) if env.quick else (12, 1.5)
    variants = ["no cache", "tutorial", "mistral_cache"]
    out: dict[str, Any] = {"watched": 24 + len(done), "pollers": pollers, "polls_each": polls,
                           "poll_interval_s": interval, "dashboards": dashboards, "views_each": views,
                           "writes": writes, "ground_truth": sim is not None, "variants": []}
    # All three run at once on the same executions, so they see the same state changes.
    watched = fresh_running(24) + done
    runs: list[tuple[str, _Api, dict[str, Any], list[threading.Thread]]] = []
    guard = threading.Lock()
    for vi, variant in enumerate(variants):
        api = _Api(variant, env, f"bench-poll-{os.getpid()}-{vi}-{random.randrange(1 << 30)}")
        stats: dict[str, Any] = {"reads": 0, "stale": 0, "worst_s": 0.0, "stale_rows": 0, "rows": 0, "stale_gets": 0,
                                 "errors": 0, "read_s": 0.0, "times": []}

        def check(kind: str, rec: dict[str, Any], stats: dict[str, Any] = stats) -> float:
            if sim is None:
                return 0.0
            try:
                return float(sim.staleness_of(kind, rec["id"], rec))
            except KeyError:
                return 0.0

        def poller(seed: int, api: _Api = api, stats: dict[str, Any] = stats,
                   watched: list[str] = watched) -> None:
            rng = random.Random(seed)
            mine = watched[seed % len(watched):] + watched[:seed % len(watched)]
            for i in range(polls):
                ident = mine[i % 8] if rng.random() < 0.9 else rng.choice(watched)
                t0 = time.perf_counter()
                try:
                    rec = api.get_execution(ident)
                except Exception:  # noqa: BLE001
                    with guard:
                        stats["errors"] += 1
                    continue
                dt = time.perf_counter() - t0
                lag = check("executions", rec)
                with guard:
                    stats["reads"] += 1
                    stats["read_s"] += dt
                    stats["times"].append(dt)
                    if lag > 0:
                        stats["stale"] += 1
                        stats["stale_gets"] += 1
                        stats["worst_s"] = max(stats["worst_s"], lag)
                time.sleep(interval)

        def dashboard(seed: int, api: _Api = api, stats: dict[str, Any] = stats) -> None:
            for i in range(views):
                t0 = time.perf_counter()
                try:
                    rows = api.list_executions() if i % 2 == 0 else api.list_workflows()
                except Exception:  # noqa: BLE001
                    with guard:
                        stats["errors"] += 1
                    continue
                dt = time.perf_counter() - t0
                lags = [check("executions", r) for r in rows] if i % 2 == 0 else []
                with guard:
                    stats["reads"] += 1
                    stats["read_s"] += dt
                    stats["times"].append(dt)
                    stats["rows"] += len(lags)
                    bad = [x for x in lags if x > 0]
                    stats["stale_rows"] += len(bad)
                    if bad:
                        stats["stale"] += 1
                        stats["worst_s"] = max(stats["worst_s"], max(bad))
                time.sleep(view_interval)

        def writer(api: _Api = api, stats: dict[str, Any] = stats) -> None:
            for i in range(writes):
                time.sleep(write_interval)
                try:
                    api.write(workflows[i % len(workflows)])
                except Exception:  # noqa: BLE001
                    with guard:
                        stats["errors"] += 1

        threads = [threading.Thread(target=poller, args=(i,)) for i in range(pollers)]
        threads += [threading.Thread(target=dashboard, args=(i,)) for i in range(dashboards)]
        threads += [threading.Thread(target=writer)] if workflows else []
        runs.append((variant, api, stats, threads))
    env.progress("mistral polling: no cache, tutorial, mistral_cache side by side", 0, 1)
    sim_before = sim.requests_total if sim is not None else None
    t0 = time.perf_counter()
    for _, _, _, threads in runs:
        for t in threads:
            t.start()
    for _, _, _, threads in runs:
        for t in threads:
            t.join()
    wall = time.perf_counter() - t0
    out["wall_s"] = round(wall, 2)
    out["sim_requests_total"] = (sim.requests_total - sim_before) if sim is not None else None
    for variant, api, stats, _ in runs:
        upstream = api.upstream_reads()
        reads = stats["reads"]
        out["variants"].append({
            "variant": variant, "via": api.via, "reads": reads, "upstream_reads": upstream,
            "hit_rate": round(1 - upstream / reads, 4) if reads else None,
            "requests_saved": reads - upstream,
            "requests_saved_pct": round(100 * (1 - upstream / reads), 2) if reads else None,
            "stale_reads": stats["stale"] if sim is not None else None,
            "stale_gets": stats["stale_gets"] if sim is not None else None,
            "stale_lists": stats["stale"] - stats["stale_gets"] if sim is not None else None,
            "stale_list_rows": stats["stale_rows"] if sim is not None else None,
            "worst_staleness_s": round(stats["worst_s"], 3) if sim is not None else None,
            "mean_read_ms": round(1000 * stats["read_s"] / reads, 3) if reads else None,
            "median_read_ms": round(1000 * statistics.median(stats["times"]), 3) if reads else None,
            "errors": stats["errors"],
        })
        if api.cache is not None:
            st = api.cache.stats()
            out["variants"][-1]["cache_stats"] = {k: v for k, v in st.items() if k not in ("functions", "latency")}
        api.close()
    env.progress("mistral polling done", 1, 1)
    return out


def run(env: Env) -> dict[str, Any]:
    res: dict[str, Any] = {}
    if have("numpy"):
        res["zipf"] = run_zipf(env)
    else:
        env.say("  ! numpy missing: Zipf workloads skipped (pip install numpy)")
    res["traces"] = run_traces(env)
    try:
        res["mistral"] = run_polling(env)
    except Exception as exc:  # noqa: BLE001
        env.say(f"  ! Mistral polling workload failed: {type(exc).__name__}: {exc}")
        res["mistral_error"] = f"{type(exc).__name__}: {exc}"
    return res


def tables(result: dict[str, Any]) -> list[tuple[list[str], list[list[str]]]]:
    out = []
    if "zipf" in result:
        head = ["zipf s", "local cap", "LRU", "TinyLFU", "Belady", "LRU/Belady", "TinyLFU/Belady", "redis hit (LRU)",
                "miss"]
        body = [[f"{r['s']}", f"{r['capacity']} ({r['capacity_frac']:.0%})", f"{r['local_hit_rate']:.1%}",
                 f"{r['tinylfu_local_hit_rate']:.1%}", f"{r['belady_local_hit_rate']:.1%}",
                 f"{r['local_vs_belady']:.2f}", f"{r['tinylfu_vs_belady']:.2f}", f"{r['redis_hit_rate']:.1%}",
                 f"{r['miss_rate']:.1%}"] for r in result["zipf"]]
        out.append((head, body))
    if "traces" in result:
        head = ["trace", "local cap", "LRU", "TinyLFU", "Belady", "LRU/Belady", "TinyLFU/Belady"]
        body = [[r["trace"], f"{r['capacity']}" + (f" ({r['capacity_frac']:.0%})" if r["capacity_frac"] else ""),
                 f"{r['local_hit_rate']:.1%}", f"{r['tinylfu_local_hit_rate']:.1%}", f"{r['belady_local_hit_rate']:.1%}",
                 f"{r['local_vs_belady']:.2f}", f"{r['tinylfu_vs_belady']:.2f}"] for r in result["traces"]]
        out.append((head, body))
    if "mistral" in result:
        head = ["Mistral polling", "reads", "upstream", "hit rate", "saved", "stale gets/lists", "worst stale",
                "read median/mean"]
        body = []
        for v in result["mistral"]["variants"]:
            body.append([v["variant"], str(v["reads"]), str(v["upstream_reads"]),
                         "-" if v["hit_rate"] is None else f"{v['hit_rate']:.1%}",
                         "-" if v["requests_saved_pct"] is None else f"{v['requests_saved_pct']:.1f}%",
                         "n/a" if v["stale_reads"] is None else f"{v['stale_gets']}/{v['stale_lists']}",
                         "n/a" if v["worst_staleness_s"] is None else f"{v['worst_staleness_s']:.2f} s",
                         "-" if v["mean_read_ms"] is None
                         else f"{v['median_read_ms']:.3f}/{v['mean_read_ms']:.2f} ms"])
        out.append((head, body))
    if "mistral_error" in result:
        out.append((["Mistral polling"], [[f"failed: {result['mistral_error']}"]]))
    return out


def plot(result: dict[str, Any], out: str) -> list[str]:
    import matplotlib.pyplot as plt

    files = []
    if "zipf" in result:
        fig, ax = plt.subplots(figsize=(8, 5))
        for s, colour in zip(SKEWS, ("tab:blue", "tab:orange", "tab:green"), strict=True):
            rows = [r for r in result["zipf"] if r["s"] == s]
            caps = [100 * r["capacity_frac"] for r in rows]
            ax.plot(caps, [r["local_hit_rate"] for r in rows], "o-", color=colour, label=f"s={s} local LRU")
            ax.plot(caps, [r["tinylfu_local_hit_rate"] for r in rows], "s-.", color=colour, label=f"s={s} local TinyLFU")
            ax.plot(caps, [r["belady_local_hit_rate"] for r in rows], "x--", color=colour, label=f"s={s} Belady")
            ax.plot(caps, [r["total_hit_rate"] for r in rows], ":", color=colour, label=f"s={s} local+Redis")
        ax.set_xscale("log")
        ax.set_xlabel("local capacity (% of keys)")
        ax.set_ylabel("hit rate")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
        ax.set_title("Hit rate vs local capacity (Zipf)")
        fig.tight_layout()
        name = os.path.join(out, "hitrate_capacity.png")
        fig.savefig(name, dpi=90)
        plt.close(fig)
        files.append(name)
    if "mistral" in result:
        fig, ax = plt.subplots(figsize=(7, 5))
        for v in result["mistral"]["variants"]:
            x = v["hit_rate"] or 0.0
            y = v["worst_staleness_s"] or 0.0
            ax.scatter([x], [y], s=30 + 3 * (v["stale_reads"] or 0))
            ax.annotate(f"{v['variant']} ({v['stale_reads']} stale reads)", (x, y), fontsize=8,
                        xytext=(5, 5), textcoords="offset points")
        ax.set_xlabel("hit rate (share of reads served without calling Mistral)")
        ax.set_ylabel("worst staleness vs ground truth (s)")
        ax.set_title("Mistral polling workload: hit rate vs staleness")
        fig.tight_layout()
        name = os.path.join(out, "hitrate_staleness.png")
        fig.savefig(name, dpi=90)
        plt.close(fig)
        files.append(name)
    return files


def notes(result: dict[str, Any]) -> str:
    lines = []
    if "zipf" in result:
        worst = min(result["zipf"], key=lambda r: r["local_vs_belady"] or 1)
        lines.append(
            "Zipf: the local tier is an LRU (cachetools) by default; Belady is the clairvoyant optimum at the same "
            f"capacity. The gap is widest at low skew and small capacity (s={worst['s']}, "
            f"{worst['capacity_frac']:.0%}: {worst['local_hit_rate']:.1%} vs {worst['belady_local_hit_rate']:.1%}), "
            "where recency is a poor predictor of reuse. TinyLFU admission (`Local(admission=\"tinylfu\")`) closes "
            f"part of it there: {worst['tinylfu_local_hit_rate']:.1%}, {worst['tinylfu_vs_belady']:.2f} of Belady. "
            "Redis is sized for the working set, so only first sightings miss both tiers.")
    if "traces" in result:
        lines.append("")
        lines.append(
            "Traces: the scan trace mixes a hot set of half the capacity with a loop over 4x the capacity; an LRU "
            "lets the loop flush the hot set, TinyLFU turns the loop's keys away (each is read once per lap). The "
            "Mistral polling trace is the key sequence of the polling workload below (pollers cycling over 8 "
            "executions each, overlapping, plus dashboard lists) replayed without TTLs at capacities below its "
            "working set: cycles longer than the cache are LRU's worst case.")
    if "mistral" in result:
        m = result["mistral"]
        lines.append("")
        lines.append(
            f"Mistral polling: {m['pollers']} pollers × {m['polls_each']} reads every {m['poll_interval_s']} s on "
            f"{m['watched']} executions (most started just before, so they change state while watched), "
            f"{m['dashboards']} dashboards listing executions and workflows, {m['writes']} new executions. "
            + ("Staleness is measured against the simulator's ground truth at the moment each read returned "
               "(a list counts as stale if any row is)." if m["ground_truth"]
               else "A real Mistral has no ground truth: staleness is not measured."))
        for v in m["variants"]:
            lines.append(f"- {v['via']}: hit rate {v['hit_rate']:.1%}, {v['requests_saved']} of {v['reads']} "
                         f"upstream reads saved, stale reads {v['stale_reads']} (worst {v['worst_staleness_s']} s), "
                         f"read median {v['median_read_ms']} ms, mean {v['mean_read_ms']} ms.")
    return "\n".join(lines)
