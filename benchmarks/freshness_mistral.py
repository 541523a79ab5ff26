"""The Mistral polling workload under a simulated clock: adaptive vs fixed TTLs.

The simulated Mistral API (:mod:`benchmarks.sim_mistral`, driven by a manual
clock, no service time) is read through the real python-mistralclient and
:class:`~mistral_cache.mistral.CachedMistralClient` over a local-only
:class:`~mistral_cache.Cache` sharing that clock, so hours of operation run in
seconds and every read is checked against the simulator's ground truth:

* a new execution of a Zipf-chosen workflow every ``start_every`` seconds, its
  definition read first, the execution polled every 2 s while it runs (and three
  more times);
* a dashboard listing the latest executions every 10 s and opening three of the
  recent ones;
* definition reads every 5 s, Zipf over the workflows;
* another tool updating a workflow definition every 10 minutes *without* the
  facade, so only the TTL bounds how long the old definition is served.

Per policy: upstream requests (what the simulator served), reads, stale reads
(a get whose version was not current, a list with any stale row).
"""

from __future__ import annotations

import bisect
import functools
import heapq
import itertools
import random
from collections.abc import Callable, Iterator
from typing import Any

from mistral_cache import Cache, Clock, Local
from mistral_cache.adaptive import adaptive
from mistral_cache.mistral import CachedMistralClient, adaptive_state_ttl, policies

from .sim_mistral import ManualClock, SimulatedMistral, workflow_definition

N_WORKFLOWS = 20


def _fixed(seconds: float) -> dict[str, Any]:
    return {name: seconds for name in policies.DEFAULT_POLICIES}


def _learnt(target: float) -> dict[str, Any]:
    return {name: adaptive(target, min_ttl=0.5, max_ttl=3600.0, initial_ttl=2.0) for name in policies.DEFAULT_POLICIES}


def _state_learnt(target: float) -> dict[str, Any]:
    """Final and failed states keep their rules; RUNNING resources, lists and
    definitions learn. The bounds are as wide as the fixed TTLs compared, so the
    target alone decides (a deployment would keep adaptive_state_ttl's 60 s cap)."""
    return {
        "executions": adaptive_state_ttl(target, max_ttl=3600.0),
        "tasks": adaptive_state_ttl(target, policies.FINAL_TASK_STATES, max_ttl=3600.0),
        "stateful_list": adaptive(target, min_ttl=0.5, max_ttl=3600.0, initial_ttl=2.0),
        "workflows": adaptive(target, min_ttl=1.0, max_ttl=24 * 3600.0, initial_ttl=60.0),
    }


FIXED = (1.0, 10.0, 60.0, 300.0)
TARGETS = (0.0001, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 0.6)

#: name -> the ``policies=`` of the facade
POLICIES: dict[str, Callable[[], dict[str, Any] | None]] = {
    **{f"fixed {t:g}s": functools.partial(_fixed, t) for t in FIXED},
    "state rules (default)": lambda: None,
    **{f"adaptive {t:g}": functools.partial(_learnt, t) for t in TARGETS},
    **{f"state rules + adaptive {t:g}": functools.partial(_state_learnt, t) for t in TARGETS},
}


def simulate(policy: dict[str, Any] | None, *, hours: float, start_every: float, seed: int) -> dict[str, Any]:
    clock = ManualClock(1_700_000_000.0)
    rng = random.Random(seed)
    with SimulatedMistral(latency_scale=0.0, clock=clock, seed=seed, mean_duration=60.0, error_rate=0.1) as sim:
        from mistralclient.api import client as mc

        workflows = sim.seed_workflows(N_WORKFLOWS, tasks=4)
        sim.seed_executions(40, running_fraction=0.0, spread=3600.0)
        other_tool = mc.client(mistral_url=sim.url)
        cache = Cache(None, local=Local(maxsize=100_000, ttl=None, coherence=False), lock=None, refresh=None, clock=Clock(time=clock))
        api = CachedMistralClient(mc.client(mistral_url=sim.url), cache=cache, policies=policy, retry=None)
        cum = list(itertools.accumulate(1.0 / (i + 1) for i in range(N_WORKFLOWS)))

        def zipf_workflow() -> str:
            return workflows[bisect.bisect_left(cum, rng.random() * cum[-1])]

        counts = {"reads": 0, "stale_reads": 0, "stale_gets": 0, "stale_lists": 0, "stale_definitions": 0}
        recent: list[str] = []

        def get(kind: str, ident: str, data: dict[str, Any]) -> None:
            counts["reads"] += 1
            if sim.staleness_of(kind, ident, data) > 0:
                counts["stale_reads"] += 1
                counts["stale_definitions" if kind == "workflows" else "stale_gets"] += 1

        def poll(ex_id: str) -> Iterator[float]:
            # The schedule follows the truth (so every policy serves the same reads):
            # while the execution runs, and three polls after it ended.
            after = 3
            while after > 0:
                get("executions", ex_id, api.executions.get(ex_id).to_dict())
                truth = sim.state_at("executions", ex_id).value or {}
                if truth.get("state") in ("SUCCESS", "ERROR", "CANCELLED"):
                    after -= 1
                yield 2.0

        def starter() -> Iterator[float]:
            while True:
                wf = zipf_workflow()
                get("workflows", wf, api.workflows.get(wf).to_dict())
                ex_id = api.executions.create(wf).id
                recent.append(ex_id)
                del recent[:-100]
                spawn(clock() + 1.0, poll(ex_id))
                yield rng.expovariate(1.0 / start_every)

        def dashboard() -> Iterator[float]:
            while True:
                rows = [e.to_dict() for e in api.executions.list(limit=50, sort_keys="created_at", sort_dirs="desc")]
                counts["reads"] += 1
                if any(sim.staleness_of("executions", r["id"], r) > 0 for r in rows):
                    counts["stale_reads"] += 1
                    counts["stale_lists"] += 1
                for _ in range(3 if recent else 0):
                    ex_id = recent[-1 - min(len(recent) - 1, int(rng.expovariate(1 / 10)))]
                    get("executions", ex_id, api.executions.get(ex_id).to_dict())
                yield 10.0

        def reader() -> Iterator[float]:
            while True:
                wf = zipf_workflow()
                get("workflows", wf, api.workflows.get(wf).to_dict())
                yield rng.expovariate(1 / 5.0)

        def editor() -> Iterator[float]:
            n = 0
            while True:
                yield rng.expovariate(1 / 600.0)
                n += 1
                other_tool.workflows.update(workflow_definition(zipf_workflow(), tasks=4).replace(
                    "tasks:", f"description: edit {n}\n  tasks:", 1))

        queue: list[tuple[float, int, Iterator[float]]] = []
        seq = itertools.count()

        def spawn(at: float, proc: Iterator[float]) -> None:
            heapq.heappush(queue, (at, next(seq), proc))

        start = clock()
        for proc in (starter(), dashboard(), reader(), editor()):
            spawn(start, proc)
        end = start + hours * 3600
        sim.reset_counters()
        while queue and queue[0][0] <= end:
            at, _, proc = heapq.heappop(queue)
            clock.advance(at - clock())
            try:
                spawn(at + next(proc), proc)
            except StopIteration:
                pass
        upstream = sum(n for (method, _), n in sim.request_counts().items() if method == "GET")
        cache.close()
    reads = counts["reads"]
    return counts | {"upstream_calls": upstream, "hit_rate": 1 - upstream / reads if reads else 0.0,
                     "stale_fraction": counts["stale_reads"] / reads if reads else 0.0}


def run(quick: bool = True, seed: int = 11) -> dict[str, Any]:
    params = {"hours": 1.0 if quick else 6.0, "start_every": 30.0, "seed": seed}
    rows = {}
    for name, make in POLICIES.items():
        kind, _, param = name.rpartition(" ")
        row = simulate(make(), **params)  # type: ignore[arg-type]
        if kind in ("fixed", "adaptive", "state rules + adaptive"):
            row |= {"kind": kind, "param": float(param.rstrip("s"))}
        else:
            row |= {"kind": name, "param": name}
        rows[name] = row
    return {"params": params, "policies": rows}


def table(rows: dict[str, dict[str, Any]]) -> str:
    lines = ["| policy | reads | upstream GETs | hit rate | stale reads | stale gets / lists / definitions |",
             "|---|---:|---:|---:|---:|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['reads']} | {r['upstream_calls']} | {r['hit_rate']:.3f} | {r['stale_reads']} "
                     f"({r['stale_fraction']:.4f}) | {r['stale_gets']} / {r['stale_lists']} / {r['stale_definitions']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    res = run(quick="--quick" in sys.argv)
    print(table(res["policies"]))
