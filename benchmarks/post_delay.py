"""How long a REAL Mistral takes to post a notification: from the change being
visible through its API to the webhook's POST reaching a loopback receiver.

The simulated Mistral draws this delay (:class:`benchmarks.sim_mistral.notifier.PostDelay`)
and the events bench's outdated reads depend on it, so its parameters come from
this measurement rather than a guess::

    python -m benchmarks.post_delay [--executions 6] [--out DIR]

One command starts a Mistral whose notifier posts to a receiver in this process
(bearer token, records each POST's arrival), then runs executions of a
three-task workflow one at a time while two threads of this process read the
execution and its task list back to back (no pause). A change committed after the last read that
did not show it (its start) and before the first that did (its end), so each
event's delay lies in ``[arrival - end, arrival - start]``; the midpoint is
reported, with the bracket's median width as the resolution. The lognormal fit
(median, sigma of the log) is what ``PostDelay`` takes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["fit", "main", "match"]

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "mistral-server"
WF = """
version: '2.0'
bench_post_delay:
  tasks:
    t1:
      action: std.sleep seconds=1
      on-success: t2
    t2:
      action: std.noop
      on-success: t3
    t3:
      action: std.sleep seconds=1
"""
#: The state a task or workflow event says the resource reached.
FINAL = ("SUCCESS", "ERROR", "CANCELLED")


class Arrivals:
    """The receiver: a WSGI app answering 200 to authenticated POSTs and keeping
    (arrival time, payload) of each."""

    def __init__(self, token: str) -> None:
        self.expected = f"Bearer {token}"
        self.posts: list[tuple[float, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        arrived = time.time()
        if environ.get("HTTP_AUTHORIZATION") != self.expected or environ.get("REQUEST_METHOD") != "POST":
            start_response("401 Unauthorized", [("Content-Length", "0")])
            return [b""]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(min(length, 1 << 20)) or b"{}")
        with self.lock:
            self.posts.append((arrived, body))
        start_response("200 OK", [("Content-Length", "0")])
        return [b""]


def observe(clients: dict[str, Any], ex_id: str) -> list[tuple[float, float, str, dict[str, str]]]:
    """Back-to-back reads, the execution in one thread and its task list in another
    (halving each bracket), until the execution ends and 0.5 s more: (sent,
    received, "ex" or "tasks", {resource id: state}) per read."""
    seen: list[tuple[float, float, str, dict[str, str]]] = []
    ended: list[float] = []

    def read(kind: str) -> None:
        plain = clients[kind]  # a client (and HTTP session) per thread
        while not ended or time.time() - ended[0] < 0.5:
            sent = time.time()
            if kind == "ex":
                states = {ex_id: plain.executions.get(ex_id).state}
            else:
                states = {t.id: t.state for t in plain.tasks.list(workflow_execution_id=ex_id, fields=["id", "state"])}
            got = time.time()
            seen.append((sent, got, kind, states))
            if kind == "ex" and states[ex_id] in FINAL and not ended:
                ended.append(got)

    readers = [threading.Thread(target=read, args=(kind,)) for kind in ("ex", "tasks")]
    for t in readers:
        t.start()
    for t in readers:
        t.join(120)
    return sorted(seen)


def match(seen: list[tuple[float, float, str, dict[str, str]]],
          posts: list[tuple[float, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each POST against the first read that showed its (resource, state): the change
    committed after the previous read of that kind was sent and before that read was
    received. A change already shown by the first read has no start: left out."""
    out = []
    for arrived, body in posts:
        rid, state = body.get("id"), body.get("state")
        kind = "tasks" if body.get("workflow_execution_id") else "ex"
        reads = [(s, g, states) for s, g, k, states in seen if k == kind]
        for i, (_, got, states) in enumerate(reads):
            if states.get(str(rid)) == state:
                if i:
                    start = reads[i - 1][0]
                    out.append({"event": body.get("event"), "id": rid, "state": state, "arrived": arrived,
                                "low": arrived - got, "high": arrived - start, "delay": arrived - (start + got) / 2})
                break
    return out


def fit(delays: list[float]) -> dict[str, float]:
    """The lognormal ``PostDelay`` takes (median, sigma of the log), from the positive delays."""
    logs = [math.log(d) for d in delays if d > 0]
    if len(logs) < 2:
        return {"median": 0.0, "sigma": 0.0}
    return {"median": round(math.exp(statistics.fmean(logs)), 4), "sigma": round(statistics.stdev(logs), 3)}


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.post_delay", description=__doc__.split("\n\n")[0])
    p.add_argument("--executions", type=int, default=6)
    p.add_argument("--out", default="bench-results")
    args = p.parse_args(argv)
    if args.executions < 1:
        p.error("--executions must be at least 1")
    from mistralclient.api import client as mc

    from mistral_cache.testing.support import free_port

    from .freshness_mistral import serve_wsgi

    os.environ.setdefault("no_proxy", "127.0.0.1,localhost")
    work = Path(tempfile.mkdtemp(prefix="post-delay-"))
    token = secrets.token_urlsafe(32)
    token_file = work / "token"
    fd = os.open(str(token_file), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    rport, mport = free_port(), free_port()
    location = ["--port", str(mport), "--workdir", str(work / "mistral")]
    arrivals = Arrivals(token)
    stop_receiver = serve_wsgi(arrivals, rport)
    matched: list[dict[str, Any]] = []
    posts = 0
    try:
        started = subprocess.run([sys.executable, str(SCRIPT), "start", *location, "--notify-url",
                                  f"http://127.0.0.1:{rport}/events", "--notify-token-file", str(token_file)],
                                 capture_output=True, text=True, check=True)
        url = started.stdout.strip().splitlines()[-1]
        plain = mc.client(mistral_url=url)
        clients = {"ex": plain, "tasks": mc.client(mistral_url=url)}
        plain.workflows.create(WF)
        for _ in range(args.executions):
            ex_id = plain.executions.create("bench_post_delay").id
            seen = observe(clients, ex_id)
            time.sleep(0.3)  # the last POSTs
            with arrivals.lock:
                mine = [(t, b) for t, b in arrivals.posts if b.get("id") == ex_id or b.get("workflow_execution_id") == ex_id]
            posts += len(mine)
            matched += match(seen, mine)
    finally:
        stop_receiver()
        subprocess.run([sys.executable, str(SCRIPT), "stop", *location], capture_output=True, check=False)
    delays = [m["delay"] for m in matched]
    if not delays:
        print("no event could be matched to a read", file=sys.stderr)
        return 1
    widths = [m["high"] - m["low"] for m in matched]
    summary = {"posts": posts, "matched": len(matched), "median_s": round(statistics.median(delays), 4),
               "p90_s": round(_quantile(delays, 0.9), 4), "p99_s": round(_quantile(delays, 0.99), 4),
               "max_s": round(max(delays), 4), "resolution_s": round(statistics.median(widths), 4),
               "lognormal": fit(delays)}
    by_event: dict[str, list[float]] = {}
    for m in matched:
        by_event.setdefault(m["event"], []).append(m["delay"])
    print(f"{summary['matched']} of {posts} POSTs matched to the read that first showed their change")
    print(f"delay (change visible -> POST arrived): median {summary['median_s'] * 1000:.1f} ms, "
          f"p90 {summary['p90_s'] * 1000:.1f} ms, p99 {summary['p99_s'] * 1000:.1f} ms, max {summary['max_s'] * 1000:.1f} ms "
          f"(each within +/- {summary['resolution_s'] * 500:.1f} ms)")
    print(f"lognormal fit: median {summary['lognormal']['median'] * 1000:.1f} ms, sigma {summary['lognormal']['sigma']}")
    for kind, ds in sorted(by_event.items()):
        print(f"  {kind:<20} n={len(ds):<3} median {statistics.median(ds) * 1000:.1f} ms  max {max(ds) * 1000:.1f} ms")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "post_delay.json").write_text(json.dumps({"summary": summary, "matched": matched}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
