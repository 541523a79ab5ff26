"""Freshness through Redis faults: 1 writer and 3 readers, each a real process,
sharing one real Redis, while one fault is injected.

    python -m benchmarks.fault_freshness [fault ...]

The source of truth is a shared counter. The writer bumps it, calls
``f.invalidate(k)`` and reads ``f(k)`` back, every 0.1 s until 0.3 s after Redis
answers again (later writes would hide a lost invalidation); it keeps reading
to the end. Readers read ``f(k)`` in a loop.
A read is *stale* when it returns a version older than one whose invalidation
had already returned before the read began. Reported per fault:

- ``worst_stale_after_s``: the latest stale read, in seconds after Redis answered
  again (negative or absent: none after recovery);
- ``stale_after_1s``: stale reads that began more than 1 s after Redis answered;
- ``ryow_violations``: writer reads that went back to a version older than its own
  last invalidation (read-your-own-write), at any time, the fault included;
- ``errors``: exceptions seen by any caller.

Faults: ``sigstop`` (SIGSTOP for 3 s), ``debug_sleep`` (``DEBUG SLEEP 2``),
``restart`` (kill -9, restart on the same port 3 s later), ``pubsub_kill``
(``CLIENT KILL TYPE pubsub``).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
import threading
import time
import uuid
from typing import Any

import redis

from mistral_cache import Cache
from mistral_cache.testing import RedisServer

FAULTS = ("sigstop", "debug_sleep", "restart", "pubsub_kill")
KEYS = (1, 2, 3)
TTL = 30.0
QUIET_AFTER = 0.3  # seconds after recovery the writer keeps writing


def _make(url: str, namespace: str, version: Any, ready: Any) -> tuple[Cache, Any]:
    cache = Cache(url, namespace=namespace)

    @cache.cached(ttl=TTL, key="item:{k}")
    def item(k: int) -> int:
        return int(version.value)

    for k in KEYS:
        item(k)
    with ready.get_lock():
        ready.value += 1
    return cache, item


def _reader(url: str, namespace: str, version: Any, stop: Any, out: Any, ready: Any) -> None:
    cache, item = _make(url, namespace, version, ready)
    reads: list[tuple[float, int, int]] = []
    errors: list[str] = []
    i = 0
    while not stop.is_set():
        k = KEYS[i % len(KEYS)]
        i += 1
        t0 = time.time()
        try:
            reads.append((t0, k, item(k)))
        except Exception as exc:  # any exception is a failure of fail-open
            errors.append(f"{type(exc).__name__}: {exc}")
        time.sleep(0.002)
    cache.close()
    out.put({"reads": reads, "errors": errors[:20], "n_errors": len(errors)})


def _writer(url: str, namespace: str, version: Any, stop: Any, out: Any, quiet: Any, ready: Any) -> None:
    cache, item = _make(url, namespace, version, ready)
    invalidations: list[tuple[float, int, int]] = []  # (returned at, key, version)
    reads: list[tuple[float, int, int]] = []
    errors: list[str] = []
    ryow = 0
    own: dict[int, int] = {}
    i = 0
    next_write = time.time()
    while not stop.is_set():
        k = KEYS[i % len(KEYS)]
        i += 1
        try:
            if time.time() >= next_write and not quiet.is_set():
                with version.get_lock():
                    version.value += 1
                    v = int(version.value)
                item.invalidate(k)
                invalidations.append((time.time(), k, v))
                own[k] = v
                next_write = time.time() + 0.1
            t0 = time.time()
            got = item(k)
            reads.append((t0, k, got))
            if got < own.get(k, 0):
                ryow += 1
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        time.sleep(0.002)
    cache.close()
    out.put({"reads": reads, "invalidations": invalidations, "ryow": ryow, "errors": errors[:20], "n_errors": len(errors)})


def _answers(server: RedisServer) -> bool:
    try:
        with redis.Redis(host=server.host, port=server.port, socket_timeout=0.2, socket_connect_timeout=0.2) as c:
            return bool(c.ping())
    except redis.RedisError:
        return False


def _inject(fault: str, server: RedisServer) -> float:
    """Inject the fault; return the wall-clock time Redis answered again."""
    if fault == "sigstop":
        server.pause()
        time.sleep(3.0)
        server.resume()
    elif fault == "debug_sleep":
        with redis.Redis(host=server.host, port=server.port, socket_timeout=10) as c:
            c.execute_command("DEBUG", "SLEEP", "2")
    elif fault == "restart":
        server.kill()
        time.sleep(3.0)
        server.restart()
    elif fault == "pubsub_kill":
        with redis.Redis(host=server.host, port=server.port, socket_timeout=2) as c:
            c.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    else:
        raise ValueError(f"unknown fault {fault!r}; choose from {FAULTS}")
    while not _answers(server):
        time.sleep(0.005)
    return time.time()


def _analyse(results: list[dict[str, Any]], recovered: float, fault_start: float) -> dict[str, Any]:
    writer = results[0]
    invs = sorted(writer["invalidations"])
    # required(t, k): the newest version whose invalidation of k returned before t
    import bisect

    per_key: dict[int, tuple[list[float], list[int]]] = {}
    for t, k, v in invs:
        ts, vs = per_key.setdefault(k, ([], []))
        ts.append(t)
        vs.append(max(v, vs[-1]) if vs else v)
    stale_after: list[float] = []
    stale_total = 0
    reads = 0
    last_stale_any = -1e9
    for r in results:
        for t, k, got in r["reads"]:
            reads += 1
            ts, vs = per_key.get(k, ([], []))
            j = bisect.bisect_left(ts, t) - 1
            if j >= 0 and got < vs[j]:
                stale_total += 1
                if t > recovered:
                    stale_after.append(t - recovered)
                last_stale_any = max(last_stale_any, t - recovered)
    return {
        "reads": reads,
        "invalidations": len(invs),
        "stale_reads": stale_total,
        "stale_after_recovery": len(stale_after),
        "worst_stale_after_s": round(max(stale_after), 3) if stale_after else None,
        "stale_after_1s": sum(1 for s in stale_after if s > 1.0),
        "ryow_violations": writer["ryow"],
        "errors": sum(r["n_errors"] for r in results),
        "error_samples": [e for r in results for e in r["errors"]][:5],
        "fault_s": round(recovered - fault_start, 2),
    }


def run(fault: str, *, warmup: float = 1.5, after: float = 4.0, server: RedisServer | None = None) -> dict[str, Any]:
    own = server is None
    srv = server or RedisServer(debug=True).start()
    ctx = mp.get_context("spawn")
    version = ctx.Value("q", 1)
    ready = ctx.Value("i", 0)
    stop = ctx.Event()
    out = ctx.Queue()
    quiet = ctx.Event()  # the writer stops writing shortly after recovery: a lost invalidation then shows
    namespace = "ff-" + uuid.uuid4().hex[:8]
    procs = [ctx.Process(target=_writer, args=(srv.url, namespace, version, stop, out, quiet, ready), daemon=True)]
    procs += [ctx.Process(target=_reader, args=(srv.url, namespace, version, stop, out, ready), daemon=True) for _ in range(3)]
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + 120
        while ready.value < len(procs) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(warmup)  # a warm steady state
        fault_start = time.time()
        recovered = _inject(fault, srv)
        time.sleep(QUIET_AFTER)
        quiet.set()
        time.sleep(after)
        stop.set()
        results = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(10)
    finally:
        stop.set()
        for p in procs:
            if p.is_alive():
                p.kill()
        if own:
            srv.stop()
    results.sort(key=lambda r: "invalidations" not in r)  # the writer first
    return _analyse(results, recovered, fault_start)


def _table(rows: dict[str, dict[str, Any]]) -> str:
    cols = ("reads", "invalidations", "stale_reads", "stale_after_recovery", "worst_stale_after_s", "stale_after_1s",
            "ryow_violations", "errors", "fault_s")
    lines = ["fault        " + " ".join(f"{c:>20s}" for c in cols)]
    for name, row in rows.items():
        lines.append(f"{name:12s} " + " ".join(f"{str(row[c]):>20s}" for c in cols))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    faults = (argv if argv is not None else sys.argv[1:]) or list(FAULTS)
    rows = {}
    for fault in faults:
        rows[fault] = run(fault)
        print(json.dumps({fault: rows[fault]}), flush=True)
    print(_table(rows))


if __name__ == "__main__":
    threading.current_thread().name = "fault-freshness"
    main()
