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


# -- Mistral polling with events (mistral-cache bench, scenario "events") --------------
#
# Real time, not the simulated clock above: the simulated Mistral posts its webhook
# notifications (benchmarks.sim_mistral.notifier) to the real receiver
# (mistral_cache.mistral.events, served on loopback), which invalidates through a
# real Redis. Every variant polls the same executions at the same time.

#: The rows, in order: what reads Mistral.
EVENT_VARIANTS = ("no cache", "tutorial (GET/SET, 300 s)", "state rules (events off)", "events on")
#: A read is outdated when a newer version existed more than this long before it
#: began (as in benchmarks.events_freshness); "any lag" counts every one.
TOLERANCE = 0.05


class _Reads:
    """One poller's reads through one variant: (get execution, its task list, the
    execution list), each returning plain dicts; upstream requests counted."""

    def __init__(self, variant: str, url: str, redis_url: str, namespace: str, cache: Any,
                 count: Callable[[str], None]) -> None:
        from mistralclient.api import client as mc

        self.facade: CachedMistralClient | None = None
        client = mc.client(mistral_url=url)
        session = client.executions.http_client.session
        original = session.request

        def counting(method: str, u: str, **kw: Any) -> Any:
            parts = [p for p in u.split("/v2", 1)[-1].split("?", 1)[0].split("/") if p]
            count("/".join(parts[:1] + (["id"] if len(parts) > 1 else []) + parts[2:]))
            return original(method, u, **kw)

        session.request = counting
        api: Any = client
        if variant.startswith("tutorial"):
            import redis

            from .freshness import tutorial_read

            r = redis.Redis.from_url(redis_url)
            self.execution = lambda i: tutorial_read(r, f"{namespace}:exec:{i}", lambda: client.executions.get(i).to_dict())
            self.tasks = lambda i: tutorial_read(r, f"{namespace}:tasks:{i}", lambda: [
                t.to_dict() for t in client.tasks.list(workflow_execution_id=i)])
            self.executions = lambda: tutorial_read(r, f"{namespace}:execs", lambda: [
                e.to_dict() for e in client.executions.list(limit=50, sort_keys="created_at", sort_dirs="desc")])
            return
        if cache is not None:
            api = self.facade = CachedMistralClient(client, cache=cache, retry=None)
        self.execution = lambda i: api.executions.get(i).to_dict()
        self.tasks = lambda i: [t.to_dict() for t in api.tasks.list(workflow_execution_id=i)]
        self.executions = lambda: [e.to_dict() for e in api.executions.list(limit=50, sort_keys="created_at",
                                                                             sort_dirs="desc")]


def serve_wsgi(app: Any, port: int) -> Callable[[], None]:
    """Serve ``app`` on 127.0.0.1:``port`` in a thread (waitress, else the standard
    library's threading WSGI server); return its stop function."""
    import threading

    try:
        import waitress

        server: Any = waitress.create_server(app, host="127.0.0.1", port=port, threads=4)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()

        def stop() -> None:
            server.close()
            thread.join(5)

        return stop
    except ImportError:
        import socketserver
        from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

        class Quiet(WSGIRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

        class Threading(socketserver.ThreadingMixIn, WSGIServer):
            daemon_threads = True

        plain = make_server("127.0.0.1", port, app, server_class=Threading, handler_class=Quiet)
        thread = threading.Thread(target=plain.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()

        def stop_plain() -> None:
            plain.shutdown()
            plain.server_close()

        return stop_plain


def events_polling(sim: Any, redis_url: str, *, quick: bool = True, delay: Any = None,
                   seed: int = 5) -> dict[str, Any]:
    """Pollers and a dashboard through each of :data:`EVENT_VARIANTS`, on the same
    fresh executions of ``sim`` (a running :class:`SimulatedMistral`), while its
    notifier posts to a receiver serving the "events on" namespace."""
    import os
    import secrets
    import threading
    import time

    from mistralclient.api import client as mc

    from mistral_cache.mistral.events.serve import Settings, build
    from mistral_cache.testing.support import free_port

    from .sim_mistral import PostDelay

    executions, processes, threads, interval = (6, 2, 2, 0.1) if quick else (12, 2, 4, 0.1)
    os.environ.setdefault("no_proxy", "127.0.0.1,localhost")
    token = secrets.token_urlsafe(24)
    run_id = secrets.token_hex(4)
    namespaces = {v: f"bench-events-{run_id}-{i}" for i, v in enumerate(EVENT_VARIANTS)}
    port = free_port()
    running = build(Settings(redis_url=redis_url, mistral_url=sim.url, token=token.encode(),
                             namespace=namespaces["events on"], listen=f"127.0.0.1:{port}", stats_interval=0))
    stop_server = serve_wsgi(running.receiver, port)
    notifier = sim.notify(f"http://127.0.0.1:{port}/events", {"Authorization": f"Bearer {token}"},
                          delay=delay or PostDelay(), seed=seed)
    created: dict[str, list[tuple[float, str]]] = {}  # execution -> its tasks (created at, id)

    def index(kind: str, rid: str, before: Any, after: Any, t: float) -> None:
        if kind == "tasks" and before is None and after is not None:
            created.setdefault(str(after["workflow_execution_id"]), []).append((t, rid))

    with sim.store.lock:
        sim.store.listeners.append(index)
    caches: list[Any] = []
    counts = {v: 0 for v in EVENT_VARIANTS}
    paths: dict[str, dict[str, int]] = {v: {} for v in EVENT_VARIANTS}
    guard = threading.Lock()
    readers: dict[str, list[_Reads]] = {}
    try:
        for v in EVENT_VARIANTS:
            def count(path: str, v: str = v) -> None:
                with guard:
                    counts[v] += 1
                    paths[v][path] = paths[v].get(path, 0) + 1

            readers[v] = []
            for _ in range(processes):  # a Cache per process, as separate services would have
                cache = None
                if v in ("state rules (events off)", "events on"):
                    cache = Cache(redis_url, namespace=namespaces[v])
                    caches.append(cache)
                readers[v] += [_Reads(v, sim.url, redis_url, namespaces[v], cache, count) for _ in range(threads)]
        for r in readers["events on"]:  # the clients find the receiver's lease by themselves
            r.facade.events.ensure()
        deadline = time.monotonic() + 5
        while not all(r.facade.events.live() for r in readers["events on"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        plain = mc.client(mistral_url=sim.url)
        workflows = [w.name for w in plain.workflows.list()][:executions]
        watched = [plain.executions.create(workflows[i % len(workflows)]).id for i in range(executions)]
        for v in counts:
            counts[v] = 0
            paths[v].clear()
        result = _poll_all(sim, readers, watched, created, interval)
    finally:
        notifier.stop()
        with sim.store.lock:
            sim.store.listeners.remove(index)
        stop_server()
        running.stop()
        receiver_counts = running.receiver.counters()
        running.receiver.cache.close()
        for variant in readers.values():
            for reader in variant:
                if reader.facade is not None:
                    reader.facade.close()
        for cache in caches:
            cache.close()
    changes = notifier.stats()["changes"]  # state changes of the watched executions and their tasks
    # what the receiver itself asked of Mistral is upstream of the events row too
    paths["events on"]["receiver"] = receiver_counts["definition_requests"] + receiver_counts["reconcile_requests"]
    counts["events on"] += paths["events on"]["receiver"]
    for v, row in result["rows"].items():
        row["upstream"] = counts[v]
        row["upstream_by_path"] = dict(sorted(paths[v].items()))
        row["upstream_per_change"] = round(counts[v] / changes, 2) if changes else None
    return {"params": {"executions": executions, "pollers": processes * threads, "processes": processes,
                       "interval_s": interval, "tolerance_s": TOLERANCE,
                       "post_delay": {"median_s": notifier.delay.median, "sigma": notifier.delay.sigma,
                                      "cap_s": notifier.delay.cap}},
            "changes": changes, "notifier": notifier.stats(), "receiver": receiver_counts, **result}


def _poll_all(sim: Any, readers: dict[str, list[_Reads]], watched: list[str],
              created: dict[str, list[tuple[float, str]]], interval: float) -> dict[str, Any]:
    import threading
    import time

    def lag_of(kind: str, rec: dict[str, Any], t0: float) -> float:
        try:
            return float(sim.staleness_of(kind, str(rec["id"]), rec, at=t0))
        except KeyError:
            return 0.0

    def list_lag(rows: list[dict[str, Any]], expected: list[tuple[float, str]], kind: str, t0: float) -> float:
        have = {str(r.get("id")) for r in rows}
        lags = [lag_of(kind, r, t0) for r in rows if kind == "tasks" or r.get("id") in wanted]
        lags += [t0 - t for t, rid in expected if t < t0 and rid not in have]
        return max(lags, default=0.0)

    wanted = set(watched)
    born = {ex: sim.history("executions", ex)[0].started_at for ex in watched}
    rows: dict[str, dict[str, Any]] = {v: {"reads": 0, "outdated": 0, "outdated_any": 0, "worst_staleness_s": 0.0,
                                           "errors": 0} for v in readers}
    guard = threading.Lock()
    finished = threading.Event()

    def record(v: str, lag: float) -> None:
        with guard:
            row = rows[v]
            row["reads"] += 1
            if lag > 0:
                row["outdated_any"] += 1
            if lag > TOLERANCE:
                row["outdated"] += 1
            row["worst_staleness_s"] = max(row["worst_staleness_s"], lag)

    def poller(v: str, r: _Reads) -> None:
        while not finished.is_set():
            for ex in watched:
                try:
                    t0 = time.time()
                    record(v, lag_of("executions", r.execution(ex), t0))
                    t0 = time.time()
                    record(v, list_lag(r.tasks(ex), created.get(ex, []), "tasks", t0))
                except Exception:  # noqa: BLE001 - counted, the run goes on
                    with guard:
                        rows[v]["errors"] += 1
            time.sleep(interval)

    def dashboard(v: str, r: _Reads) -> None:
        while not finished.is_set():
            try:
                t0 = time.time()
                record(v, list_lag(r.executions(), [(t, ex) for ex, t in born.items()], "executions", t0))
            except Exception:  # noqa: BLE001
                with guard:
                    rows[v]["errors"] += 1
            time.sleep(5 * interval)

    workers = [threading.Thread(target=poller, args=(v, r), daemon=True) for v, rs in readers.items() for r in rs]
    workers += [threading.Thread(target=dashboard, args=(v, rs[0]), daemon=True) for v, rs in readers.items()]
    started = time.time()
    for w in workers:
        w.start()
    final = ("SUCCESS", "ERROR", "CANCELLED")
    while time.time() - started < 60:
        states = [(sim.state_at("executions", ex).value or {}).get("state") for ex in watched]
        if all(s in final for s in states):
            break
        time.sleep(0.1)
    time.sleep(0.5)  # and a few polls of the final states
    finished.set()
    for w in workers:
        w.join(10)
    for row in rows.values():
        row["outdated_pct"] = round(100.0 * row["outdated"] / max(row["reads"], 1), 3)
        row["worst_staleness_s"] = round(row["worst_staleness_s"], 3)
    return {"rows": rows, "seconds": round(time.time() - started, 2)}


def events_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["Mistral polling, events", "reads", "upstream", "upstream/change",
            f"outdated reads (>{1000 * TOLERANCE:.0f} ms)", "outdated (any lag)", "worst staleness"]
    body = []
    for name, r in result["rows"].items():
        body.append([name, str(r["reads"]), str(r["upstream"]), "-" if r["upstream_per_change"] is None
                     else f"{r['upstream_per_change']:.2f}", f"{r['outdated']} ({r['outdated_pct']:.2f}%)",
                     str(r["outdated_any"]), f"{r['worst_staleness_s']:.3f} s"])
    return head, body


class EventsScenario:
    """Scenario ``events`` of ``mistral-cache bench`` (see :data:`mistral_cache.admin.bench.SCENARIOS`)."""

    TITLE = "Mistral polling with events (simulated notifier -> receiver)"

    @staticmethod
    def run(env: Any) -> dict[str, Any]:
        if env.sim is None:
            return {"skipped": "needs the simulated Mistral (its notifier posts to our receiver, and it knows the "
                               "truth); against a real server run python -m benchmarks.events_freshness"}
        return events_polling(env.sim, env.redis_url, quick=env.quick)

    @staticmethod
    def tables(result: dict[str, Any]) -> list[tuple[list[str], list[list[str]]]]:
        if "skipped" in result:
            return [(["Mistral polling, events"], [[f"skipped: {result['skipped']}"]])]
        return [events_table(result)]

    @staticmethod
    def notes(result: dict[str, Any]) -> str:
        if "skipped" in result:
            return str(result["skipped"])
        p, n = result["params"], result["notifier"]
        d = p["post_delay"]
        return (f"{p['executions']} executions started together, polled (execution, then its task list) every "
                f"{p['interval_s']} s by {p['pollers']} pollers per row ({p['processes']} Cache instances, as "
                "separate processes would have), plus a dashboard listing executions; all rows at once on the same "
                f"executions, {result['changes']} state changes (notifications). The simulated notifier posts each "
                f"change after it commits, with a lognormal delay (median {1000 * d['median_s']:.0f} ms, sigma "
                f"{d['sigma']}, cap {1000 * d['cap_s']:.0f} ms; measured commit-to-POST p50/p90/max "
                f"{n['delay_ms']['p50']}/{n['delay_ms']['p90']}/{n['delay_ms']['max']} ms), to a receiver serving "
                f"the 'events on' namespace ({result['receiver']}). A read is outdated when a newer version existed "
                f"more than {1000 * p['tolerance_s']:.0f} ms before it began (a list: any row, or a missing one).")

    @staticmethod
    def plot(result: dict[str, Any], out: str) -> list[str]:
        return []
