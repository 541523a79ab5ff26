"""Install and run a real OpenStack Mistral server (23.x) for the integration tests.

    python -m mistral_cache.testing.openstack.mistral_cli COMMAND ...
    (or scripts/mistral-server COMMAND ..., the same thing)

    install [--force] [--verbose]
    start [--port 8989] [--backend auto|postgres|sqlite]
          [--workdir DIR] [--timeout 180]
          [--keystone-url URL --keystone-password-file F]
          [--notify-url URL --notify-token-file F]
          [--notify-plugin REDIS_URL [--notify-plugin-password-file F]
           [--notify-plugin-namespace NS]]
    status [--port 8989] [--workdir DIR]
    stop [--port 8989] [--workdir DIR]

`start` prints the API URL (http://127.0.0.1:PORT/v2) as the last line of
stdout; everything else goes to stderr.

Back ends:
  postgres  PostgreSQL + RabbitMQ, a fresh database per port, alembic
            migrations, `mistral-server` with one process per component
            (all but the event engine, see PG_COMPONENTS).
  sqlite    no service needed: scripts/mistral_single_process.py runs API,
            engine, executor and notifier in ONE process over the in-memory
            `fake:/` transport, with an SQLite file in the workdir.
  auto      postgres when both 5432 and 5672 answer on 127.0.0.1 (and the
            database can be created), else sqlite.

Authentication: with --keystone-url (a Keystone v3 URL, e.g. from
scripts/keystone-server) the server runs with `[pecan] auth_enable = true` and
a `[keystone_authtoken]` section that logs in as that Keystone's `admin`
(project `admin`, domain Default), whose password is read from
--keystone-password-file: it goes into the 0600 config file and the readiness
check's request body, never onto a command line. Without it, auth is off and
every request belongs to "<default-project>". The receiver's bearer token
(--notify-token-file) and the PostgreSQL password likewise travel in files,
environments and stdin only.

Publisher plugin: with --notify-plugin REDIS_URL this project (no extras, from
the source tree, within Mistral's constraints) is installed into Mistral's
virtualenv, reinstalled only when its files change, and the engine runs its
publisher (`[notifier] type = local`, `notify = [{"type": "mistral_cache"}]`),
which invalidates straight into that Redis under --notify-plugin-namespace
(default "default", as mistral_cache.Cache). Its settings go to the 0600
<workdir>/mistral-cache.conf named by $MISTRAL_CACHE_PUBLISHER_CONFIG in the
server's environment; a Redis password comes from --notify-plugin-password-file
(the URL on the command line must not carry one). It combines with --notify-url.

Environment:
  MISTRAL_VENV            virtualenv for Mistral (default <repo>/.mistral/venv)
  MISTRAL_PYTHON          python that creates it (default: this python3)
  MISTRAL_PG_HOST/_PORT/_USER/_PASSWORD   PostgreSQL (127.0.0.1/5432/postgres)
  MISTRAL_TRANSPORT_URL   RabbitMQ (rabbit://guest:guest@127.0.0.1:5672/)
"""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from pathlib import Path

from .cli import Launcher
from .common import LaunchError, read_secret
from .config import KeystoneAuth, Notify, Plugin
from .mistral_server import DEFAULT_PORT, DEFAULT_TIMEOUT, SERVER, StartOptions, start, status, stop
from .pins import MISTRAL

__all__ = ["build_parser", "main"]


def _secret(path: str, option: str, what: str) -> str:
    """The secret in the file given as ``option``; the error names the option only, never
    the file's content (the token and the Redis password are read alike)."""
    try:
        secret = read_secret(path)
    except (OSError, ValueError):
        raise LaunchError(f"cannot read {what} from {option}") from None
    if not secret:
        raise LaunchError(f"{option} is empty")
    return secret


def _keystone(args: argparse.Namespace) -> KeystoneAuth | None:
    if not args.keystone_url:
        return None
    if not args.keystone_password_file:
        raise LaunchError("--keystone-url needs --keystone-password-file")
    try:
        password = read_secret(args.keystone_password_file)
    except (OSError, ValueError) as e:
        raise LaunchError(f"cannot read the Keystone password file {args.keystone_password_file}: {e}") from None
    return KeystoneAuth(args.keystone_url.rstrip("/"), password, args.token_cache_time)


def _notify(args: argparse.Namespace) -> Notify | None:
    if not args.notify_url:
        return None
    if not args.notify_token_file:
        raise LaunchError("--notify-url needs --notify-token-file (the bearer token never goes on a command line)")
    return Notify(args.notify_url, _secret(args.notify_token_file, "--notify-token-file", "a token"))


def _plugin(args: argparse.Namespace) -> Plugin | None:
    if not args.notify_plugin:
        if args.notify_plugin_password_file or args.notify_plugin_namespace:
            raise LaunchError("--notify-plugin-password-file and --notify-plugin-namespace need --notify-plugin")
        return None
    url = args.notify_plugin
    try:
        parts = urllib.parse.urlsplit(url)
        has_password = parts.password is not None or "password=" in parts.query
    except ValueError:
        raise LaunchError("--notify-plugin is not a URL") from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise LaunchError("--notify-plugin takes a redis://, rediss:// or unix:// URL")
    if has_password:
        # Refused without echoing it: the URL was on a command line already.
        raise LaunchError("the --notify-plugin URL must not carry a password: use --notify-plugin-password-file")
    password = None
    if args.notify_plugin_password_file:
        password = _secret(args.notify_plugin_password_file, "--notify-plugin-password-file", "a password")
    return Plugin(url, args.notify_plugin_namespace or "default", password)


def _start(args: argparse.Namespace) -> str:
    opts = StartOptions(
        port=args.port,
        workdir=Path(args.workdir) if args.workdir else None,
        backend=args.backend,
        timeout=args.timeout,
        keystone=_keystone(args),
        notify=_notify(args),
        plugin=_plugin(args),
        with_event_engine=args.with_event_engine,
    )
    return start(opts)


def _start_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=["auto", "postgres", "sqlite"], default="auto")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for the API (default %(default)s)")
    p.add_argument("--keystone-url", help="turn auth on against this Keystone v3 URL")
    p.add_argument("--keystone-password-file", help="file holding the Keystone admin password (first line)")
    p.add_argument(
        "--token-cache-time", type=int, default=None, help="[keystone_authtoken] token_cache_time (default: keystonemiddleware's 300 s)"
    )
    p.add_argument(
        "--notify-url",
        help="post every state change to this events receiver ([notifier] type = local, "
        "notify = webhook, [action_std_http] denied_cidrs emptied)",
    )
    p.add_argument("--notify-token-file", help="file holding the receiver's bearer token (first line)")
    p.add_argument(
        "--notify-plugin",
        metavar="REDIS_URL",
        help="install this project into Mistral's virtualenv and run its publisher plugin on every state change "
        "([notifier] type = local, notify = mistral_cache), invalidating in this Redis (no password in it)",
    )
    p.add_argument("--notify-plugin-password-file", help="file holding that Redis's password (first line)")
    p.add_argument("--notify-plugin-namespace", help="the cache namespace the plugin invalidates (default: default)")
    p.add_argument("--with-event-engine", action="store_true", help="postgres: also run the event engine (spins a CPU)")


LAUNCHER = Launcher(SERVER, __doc__, MISTRAL, DEFAULT_PORT, start=_start, start_options=_start_options, stop=stop, status=status,
                    start_help="start a server, wait until it answers", stop_help="stop the server, drop its database")
build_parser, main = LAUNCHER.build_parser, LAUNCHER.main  # main: the scripts/mistral-server command line; its exit code

if __name__ == "__main__":
    sys.exit(main())
