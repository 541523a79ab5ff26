"""``mistral-cache bench``: the bundled benchmarks (``benchmarks.runner``), side by
side with cachetools, dogpile.cache, cashews and aiocache.

:data:`SCENARIOS` is the one table of scenarios: each names a module of
``benchmarks/``, run in this order.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["SCENARIOS", "SCENARIO_OBJECTS", "SLOW_SCENARIOS", "register"]

SCENARIOS = ["latency", "hitrate", "events", "stampede", "scaling", "adaptive"]
#: Scenarios that are not a module of ``benchmarks/`` of their name: ``module:attribute``.
SCENARIO_OBJECTS = {"events": "benchmarks.freshness_mistral:EventsScenario"}
#: run only when named with --scenario: the freshness sweeps take about a minute with
#: --quick and about 25 minutes without (two dozen policies, each a simulated run)
SLOW_SCENARIOS = {"adaptive"}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "bench",
        help="run the bundled benchmarks (latency, hit rate, events, stampede, scaling)",
        description="Run the bundled benchmarks side by side with cachetools, dogpile.cache, "
        "cashews and aiocache; write results.json, PNG plots and report.md.",
    )
    p.add_argument("--quick", action="store_true", help="small sizes: finishes in under 2 minutes")
    p.add_argument("--scenario", action="append", choices=SCENARIOS, metavar="NAME",
                   help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)}")
    p.add_argument("--redis-url", default=None,
                   help="Redis to use (default: start an embedded redis-server on a free port)")
    p.add_argument("--mistral-url", default=None,
                   help="Mistral v2 API to use (default: serve a simulated one on loopback)")
    p.add_argument("--out", default="bench-results", help="output directory (default: bench-results/)")
    p.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> int:
    try:
        runner = importlib.import_module("benchmarks.runner")
    except ImportError as exc:
        print(f"mistral-cache bench: the benchmarks package is not importable ({exc}); "
              "install the project with: pip install 'mistral-cache[bench]'", file=sys.stderr)
        return 2
    scenarios = args.scenario or [s for s in SCENARIOS if s not in SLOW_SCENARIOS]
    try:
        runner.run(quick=args.quick, scenarios=scenarios, redis_url=args.redis_url,
                   mistral_url=args.mistral_url, out=args.out)
    except RuntimeError as exc:  # e.g. no redis-server binary available
        print(f"mistral-cache bench: {exc}", file=sys.stderr)
        return 2
    return 0
