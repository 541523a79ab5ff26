"""Freshness of Mistral polling with and without events, against a REAL server.

One command starts everything (a Redis, a Mistral that publishes every state
change both ways -- posting to ``mistral-cache events serve`` and through this
project's publisher plugin inside its engine, which invalidates straight into
Redis under its own namespace -- and the receiver) and runs the same polling
workload six times: the plain client, ``CachedMistralClient`` with the state
rules (a namespace no publisher serves: events off), the tutorial recipe (Redis
GET/SET, fixed 300 s TTL: :func:`benchmarks.freshness.tutorial_read`),
``CachedMistralClient`` with events on, once in the webhook's namespace and once
in the plugin's (each finds its publisher's freshness lease by itself; the detail
says after how many reads the lease was live), and last the webhook's again with
the receiver killed (SIGKILL) :data:`KILL_AFTER` seconds in: Mistral's posts fail,
the lease lapses, and the clients must fall back to the state rules. It prints, for each: reads,
upstream requests, true changes, outdated reads, worst staleness and upstream
requests per change, then where the outdated reads and upstream requests were
(by resource; for the webhook, whether each outdated read's event had been
applied before the read, from the receiver's trace -- the plugin leaves none).
The webhook rows' upstream includes the receiver's own requests (reconciliation,
definition checks, from its ``/health`` counters); the plugin reads specs from
the engine, not the API::

    python -m benchmarks.events_freshness [--pollers 4] [--executions 4] [--interval 0.2]
                                          [--durations 1,2,1] [--out DIR]

``--durations``: whole seconds of the workflow's chained std.sleep tasks. The
default's short tasks end before the state rules' 2 s TTL of a RUNNING resource
matters much; long ones (``6,10,6``) show that TTL refetching states that did
not change, which events avoid.

Ground truth: the plain client in this process every 50 ms (one execution list
and one task list per sample). A poller's read started at ``t`` is outdated when
the truth had seen a newer version of that resource more than 50 ms before ``t``;
its staleness is how long before. Changes: versions the truth saw, less the first.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["main", "poll", "score"]

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "mistral-server"
TOLERANCE = 0.05


def _durations(text: str) -> tuple[int, ...]:
    """``--durations``: whole seconds, > 0 (std.sleep truncates its ``seconds`` to an int)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("at least one task: comma-separated whole seconds, e.g. 1,2,1")
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: comma-separated whole seconds, e.g. 1,2,1 (std.sleep takes whole seconds)") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: every task's seconds must be > 0")
    return values


def _workflow(durations: tuple[int, ...]) -> tuple[str, str]:
    """(name, definition) of the bench workflow: one std.sleep task per duration, in a
    chain. The name carries the durations, so runs with other durations never share one."""
    name = "bench_events_" + "_".join(map(str, durations))
    tasks = []
    for i, seconds in enumerate(durations, 1):
        tasks.append(f"    t{i}:\n      action: std.sleep seconds={seconds}\n")
        if i < len(durations):
            tasks.append(f"      on-success: t{i + 1}\n")
    return name, f"version: '2.0'\n{name}:\n  tasks:\n" + "".join(tasks)


def _tasks_value(tasks: list[Any]) -> list[list[str]]:
    return sorted([t["name"], t["state"]] if isinstance(t, dict) else [t.name, t.state] for t in tasks)


#: When the last mode kills the receiver (SIGKILL), seconds after its executions start.
KILL_AFTER = 1.0

#: Poller modes: the row names of the table, in the order they run.
MODES = {"plain": "no cache", "state rules": "state rules (events off)", "tutorial": "tutorial (GET/SET, 300 s)",
         "events (webhook)": "events on (webhook)", "events (plugin)": "events on (plugin)",
         # last: the receiver stays down
         "receiver down": f"events on (webhook), receiver killed {KILL_AFTER:g} s in"}


def _reader(mode: str, url: str, redis_url: str, namespace: str) -> tuple[Any, Any, Any, Any]:
    """(client whose session is counted, read of an execution's state, read of its task list, session)."""
    from mistralclient.api import client as mc

    if mode in ("plain", "tutorial"):
        client: Any = mc.client(mistral_url=url)
        session = client.executions.http_client.session
        if mode == "plain":
            return (client, lambda i: client.executions.get(i).state,
                    lambda i: _tasks_value(client.tasks.list(workflow_execution_id=i)), session)
        import redis

        from .freshness import tutorial_read

        r = redis.Redis.from_url(redis_url)

        def ex_state(i: str) -> Any:
            return tutorial_read(r, f"{namespace}:exec:{i}", lambda: client.executions.get(i).to_dict())["state"]

        def tasks(i: str) -> Any:
            return _tasks_value(tutorial_read(r, f"{namespace}:tasks:{i}", lambda: [
                t.to_dict() for t in client.tasks.list(workflow_execution_id=i)]))

        return client, ex_state, tasks, session
    from mistral_cache import Cache
    from mistral_cache.mistral import CachedMistralClient

    cached = CachedMistralClient(mistral_url=url, cache=Cache(redis_url, namespace=namespace))
    return (cached, lambda i: cached.executions.get(i).state,
            lambda i: _tasks_value(cached.tasks.list(workflow_execution_id=i)), cached.http_client.session)


def poll(mode: str, url: str, redis_url: str, namespace: str, ids: list[str], interval: float,
         stop_file: str = "", deadline: float = 120.0) -> dict[str, Any]:
    """One poller process: every ``interval``, each execution and its task list, until
    it has seen all end (and 0.5 s more), or ``stop_file`` exists (the truth saw them
    end 3 s ago: the tutorial's pollers never see it), or ``deadline`` seconds passed.
    ``lease_live``: after how many of its executions' reads this process saw the
    event stream's lease live (None: no cache, no lease to see). No ``ids``: they come
    from stdin, once the client is built (:func:`_ready_then_ids`)."""
    client, ex_state, tasks, session = _reader(mode, url, redis_url, namespace)
    ids = ids or _ready_then_ids(stop_file)
    watch = getattr(client, "events", None) if mode not in ("plain", "tutorial") else None
    lease_live = 0
    upstream = [0]
    fetched: list[list[Any]] = []  # (time, path) of every upstream request
    original = session.request

    def counting(method: str, u: str, **kw: Any) -> Any:
        upstream[0] += 1
        fetched.append([time.time(), u.split("/v2", 1)[-1].split("?", 1)[0]])
        return original(method, u, **kw)

    session.request = counting
    reads: list[list[Any]] = []
    done: dict[str, float] = {}
    started = time.time()
    while (len(done) < len(ids) or time.time() - max(done.values()) < 0.5) and time.time() - started < deadline:
        if stop_file and os.path.exists(stop_file):
            break
        for ex_id in ids:
            t = time.time()
            state = ex_state(ex_id)
            reads.append([t, "ex:" + ex_id, state])
            lease_live += bool(watch is not None and watch.live())
            t = time.time()
            reads.append([t, "tasks:" + ex_id, tasks(ex_id)])
            if state in ("SUCCESS", "ERROR"):
                done.setdefault(ex_id, time.time())
        time.sleep(interval)
    return {"reads": reads, "upstream": upstream[0], "fetched": fetched,
            "lease_live": None if watch is None else lease_live}


def _ready_then_ids(stop_file: str) -> list[str]:
    """Say this poller is set up (imports done, client built: seconds for 8 processes
    on 2 cores, as long as the default workflow), then wait for the executions' ids:
    the bench creates them only once every poller is ready, so none misses the start."""
    Path(f"{stop_file}.ready-{os.getpid()}").touch()
    return sys.stdin.readline().split()


def _truth(plain: Any, ids: list[str], stop: threading.Event, out: list[list[Any]]) -> list[list[Any]]:
    """(first time seen, resource, value) of every version, sampled every 50 ms, into ``out``."""
    wanted, last = set(ids), {}
    while not stop.is_set():
        t = time.time()
        values: dict[str, Any] = {}
        for ex in plain.executions.list(fields=["id", "state"], limit=1000, sort_keys="created_at", sort_dirs="desc"):
            if ex.id in wanted:
                values["ex:" + ex.id] = ex.state
        grouped: dict[str, list[Any]] = {i: [] for i in ids}
        for task in plain.tasks.list(fields=["id", "name", "state", "workflow_execution_id"], limit=1000,
                                     sort_keys="created_at", sort_dirs="desc"):
            if task.workflow_execution_id in wanted:
                grouped[task.workflow_execution_id].append(task)
        values.update({"tasks:" + i: _tasks_value(ts) for i, ts in grouped.items()})
        for k, v in values.items():
            if last.get(k) != v:
                last[k] = v
                out.append([t, k, v])
        time.sleep(0.05)
    return out


def _path_kind(path: str) -> str:
    """``/executions/<id>`` -> ``executions/id``; ``/tasks`` -> ``tasks``."""
    parts = [p for p in path.split("/") if p]
    return "/".join(parts[:1] + (["id"] if len(parts) > 1 else []) + parts[2:])


def score(truth: list[list[Any]], results: list[dict[str, Any]],
          events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The row of one mode, plus ``detail``: outdated reads and upstream requests by
    resource, and (``events``: the receiver's trace) when each outdated read's event
    arrived relative to the read."""
    versions: dict[str, list[tuple[float, Any]]] = {}
    for t, k, v in truth:
        versions.setdefault(k, []).append((t, v))
    reads = outdated = 0
    worst = 0.0
    late: list[dict[str, Any]] = []
    for result in results:
        for t0, k, v in result["reads"]:
            reads += 1
            seq = versions.get(k, [])
            current = [(t, val) for t, val in seq if t <= t0 - TOLERANCE]
            if current and current[-1][1] != v and any(val == v for _, val in seq):
                # v is a version the truth saw, and a newer one was known before the read
                idx = max(i for i, (_, val) in enumerate(seq) if val == v)
                newer = [t for t, _ in seq[idx + 1:] if t <= t0 - TOLERANCE]
                if newer:
                    outdated += 1
                    worst = max(worst, t0 - newer[0])
                    late.append({"t": t0, "key": k, "lag": t0 - newer[0], "served": v,
                                 "served_seen": seq[idx][0], "newer_seen": newer[0]})
    changes = sum(len(s) - 1 for s in versions.values())
    upstream = sum(r["upstream"] for r in results)
    by_path: dict[str, int] = {}
    for r in results:
        for _, path in r.get("fetched", []):
            by_path[_path_kind(path)] = by_path.get(_path_kind(path), 0) + 1
    by_kind: dict[str, int] = {}
    for o in late:
        by_kind[o["key"].split(":")[0]] = by_kind.get(o["key"].split(":")[0], 0) + 1
    changes_by_kind: dict[str, int] = {}
    for k, seq in versions.items():
        changes_by_kind[k.split(":")[0]] = changes_by_kind.get(k.split(":")[0], 0) + len(seq) - 1
    detail: dict[str, Any] = {"outdated_by_resource": by_kind, "changes_by_resource": changes_by_kind,
                              "upstream_by_path": dict(sorted(by_path.items())),
                              "outdated_lags_s": sorted(round(o["lag"], 3) for o in late)}
    live = [r["lease_live"] for r in results if r.get("lease_live") is not None]
    if live:  # a cached mode: after how many execution reads its pollers saw the lease live
        detail["lease_live_reads"] = [sum(live), sum(1 for r in results for _, k, _ in r["reads"] if k.startswith("ex:"))]
    if events is not None:
        detail["events"] = _attribute(late, events)
        detail["refetches"] = _refetches(versions, results, events)
    return {"reads": reads, "upstream": upstream, "changes": changes, "outdated": outdated,
            "outdated_pct": round(100.0 * outdated / max(reads, 1), 3), "worst_staleness_s": round(worst, 3),
            "upstream_per_change": round(upstream / max(changes, 1), 2), "detail": detail}


def _refetches(versions: dict[str, list[tuple[float, Any]]], results: list[dict[str, Any]],
               events: list[dict[str, Any]]) -> dict[str, Any]:
    """Each upstream request after a resource's first (all pollers): did the truth see
    the resource change since the previous one, which events were applied between
    them, and was the previous one another process's (two fetches for one event)."""
    fetches: dict[str, list[tuple[float, int]]] = {}
    for proc, r in enumerate(results):
        for t, path in r.get("fetched", []):
            parts = [p for p in path.split("/") if p]
            if len(parts) >= 2 and parts[0] == "executions":
                key = ("tasks:" if parts[2:] == ["tasks"] else "ex:") + parts[1]
                fetches.setdefault(key, []).append((t, proc))
    summary: dict[str, dict[str, int]] = {}
    rows = []
    for key, got in fetches.items():
        kind, ident = key.split(":", 1)
        seq = versions.get(key, [])
        mine = sorted((e["done"], e["kind"]) for e in events if e["id"] == ident or e.get("wx") == ident)
        got.sort()
        for (prev, prev_proc), (t, proc) in zip(got, got[1:]):
            # the truth samples every 50 ms: a change it first saw up to 0.1 s after the fetch may be in it
            changed = any(prev - TOLERANCE < tv <= t + 0.1 for tv, _ in seq[1:])
            between = sorted({k for d, k in mine if prev < d <= t})
            label = ("changed" if changed else "unchanged") + " after " + ("+".join(between) or (
                "no event (the previous fetch was another process's)" if proc != prev_proc else "no event"))
            summary.setdefault(kind, {})[label] = summary.setdefault(kind, {}).get(label, 0) + 1
            rows.append({"key": key, "t": t, "prev": prev, "proc": proc, "prev_proc": prev_proc, "changed": changed,
                         "events": between})
    return {"summary": {k: dict(sorted(v.items())) for k, v in summary.items()}, "rows": rows}


def _attribute(late: list[dict[str, Any]], events: list[dict[str, Any]]) -> dict[str, Any]:
    """For each outdated read: the first event about its resource applied after (about)
    the truth first saw the newer version. ``before_read``: applied before the read started
    (the cache served an outdated value after its invalidation); ``after_read``:
    not yet arrived (Mistral had not posted it yet); ``none``: no such event."""
    out: dict[str, Any] = {"before_read": 0, "after_read": 0, "none": 0, "reads": []}
    for o in late:
        kind, ident = o["key"].split(":", 1)
        mine = [e for e in events if (e["id"] == ident and not e["task"]) or (kind == "tasks" and e.get("wx") == ident)]
        # the event of the newer version: the truth samples every 50 ms (and its requests take time), so it
        # may have been applied up to ~0.15 s before the truth first saw that version
        mine = [e for e in mine if e["done"] >= o["newer_seen"] - 0.15]
        first = min(mine, key=lambda e: e["done"]) if mine else None
        if first is None:
            out["none"] += 1
            where = None
        else:
            where = "before_read" if first["done"] <= o["t"] else "after_read"
            out[where] += 1
        out["reads"].append({**o, "event": None if first is None else first["kind"],
                             "event_minus_newer_seen_s": None if first is None else round(first["done"] - o["newer_seen"], 3),
                             "event_minus_read_s": None if first is None else round(first["done"] - o["t"], 3)})
    return out


def _run_mode(mode: str, plain: Any, env: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    stop_file = Path(env["trace"]).parent / ("stop-" + "".join(c if c.isalnum() else "-" for c in mode))
    namespace = {"events (webhook)": env["namespace"], "events (plugin)": env["plugin_namespace"],
                 "receiver down": env["namespace"],
                 "state rules": env["namespace"] + "-rules", "tutorial": "tutorial-" + env["namespace"]}.get(mode, "-")
    # the executions run side by side: long tasks need longer than the default two minutes
    deadline = max(120.0, 60.0 + 3 * sum(args.durations))
    cmd = [sys.executable, "-m", "benchmarks.events_freshness", "--poller", mode, env["url"], env["redis_url"],
           namespace, args.interval_text, str(stop_file), str(deadline)]
    outs = [open(stop_file.with_name(f"{stop_file.name}-{i}.json"), "w+") for i in range(args.pollers)]  # noqa: SIM115
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, text=True, cwd=str(REPO)) for out in outs]
    waited = time.time()
    while len(list(stop_file.parent.glob(stop_file.name + ".ready-*"))) < len(procs):
        if any(p.poll() is not None for p in procs) or time.time() - waited > 120:
            raise RuntimeError(f"{mode}: a poller ended or took two minutes before it was ready")
        time.sleep(0.05)
    ids = [plain.executions.create(env["workflow"]).id for _ in range(args.executions)]
    stop = threading.Event()
    truth: list[list[Any]] = []
    sampler = threading.Thread(target=_truth, args=(plain, ids, stop, truth), daemon=True)
    sampler.start()
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(" ".join(ids) + "\n")
        p.stdin.close()
    served = mode in ("events (webhook)", "receiver down")  # the receiver's own requests count as upstream too
    asked = [env["receiver_requests"]()] if served else []
    if mode == "receiver down":  # a crash: Mistral's posts fail from then on, nothing reconciles

        def crash() -> None:
            try:
                asked.append(env["receiver_requests"]())
            finally:  # whatever /health said, the receiver goes
                env["kill_receiver"]()

        threading.Timer(KILL_AFTER, crash).start()
    final = ("SUCCESS", "ERROR", "CANCELLED")
    ended = None
    while any(p.poll() is None for p in procs):
        last = {k: v for _, k, v in list(truth)}
        if ended is None and all(last.get("ex:" + i) in final for i in ids):
            ended = time.time()
        if ended is not None and time.time() - ended > 3.0:  # past the state rules' 2 s TTL of a RUNNING execution
            stop_file.touch()
        time.sleep(0.1)
    results = []
    for p, out in zip(procs, outs, strict=True):
        p.wait(60)
        out.seek(0)
        results.append(json.loads(out.read()))
        out.close()
    stop.set()
    sampler.join(10)
    events = None
    if mode == "events (webhook)":  # the plugin leaves no trace: no per-event attribution for it
        wanted = set(ids)
        with open(env["trace"], encoding="utf-8") as f:
            events = [e for e in map(json.loads, f) if e["id"] in wanted or e.get("wx") in wanted]
    row = score(truth, results, events)
    if served:
        if len(asked) == 1:
            asked.append(env["receiver_requests"]())
        extra = asked[1] - asked[0]
        row["upstream"] += extra
        row["upstream_per_change"] = round(row["upstream"] / max(row["changes"], 1), 2)
        row["detail"]["receiver_requests"] = extra
    if events is not None:  # for the post-delay analysis: what the truth saw, when each event was applied
        row["detail"]["truth"], row["detail"]["trace"] = truth, events
    return row


def _receiver_requests(port: int, token: str) -> int:
    """What the receiver asked of Mistral so far: reconciliation and definition checks."""
    import requests

    counts = requests.get(f"http://127.0.0.1:{port}/health", headers={"Authorization": f"Bearer {token}"},
                          timeout=5).json()["counts"]
    return int(counts["reconcile_requests"]) + int(counts["definition_requests"])


def _wait_health(port: int, token: str) -> None:
    import requests

    for _ in range(300):
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", headers={"Authorization": f"Bearer {token}"},
                            timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError("the receiver did not start")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--poller":
        mode, url, redis_url, namespace, interval, stop_file, deadline, *ids = argv[1:]
        print(json.dumps(poll(mode, url, redis_url, namespace, ids, float(interval), stop_file, float(deadline))))
        return 0
    p = argparse.ArgumentParser(prog="python -m benchmarks.events_freshness", description=__doc__.split("\n\n")[0])
    p.add_argument("--pollers", type=int, default=4)
    p.add_argument("--executions", type=int, default=4)
    p.add_argument("--interval", type=float, default=0.2)
    p.add_argument("--durations", type=_durations, default=(1, 2, 1), metavar="A,B,C",
                   help="whole seconds of the bench workflow's std.sleep tasks, in a chain (default 1,2,1; "
                        "e.g. 6,10,6: executions stay RUNNING past the state rules' 2 s TTL)")
    p.add_argument("--out", default="bench-results")
    args = p.parse_args(argv)
    args.interval_text = str(args.interval)
    from mistralclient.api import client as mc
    from mistralclient.api.base import APIException

    from mistral_cache.testing.servers import RedisServer
    from mistral_cache.testing.support import free_port

    os.environ.setdefault("no_proxy", "127.0.0.1,localhost")
    work = Path(tempfile.mkdtemp(prefix="events-bench-"))
    token_file = work / "token"
    fd = os.open(str(token_file), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    token = token_file.read_text().strip()
    rport, mport = free_port(), free_port()
    location = ["--port", str(mport), "--workdir", str(work / "mistral")]
    server = RedisServer().start()
    receiver = None
    namespace = "bench" + secrets.token_hex(4)
    try:
        # both publishers on one server: every state change goes to the receiver (webhook) and,
        # from inside the engine, straight into Redis under the plugin's own namespace
        started = subprocess.run([sys.executable, str(SCRIPT), "start", *location, "--notify-url",
                                  f"http://127.0.0.1:{rport}/events", "--notify-token-file", str(token_file),
                                  "--notify-plugin", server.url, "--notify-plugin-namespace", namespace + "-plugin"],
                                 capture_output=True, text=True)
        if started.returncode:
            raise RuntimeError(f"scripts/mistral-server start failed:\n{started.stdout}{started.stderr}")
        url = started.stdout.strip().splitlines()[-1]
        workflow, definition = _workflow(args.durations)
        env: dict[str, Any] = {"url": url, "redis_url": server.url, "namespace": namespace, "plugin_namespace": namespace + "-plugin",
               "trace": str(work / "events.jsonl"), "workflow": workflow}
        with open(work / "receiver.log", "wb") as log:
            receiver = subprocess.Popen(
                [sys.executable, "-m", "mistral_cache.admin.cli", "events", "serve", "--listen", f"127.0.0.1:{rport}",
                 "--redis-url", server.url, "--mistral-url", url, "--namespace", env["namespace"],
                 "--token-file", str(token_file), "--trace-file", env["trace"]], stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO))
        _wait_health(rport, token)
        plain = mc.client(mistral_url=url)
        try:
            plain.workflows.get(workflow)
        except APIException:  # not there yet (a fresh server): create it
            plain.workflows.create(definition)
        else:  # a server that kept it: make it this run's durations
            plain.workflows.update(definition)
        env["kill_receiver"] = receiver.kill
        env["receiver_requests"] = lambda: _receiver_requests(rport, token)
        rows = {mode: _run_mode(mode, plain, env, args) for mode in MODES}
    finally:
        if receiver is not None:
            receiver.terminate()
            receiver.wait(10)
        subprocess.run([sys.executable, str(SCRIPT), "stop", *location], capture_output=True, check=False)
        server.stop()
    cols = ["reads", "upstream", "changes", "outdated", "outdated_pct", "worst_staleness_s", "upstream_per_change"]
    print("| client | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for mode, row in rows.items():
        print(f"| {MODES[mode]} | " + " | ".join(str(row[c]) for c in cols) + " |")
    for mode, row in rows.items():
        d = row["detail"]
        print(f"{MODES[mode]}: outdated by resource {d['outdated_by_resource']} (changes {d['changes_by_resource']}), "
              f"upstream by path {d['upstream_by_path']}"
              + (f", the receiver's own {d['receiver_requests']}" if "receiver_requests" in d else ""))
        if "lease_live_reads" in d:
            print(f"  lease live after {d['lease_live_reads'][0]} of {d['lease_live_reads'][1]} execution reads")
        if "events" in d:
            e = d["events"]
            print(f"  outdated reads vs their event: applied before the read {e['before_read']}, "
                  f"after the read {e['after_read']}, none {e['none']}; lags {d['outdated_lags_s']}")
            print(f"  refetches (after the first fetch of each resource), by whether the truth saw it change and the "
                  f"events between: {d['refetches']['summary']}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "events_freshness.json").write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
