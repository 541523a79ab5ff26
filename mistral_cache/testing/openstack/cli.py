"""The command line both launchers share (``scripts/mistral-server``,
``scripts/keystone-server``): ``install``, ``start``, ``stop`` and ``status``
with the same options, messages and exit codes. Each launcher adds its own
``start`` options and says how to start (:class:`Launcher`).

Standard library only, as :mod:`.common`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .common import LaunchError, Server, StartFailed
from .install import VenvSpec, install

__all__ = ["Launcher"]


@dataclass(frozen=True)
class Launcher:
    """What sets one launcher's command line apart; :meth:`main` is the rest."""

    server: Server  # the message prefix and the default workdir
    doc: str | None  # the launcher module's docstring: the description (first paragraph) and the epilog
    spec: VenvSpec  # what ``install`` installs
    default_port: int
    start_help: str
    stop_help: str
    start_options: Callable[[argparse.ArgumentParser], None]  # the options ``start`` takes after --port and --workdir
    start: Callable[[argparse.Namespace], str]  # start a server; the URL printed on stdout
    stop: Callable[[Path], bool]  # whether a server was running
    status: Callable[[Path, int], int]  # prints the status line; the exit code

    def build_parser(self) -> argparse.ArgumentParser:
        doc = self.doc or ""
        parser = argparse.ArgumentParser(
            prog=self.server.prog, description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=self.doc
        )
        sub = parser.add_subparsers(dest="command")
        p = sub.add_parser("install", help=f"create the {self.spec.name} virtualenv (idempotent)")
        p.add_argument("--force", action="store_true", help="reinstall from scratch")
        p.add_argument("--verbose", action="store_true", help="show pip's output")
        p.set_defaults(func=self._install)
        for name, func, text in (
            ("start", self._start, self.start_help),
            ("stop", self._stop, self.stop_help),
            ("status", self._status, "is the server running and answering"),
        ):
            p = sub.add_parser(name, help=text)
            p.add_argument("--port", type=int, default=self.default_port)
            p.add_argument("--workdir", help=f"default <repo>/.mistral/{self.server.run_dir}-PORT")
            p.set_defaults(func=func)
            if name == "start":
                self.start_options(p)
        return parser

    def main(self, argv: Sequence[str] | None = None) -> int:
        """Parse ``argv`` and run the command; its exit code (2: no command, 1: it failed)."""
        parser = self.build_parser()
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return 2
        try:
            code: int = args.func(args)
        except StartFailed:
            return 1  # already explained, with the log's tail
        except LaunchError as e:
            self.server.log(f"error: {e}")
            return 1
        return code

    def _workdir(self, args: argparse.Namespace) -> Path:
        return Path(args.workdir or self.server.default_workdir(args.port)).resolve()

    def _install(self, args: argparse.Namespace) -> int:
        install(self.spec, self.server.prog, force=args.force, verbose=args.verbose)
        return 0

    def _start(self, args: argparse.Namespace) -> int:
        print(self.start(args), flush=True)
        return 0

    def _stop(self, args: argparse.Namespace) -> int:
        workdir = self._workdir(args)
        self.server.log(f"stopped the server in {workdir}" if self.stop(workdir) else f"no server running in {workdir}")
        return 0

    def _status(self, args: argparse.Namespace) -> int:
        return self.status(self._workdir(args), args.port)
