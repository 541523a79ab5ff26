"""The ``mistral-cache`` command: ``bench``, ``stats``, ``invalidate``, ``doctor``.

Each subcommand lives in a module of this package behind a
``register(subparsers)`` function that adds its parser and sets ``func`` (called
with the parsed namespace, returns an exit code). Another command is added by
appending its ``register`` to :data:`REGISTRARS`.

The Redis commands take ``--redis-url`` (default ``$MISTRAL_CACHE_REDIS_URL``) and
``--json``. Exit codes: 0 fine, 1 warnings (doctor) or nothing found (stats), 2 errors.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from . import bench, doctor, events, invalidate, stats

__all__ = ["REGISTRARS", "Registrar", "build_parser", "main"]

Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

REGISTRARS: list[Registrar] = [bench.register, stats.register, invalidate.register, doctor.register, events.register]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mistral-cache", description="Two-tier caching toolkit for Mistral.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for registrar in REGISTRARS:
        registrar(subparsers)
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
