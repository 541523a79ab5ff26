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
from pathlib import Path

from .cli import Launcher
from .keystone_server import DEFAULT_PORT, DEFAULT_TIMEOUT, SERVER, start, status, stop
from .pins import KEYSTONE

__all__ = ["build_parser", "main"]


def _start(args: argparse.Namespace) -> str:
    password_file = Path(args.password_file) if args.password_file else None
    return start(args.port, Path(args.workdir) if args.workdir else None, args.timeout, password_file)


def _start_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    p.add_argument("--password-file", help="the admin password (default <workdir>/admin-password, created with a random one when missing)")


LAUNCHER = Launcher(SERVER, __doc__, KEYSTONE, DEFAULT_PORT, start=_start, start_options=_start_options, stop=stop, status=status,
                    start_help="bootstrap a fresh Keystone and serve it, wait until it answers", stop_help="stop the server")
build_parser, main = LAUNCHER.build_parser, LAUNCHER.main  # main: the scripts/keystone-server command line; its exit code

if __name__ == "__main__":
    sys.exit(main())
