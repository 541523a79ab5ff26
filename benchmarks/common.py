"""Shared plumbing for the bundled benchmarks: the run environment, timing, progress."""

from __future__ import annotations

import contextlib
import importlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

PEERS: dict[str, str] = {
    "cachetools": "cachetools",
    "dogpile.cache": "dogpile.cache",
    "cashews": "cashews",
    "aiocache": "aiocache",
    "matplotlib": "matplotlib",
    "numpy": "numpy",
}
"""import name -> pip name of the optional libraries the benchmarks compare against."""


def have(module: str) -> bool:
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 - any failure means "not usable here"
        return False
    return True


@dataclass
class Env:
    """What a scenario gets: where Redis and Mistral are, how big to go, how to talk."""

    redis_url: str
    mistral_url: str
    sim: Any  # benchmarks.sim_mistral.SimulatedMistral, or None for a real Mistral
    quick: bool
    out: str
    missing: list[str] = field(default_factory=list)
    stream: Any = sys.stderr
    redis_pid: int | None = None  # the embedded server's, when we started one

    def say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def progress(self, label: str, done: int, total: int) -> None:
        width = 24
        filled = int(width * done / max(total, 1))
        bar = "#" * filled + "." * (width - filled)
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        end = "\n" if done >= total or not tty else ""
        print(f"\r  [{bar}] {done}/{total} {label:<48}", end=end, file=self.stream, flush=True)

    def skip(self, peer: str) -> bool:
        """True (and tell the user once) when ``peer`` is not installed."""
        if peer in self.missing:
            return True
        return False


@contextlib.contextmanager
def pinned(env: Env) -> Iterator[int | None]:
    """Run this process (and the embedded Redis, when we started it) on one CPU.

    On small VMs a round trip's latency is bimodal, depending on whether client and
    server wake on the same vCPU (33 us or 100+ us for the same GET, run to run),
    which drowns the client-side costs a latency table is about. Pinning both to
    one CPU measures every library under the same, stable condition. Yields the
    CPU, or None where affinity cannot be set."""
    if not hasattr(os, "sched_setaffinity"):
        yield None
        return
    pids = [0] + ([env.redis_pid] if env.redis_pid else [])
    saved = {}
    try:
        for pid in pids:
            saved[pid] = os.sched_getaffinity(pid)
        cpu = min(saved[0])
        for pid in pids:
            os.sched_setaffinity(pid, {cpu})
    except OSError:
        for pid, cpus in saved.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(pid, cpus)
        yield None
        return
    try:
        yield cpu
    finally:
        for pid, cpus in saved.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(pid, cpus)


def percentile(samples: Sequence[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    idx = min(len(ordered) - 1, max(0, round(q / 100.0 * (len(ordered) - 1))))
    return ordered[idx]


def summarize(samples: Sequence[float]) -> dict[str, Any]:
    """Median, p99 and mean in microseconds of per-call times given in seconds."""
    us = [s * 1e6 for s in samples]
    return {
        "n": len(us),
        "median_us": round(statistics.median(us), 3) if us else None,
        "p99_us": round(percentile(us, 99), 3) if us else None,
        "mean_us": round(statistics.fmean(us), 3) if us else None,
    }


def time_calls(call: Callable[[int], Any], n: int, warmup: int = 50) -> list[float]:
    """Per-call wall times (seconds) of ``call(i)`` for i in range(n)."""
    for i in range(min(warmup, n)):
        call(i)
    clock = time.perf_counter
    out = []
    for i in range(n):
        t0 = clock()
        call(i)
        out.append(clock() - t0)
    return out


async def atime_calls(call: Callable[[int], Any], n: int, warmup: int = 50) -> list[float]:
    for i in range(min(warmup, n)):
        await call(i)
    clock = time.perf_counter
    out = []
    for i in range(n):
        t0 = clock()
        await call(i)
        out.append(clock() - t0)
    return out


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpus": os.cpu_count(),
    }
    try:
        with open("/proc/meminfo") as fh:
            info["mem_total_kb"] = int(fh.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def versions(names: Iterable[str]) -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def redis_version(url: str) -> str | None:
    import redis

    try:
        client = redis.Redis.from_url(url)
        v = client.info("server").get("redis_version")
        client.close()
        return str(v)
    except Exception:  # noqa: BLE001
        return None


def fmt_us(value: float | None) -> str:
    if value is None or value != value:
        return "-"
    if value >= 1000:
        return f"{value / 1000:.2f} ms"
    return f"{value:.1f} µs"


_PRELOAD = ["redis", "mistral_cache", "benchmarks.common", "benchmarks.stampede", "benchmarks.scaling"]


def mp_context() -> Any:
    """A multiprocessing context whose children start fast and clean.

    ``forkserver`` forks children from a server process that has no threads (the
    benchmark's own process has a simulator, Redis listeners...), preloaded with the
    libraries so a child does not pay the imports again; ``spawn`` where unavailable.
    """
    import multiprocessing as mp

    try:
        ctx = mp.get_context("forkserver")
    except ValueError:
        return mp.get_context("spawn")
    ctx.set_forkserver_preload(_PRELOAD + [m for m in ("dogpile.cache", "cashews", "aiocache") if have(m)])
    return ctx
