"""Freshness of Mistral polling with and without events, against a REAL server.

One command starts everything (a Redis, a Mistral whose notifier posts to
``mistral-cache events serve``, the receiver) and runs the same polling workload
three times -- the plain client, ``CachedMistralClient`` with the state rules
(a namespace no receiver serves), and with events on -- then prints, for each:
reads, upstream requests, true changes, outdated reads, worst staleness and
upstream requests per change::

    python -m benchmarks.events_freshness [--pollers 4] [--executions 4] [--interval 0.2] [--out DIR]

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
WF = """
version: '2.0'
bench_events:
  tasks:
    t1:
      action: std.sleep seconds=1
      on-success: t2
    t2:
      action: std.sleep seconds=2
      on-success: t3
    t3:
      action: std.sleep seconds=1
"""


def _tasks_value(tasks: list[Any]) -> list[list[str]]:
    return sorted([t.name, t.state] for t in tasks)


def poll(mode: str, url: str, redis_url: str, namespace: str, ids: list[str], interval: float) -> dict[str, Any]:
    """One poller process: every ``interval``, each execution and its task list, until all end."""
    from mistralclient.api import client as mc

    if mode == "plain":
        client: Any = mc.client(mistral_url=url)
        session = client.executions.http_client.session
    else:
        from mistral_cache import Cache
        from mistral_cache.mistral import CachedMistralClient

        client = CachedMistralClient(mistral_url=url, cache=Cache(redis_url, namespace=namespace))
        session = client.http_client.session
    upstream = [0]
    original = session.request

    def counting(method: str, u: str, **kw: Any) -> Any:
        upstream[0] += 1
        return original(method, u, **kw)

    session.request = counting
    reads: list[list[Any]] = []
    done: dict[str, float] = {}
    while len(done) < len(ids) or time.time() - max(done.values()) < 0.5:
        for ex_id in ids:
            t = time.time()
            state = client.executions.get(ex_id).state
            reads.append([t, "ex:" + ex_id, state])
            t = time.time()
            reads.append([t, "tasks:" + ex_id, _tasks_value(client.tasks.list(workflow_execution_id=ex_id))])
            if state in ("SUCCESS", "ERROR"):
                done.setdefault(ex_id, time.time())
        time.sleep(interval)
    return {"reads": reads, "upstream": upstream[0]}


def _truth(plain: Any, ids: list[str], stop: threading.Event) -> list[list[Any]]:
    """(first time seen, resource, value) of every version, sampled every 50 ms."""
    wanted, last, out = set(ids), {}, []
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


def score(truth: list[list[Any]], results: list[dict[str, Any]]) -> dict[str, Any]:
    versions: dict[str, list[tuple[float, Any]]] = {}
    for t, k, v in truth:
        versions.setdefault(k, []).append((t, v))
    reads = outdated = 0
    worst = 0.0
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
    changes = sum(len(s) - 1 for s in versions.values())
    upstream = sum(r["upstream"] for r in results)
    return {"reads": reads, "upstream": upstream, "changes": changes, "outdated": outdated,
            "outdated_pct": round(100.0 * outdated / max(reads, 1), 3), "worst_staleness_s": round(worst, 3),
            "upstream_per_change": round(upstream / max(changes, 1), 2)}


def _run_mode(mode: str, plain: Any, env: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    ids = [plain.executions.create("bench_events").id for _ in range(args.executions)]
    stop = threading.Event()
    truth: list[list[Any]] = []
    sampler = threading.Thread(target=lambda: truth.extend(_truth(plain, ids, stop)), daemon=True)
    sampler.start()
    namespace = env["namespace"] if mode == "events" else env["namespace"] + "-rules"
    cmd = [sys.executable, "-m", "benchmarks.events_freshness", "--poller", mode, env["url"], env["redis_url"],
           namespace, args.interval_text, *ids]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=str(REPO)) for _ in range(args.pollers)]
    results = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    stop.set()
    sampler.join(10)
    return score(truth, results)


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
        mode, url, redis_url, namespace, interval, *ids = argv[1:]
        print(json.dumps(poll(mode, url, redis_url, namespace, ids, float(interval))))
        return 0
    p = argparse.ArgumentParser(prog="python -m benchmarks.events_freshness", description=__doc__.split("\n\n")[0])
    p.add_argument("--pollers", type=int, default=4)
    p.add_argument("--executions", type=int, default=4)
    p.add_argument("--interval", type=float, default=0.2)
    p.add_argument("--out", default="bench-results")
    args = p.parse_args(argv)
    args.interval_text = str(args.interval)
    from mistralclient.api import client as mc

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
    try:
        started = subprocess.run([sys.executable, str(SCRIPT), "start", *location, "--notify-url",
                                  f"http://127.0.0.1:{rport}/events", "--notify-token-file", str(token_file)],
                                 capture_output=True, text=True, check=True)
        url = started.stdout.strip().splitlines()[-1]
        env = {"url": url, "redis_url": server.url, "namespace": "bench" + secrets.token_hex(4)}
        with open(work / "receiver.log", "wb") as log:
            receiver = subprocess.Popen(
                [sys.executable, "-m", "mistral_cache.admin.cli", "events", "serve", "--listen", f"127.0.0.1:{rport}",
                 "--redis-url", server.url, "--mistral-url", url, "--namespace", env["namespace"],
                 "--token-file", str(token_file)], stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO))
        _wait_health(rport, token)
        plain = mc.client(mistral_url=url)
        plain.workflows.create(WF)
        rows = {mode: _run_mode(mode, plain, env, args) for mode in ("plain", "state rules", "events")}
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
        print(f"| {mode} | " + " | ".join(str(row[c]) for c in cols) + " |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "events_freshness.json").write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
