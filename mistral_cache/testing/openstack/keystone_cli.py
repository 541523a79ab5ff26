"""Install and run a real OpenStack Keystone (30.x) for the authenticated integration tests.

    python -m mistral_cache.testing.openstack.keystone_cli COMMAND ...
    (or scripts/keystone-server COMMAND ..., the same thing)

    install [--force] [--verbose]
    start [--port 5000] [--workdir DIR] [--timeout 120] [--password-file FILE]
    status|stop [--port 5000] [--workdir DIR]

`start` prints the identity URL (http://127.0.0.1:PORT/v3) as the last line of
stdout; everything else goes to stderr. Keystone runs on SQLite, with fernet
tokens and credential keys under the workdir, bootstrapped with an `admin`
user (project `admin`, role `admin`, region RegionOne), and is served by
gunicorn from a small WSGI module written into the workdir, which resets
sys.argv first (oslo.config would parse gunicorn's arguments).

The admin password never appears on a command line: it is read from
--password-file (default <workdir>/admin-password, created 0600 with a random
password when missing) and handed to `keystone-manage bootstrap` in its
environment (OS_BOOTSTRAP_PASSWORD). The workdir is created 0700.

Environment:
  KEYSTONE_VENV    virtualenv for Keystone (default <repo>/.mistral/keystone-venv)
  KEYSTONE_PYTHON  python that creates it (default: this python3)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .common import LaunchError, StartFailed, log
from .install import install
from .keystone_server import DEFAULT_PORT, DEFAULT_TIMEOUT, PROG, default_workdir, start, status, stop
from .pins import KEYSTONE

__all__ = ["build_parser", "main"]


def _workdir(args: argparse.Namespace) -> Path:
    return Path(args.workdir or default_workdir(args.port)).resolve()


def _cmd_install(args: argparse.Namespace) -> int:
    install(KEYSTONE, PROG, force=args.force, verbose=args.verbose)
    return 0


def _cmd_start(args: argparse.Namespace) -> int:
    password_file = Path(args.password_file) if args.password_file else None
    print(start(args.port, Path(args.workdir) if args.workdir else None, args.timeout, password_file), flush=True)
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    workdir = _workdir(args)
    log(PROG, f"stopped the server in {workdir}" if stop(workdir) else f"no server running in {workdir}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    return status(_workdir(args), args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("install", help="create the Keystone virtualenv (idempotent)")
    p.add_argument("--force", action="store_true", help="reinstall from scratch")
    p.add_argument("--verbose", action="store_true", help="show pip's output")
    p.set_defaults(func=_cmd_install)
    for name, func, text in (
        ("start", _cmd_start, "bootstrap a fresh Keystone and serve it, wait until it answers"),
        ("stop", _cmd_stop, "stop the server"),
        ("status", _cmd_status, "is the server running and answering"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--port", type=int, default=DEFAULT_PORT)
        p.add_argument("--workdir", help="default <repo>/.mistral/keystone-run-PORT")
        p.set_defaults(func=func)
        if name == "start":
            p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
            p.add_argument("--password-file", help="the admin password (default <workdir>/admin-password, created with a random one when missing)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``scripts/keystone-server`` command line; its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        code: int = args.func(args)
    except StartFailed:
        return 1  # already explained, with the log's tail
    except LaunchError as e:
        log(PROG, f"error: {e}")
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
