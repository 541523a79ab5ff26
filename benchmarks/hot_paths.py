"""A pinned micro-benchmark of the hot paths against their floors, in one process:
the local hit against ``cachetools.cached(LRUCache)``, the Redis hit (no local
tier) and the two-tier Redis hit after a local miss against a bare redis-py GET +
``json.loads`` (hiredis on both sides when installed). Each figure is the median
over ``ROUNDS`` rounds of ns per call, the cases interleaved inside each round.

One tree, against a Redis you name::

    taskset -c 1 python -m benchmarks.hot_paths redis://127.0.0.1:6379/0

Two trees, alternating runs against a private redis-server pinned with this
process (the server inherits the affinity), medians of the runs' ratios::

    taskset -c 1 python -m benchmarks.hot_paths --ab /tmp/before /work/main --runs 4
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

__all__ = ["PAYLOAD", "main", "measure", "payload"]

ROUNDS = 9
N_LOCAL, N_REDIS = 20_000, 1_000

PAYLOAD: dict[str, Any] = {
    "id": "3f1c2d9e-9a55-4bb8-9f1a-0c9a0e7d1e42", "workflow_name": "wf_0001",
    "workflow_id": "b2c4e6a8-1111-4222-8333-944455556666", "state": "RUNNING",
    "state_info": None, "input": '{"x": 1}', "params": '{"namespace": ""}',
    "created_at": "2026-11-23 16:00:00", "updated_at": "2026-11-23 16:00:05",
    "description": "", "tags": ["bench"], "project_id": "<default-project>",
}
"""A value the size and shape of a Mistral execution record (~400 bytes of JSON).
Here, not in ``benchmarks.common``, so that this file still runs by path against a
tree holding only ``mistral_cache`` (``--ab``); the latency scenario takes it from
here, so both measure the same value."""


def payload(x: Any) -> dict[str, Any]:
    """The cached function of every case: ``PAYLOAD`` with its own ``id``."""
    return dict(PAYLOAD, id=str(x))


def measure(url: str, rounds: int = ROUNDS) -> dict[str, float]:
    """name -> median ns per call, plus each path's ratio to its floor."""
    import cachetools
    import redis

    from mistral_cache import Cache, Local

    ns = f"hot-{os.getpid()}-{random.randrange(1 << 30)}"
    ct = cachetools.cached(cachetools.LRUCache(maxsize=4096))(payload)
    two = Cache(redis_url=url, namespace=ns + "a", local=Local(maxsize=4096))
    fl = two.cached(ttl=600, key="lat:{x}")(payload)
    fd = two.cached(ttl=600)(payload)
    client = redis.Redis.from_url(url)
    bare_key = ns + ":bare"
    client.set(bare_key, json.dumps(payload(1)))
    loads, get = json.loads, client.get
    remote = Cache(redis_url=url, namespace=ns + "r", local=None)
    fr = remote.cached(ttl=600, key="lat:{x}")(payload)
    small = Cache(redis_url=url, namespace=ns + "t", local=Local(maxsize=1))
    ft = small.cached(ttl=600, key="lat:{x}")(payload)
    for f in (ct, fl, fd, fr, ft):
        f(1)
    ft(2)

    def loop(call: Callable[[int], Any], n: int) -> Callable[[], None]:
        def run() -> None:
            for i in range(n):
                call(i)
        return run

    cases: dict[str, tuple[Callable[[], None], int]] = {
        "cachetools hit": (loop(lambda i: ct(1), N_LOCAL), N_LOCAL),
        "local hit (template key)": (loop(lambda i: fl(1), N_LOCAL), N_LOCAL),
        "local hit (default key)": (loop(lambda i: fd(1), N_LOCAL), N_LOCAL),
        "bare GET+json": (loop(lambda i: loads(get(bare_key)), N_REDIS), N_REDIS),  # type: ignore[arg-type]
        "redis hit (local=None)": (loop(lambda i: fr(1), N_REDIS), N_REDIS),
        "redis hit (two-tier, local miss)": (loop(lambda i: ft(1 + (i & 1)), N_REDIS), N_REDIS),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for run, _ in cases.values():
        run()  # warm: connections, scripts, the first-read estimate
    for _ in range(rounds):
        for name, (run, n) in cases.items():
            t0 = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - t0) / n * 1e9)
    out = {name: round(statistics.median(ts), 1) for name, ts in times.items()}
    for name, floor in (("local hit (template key)", "cachetools hit"), ("local hit (default key)", "cachetools hit"),
                        ("redis hit (local=None)", "bare GET+json"), ("redis hit (two-tier, local miss)", "bare GET+json")):
        out[f"{name} / {floor}"] = round(out[name] / out[floor], 3)
    for c in (two, remote, small):
        c.close()
    client.close()
    return out


def ab(trees: list[str], runs: int) -> dict[str, dict[str, Any]]:
    """Alternate ``trees`` (each a directory holding mistral_cache), ``runs`` times each,
    against one private redis-server: tree -> name -> (median, every run)."""
    from mistral_cache.testing import RedisServer

    results: dict[str, list[dict[str, float]]] = {t: [] for t in trees}
    with RedisServer() as server, tempfile.TemporaryDirectory() as empty:
        for r in range(runs):
            for tree in trees if r % 2 == 0 else trees[::-1]:
                # This file run by path from an empty directory: mistral_cache comes from `tree` alone.
                done = subprocess.run(
                    [sys.executable, "-c", "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')",
                     os.path.abspath(__file__), server.url],
                    env=dict(os.environ, PYTHONPATH=tree), cwd=empty, capture_output=True, text=True, check=True)
                results[tree].append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {t: {k: {"median": round(statistics.median(d[k] for d in rs), 3), "runs": [d[k] for d in rs]} for k in rs[0]}
            for t, rs in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", nargs="?", help="a Redis URL (one tree: the one importable)")
    parser.add_argument("--ab", nargs="+", metavar="TREE", help="alternate these trees against a private redis-server")
    parser.add_argument("--runs", type=int, default=4)
    args = parser.parse_args()
    if args.ab:
        print(json.dumps(ab(args.ab, args.runs), indent=1))
    elif args.url:
        print(json.dumps(measure(args.url, int(os.environ.get("HOT_PATHS_ROUNDS", ROUNDS)))))
    else:
        parser.error("give a Redis URL or --ab TREE...")


if __name__ == "__main__":
    main()
