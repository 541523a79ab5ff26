"""The ``mistral-cache`` command.

Each subcommand lives behind a ``register(subparsers)`` function that adds its
parser and sets ``func`` (called with the parsed namespace, returns an exit code).
Other modules add theirs by appending to :data:`REGISTRARS` (or by exposing a
``register`` function in a module named in :data:`COMMAND_MODULES`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

COMMAND_MODULES: list[str] = ["mistral_cache.cli_admin", "mistral_cache.ops"]
"""Optional modules with a ``register(subparsers)`` function (skipped if absent)."""

SCENARIOS = ["latency", "hitrate", "stampede", "scaling", "adaptive"]
#: run only when named with --scenario: the freshness sweeps take about a minute with
#: --quick and about 25 minutes without (two dozen policies, each a simulated run)
SLOW_SCENARIOS = {"adaptive"}


def register_bench(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "bench",
        help="run the bundled benchmarks (latency, hit rate, stampede, scaling)",
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
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
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


REGISTRARS: list[Registrar] = [register_bench]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mistral-cache", description="Two-tier caching toolkit for Mistral.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for registrar in REGISTRARS:
        registrar(subparsers)
    for name in COMMAND_MODULES:
        try:
            module: Any = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    code: int = func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
