"""Start, stop and check a real Mistral 23 server: launch and readiness.

Back ends: ``postgres`` (PostgreSQL + RabbitMQ, a fresh database per port,
alembic migrations, ``mistral-server`` with one process per component) and
``sqlite`` (no service: ``scripts/mistral_single_process.py`` runs every
component in ONE process over the in-memory ``fake:/`` transport). ``auto``
takes postgres when both 5432 and 5672 answer and the database can be created.

With ``StartOptions.plugin`` this project is installed into Mistral's virtualenv
(:func:`.install.install_project`) and the engine's notifier runs its publisher
plugin, which reads the 0600 ``mistral-cache.conf`` of the workdir.

A server is "ready" only when its API answers AND every back-end component
has logged that it consumes its RPC topic: with RabbitMQ the API may be up
before the engine's queue exists, and a call published then is lost.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import (
    HOST,
    REPO,
    LaunchError,
    Server,
    http_request,
    http_status,
    open_url,
    pid_alive,
    port_open,
    run_logged,
    spawn_logged,
    stop_process,
    tail,
    wait_ready,
)
from .config import (
    PLUGIN_NAMESPACE,
    PLUGIN_TYPE,
    PUBLISHER_CONFIG_VARIABLE,
    KeystoneAuth,
    Notify,
    Plugin,
    write_mistral_config,
    write_publisher_config,
)
from .install import ensure_installed, install_project
from .pins import MISTRAL
from .postgres import PgParams, create_database, database_url, drop_database

__all__ = ["DEFAULT_PORT", "DEFAULT_TIMEOUT", "PG_COMPONENTS", "PROG", "SERVER", "StartOptions", "default_workdir", "start", "status", "stop"]

PROG = "mistral-server"
DEFAULT_PORT = 8989
DEFAULT_TIMEOUT = 180.0
SERVER = Server(PROG, "run", "mistral.log")
default_workdir = SERVER.default_workdir
SINGLE_PROCESS_LAUNCHER = REPO / "scripts" / "mistral_single_process.py"
DEFAULT_TRANSPORT_URL = "rabbit://guest:guest@127.0.0.1:5672/"

# Not "all": Mistral 23's event engine polls its queue with get_nowait() in a busy
# loop under the threading backend and burns a whole CPU, slowing every other
# component down. Event triggers are the only feature that needs it (--with-event-engine).
PG_COMPONENTS = ["api", "engine", "executor", "notifier", "periodic"]


@dataclass(frozen=True)
class StartOptions:
    """What ``start`` was asked for (the CLI's options, typed)."""

    port: int = DEFAULT_PORT
    workdir: Path | None = None
    backend: str = "auto"  # auto, postgres or sqlite
    timeout: float = DEFAULT_TIMEOUT
    keystone: KeystoneAuth | None = None
    notify: Notify | None = None
    plugin: Plugin | None = None  # this project's publisher plugin, installed into Mistral's venv
    with_event_engine: bool = False


def _pid_path(workdir: Path) -> Path:
    return workdir / "mistral.pid"


def _read_pid(workdir: Path) -> int | None:
    try:
        return int(_pid_path(workdir).read_text().strip())
    except (OSError, ValueError):
        return None


def _keystone_token(keystone: KeystoneAuth, timeout: float = 10.0) -> str | None:
    """An admin token from Keystone (the password in the request body, never in argv or a log)."""
    identity = {"name": "admin", "domain": {"name": "Default"}, "password": keystone.password}
    body = {
        "auth": {
            "identity": {"methods": ["password"], "password": {"user": identity}},
            "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}},
        }
    }
    try:
        req = http_request(
            keystone.url.rstrip("/") + "/auth/tokens", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        with open_url(req, timeout) as resp:
            token = resp.headers.get("X-Subject-Token")
            return str(token) if token else None
    except (OSError, ValueError) as e:  # urllib's errors are OSErrors
        SERVER.log(f"no admin token from Keystone: {getattr(e, 'code', e)}")
        return None


def _api_status(url: str, keystone: KeystoneAuth | None, timeout: float = 5.0) -> int | None:
    """GET url as the server's clients would: with an admin token when auth is on."""
    if not keystone:
        return http_status(url, timeout=timeout)
    token = _keystone_token(keystone)
    if not token:
        return None
    return http_status(url, timeout=timeout, headers={"X-Auth-Token": token})


def _log_has_all(logfile: Path, markers: list[str]) -> bool:
    try:
        text = logfile.read_text(errors="replace")
    except OSError:
        return False
    return all(m in text for m in markers)


def _choose_backend(requested: str) -> str:
    if requested != "auto":
        return requested
    pg = PgParams.from_env()
    return "postgres" if port_open(pg.port, pg.host) and port_open(5672) else "sqlite"


def _prepare_postgres(opts: StartOptions, workdir: Path, state: dict[str, Any], conf: Path, logfile: Path) -> list[str] | None:
    """Database, config and migrations for the postgres back end; the server's
    command line, or None when ``auto`` should fall back to sqlite."""
    params = PgParams.from_env()
    db = f"mistral_cache_test_{opts.port}"
    python = MISTRAL.bin("python")
    ok, out = create_database(python, db, params)
    if not ok:
        if opts.backend == "auto":
            SERVER.log("PostgreSQL answers but the database could not be created, using sqlite:\n" + out)
            return None
        raise LaunchError(f"could not create database {db}:\n{out}")
    transport = os.environ.get("MISTRAL_TRANSPORT_URL", DEFAULT_TRANSPORT_URL)
    write_mistral_config(
        conf, opts.port, "postgres", workdir, database_url(params, db), transport, opts.keystone, opts.notify, opts.plugin
    )
    state.update(backend="postgres", database=db, pg=params.public())
    SERVER.save_state(workdir, state)
    manage = str(MISTRAL.bin("mistral-db-manage"))
    for step in (["upgrade", "head"], ["populate"]):
        t = time.monotonic()
        if run_logged([manage, "--config-file", str(conf), *step], logfile, workdir) != 0:
            drop_database(python, db, params)
            raise LaunchError("mistral-db-manage {} failed:\n{}".format(" ".join(step), tail(logfile)))
        SERVER.log("mistral-db-manage {}: {:.1f}s".format(" ".join(step), time.monotonic() - t))
    components = PG_COMPONENTS + (["event-engine"] if opts.with_event_engine else [])
    return [str(MISTRAL.bin("mistral-server")), "--config-file", str(conf), "--server", ",".join(components)]


def _prepare_sqlite(opts: StartOptions, workdir: Path, state: dict[str, Any], conf: Path) -> list[str]:
    for leftover in workdir.glob("mistral.sqlite*"):
        leftover.unlink()  # a fresh database for each start
    database = workdir / "mistral.sqlite"
    write_mistral_config(conf, opts.port, "sqlite", workdir, f"sqlite:///{database}", "fake:/", opts.keystone, opts.notify, opts.plugin)
    state.update(backend="sqlite", database=str(database))
    SERVER.save_state(workdir, state)
    return [str(MISTRAL.bin("python")), str(SINGLE_PROCESS_LAUNCHER), "--config-file", str(conf)]


def start(opts: StartOptions) -> str:
    """Start a server (installing Mistral first if needed), block until it is
    ready, return its API URL. A server already answering in the workdir is reused."""
    port = opts.port
    # Owner-only: the config, the SQLite database (execution params hold the
    # receiver's token) and the plugin's settings live there.
    workdir = SERVER.open_workdir(opts.workdir, port)
    url = f"http://{HOST}:{port}/v2"
    keystone = opts.keystone
    hint = f"run `{sys.argv[0]} stop --workdir {workdir}` first"
    if SERVER.reuse(workdir, port, _read_pid(workdir), lambda: _api_status(url + "/workflows", keystone) == 200, hint):
        return url
    ensure_installed(MISTRAL, PROG)
    if opts.plugin:
        install_project(MISTRAL, PROG, PLUGIN_NAMESPACE, PLUGIN_TYPE)

    t0 = time.monotonic()
    logfile, conf = workdir / SERVER.log_name, workdir / "mistral.conf"
    logfile.write_text("")  # a fresh log for each start
    state: dict[str, Any] = {
        "port": port,
        "url": url,
        "workdir": str(workdir),
        "venv": str(MISTRAL.venv),
        "auth": bool(keystone),
        "keystone_url": keystone.url if keystone else None,
        "notify_plugin": {"namespace": opts.plugin.namespace} if opts.plugin else None,
    }
    env = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning")
    env.pop(PUBLISHER_CONFIG_VARIABLE, None)
    if opts.plugin:
        publisher_conf = workdir / "mistral-cache.conf"
        try:
            write_publisher_config(publisher_conf, opts.plugin, url)
        except ValueError as e:
            raise LaunchError(f"the publisher plugin's settings: {e}") from None
        env[PUBLISHER_CONFIG_VARIABLE] = str(publisher_conf)
    backend = _choose_backend(opts.backend)
    cmd = _prepare_postgres(opts, workdir, state, conf, logfile) if backend == "postgres" else None
    if cmd is None:
        backend = "sqlite"
        cmd = _prepare_sqlite(opts, workdir, state, conf)

    SERVER.log(f"starting Mistral ({backend} back end) on port {port}, log {logfile}")
    proc = spawn_logged(cmd, logfile, workdir, env)
    _pid_path(workdir).write_text(f"{proc.pid}\n")
    state["pid"] = proc.pid
    SERVER.save_state(workdir, state)

    markers = ["Engine server started.", "Periodic server started."]
    if backend == "postgres":
        markers += ["Executor server started.", "Notification server started."]
    if backend == "sqlite" or opts.with_event_engine:
        markers.append("Event engine server started.")

    def ready() -> bool:
        return _api_status(url + "/workflows", keystone, timeout=2.0) == 200 and _log_has_all(logfile, markers)

    if not wait_ready(proc, ready, opts.timeout, 0.25):
        if proc.returncode is not None:
            why = f"the server exited with code {proc.returncode}"
        else:
            missing = [m for m in markers if not _log_has_all(logfile, [m])]
            why = (
                f"not ready in {opts.timeout:.0f}s: GET {url}/workflows -> {_api_status(url + '/workflows', keystone)}, "
                f"components not started: {', '.join(missing) or 'none'}"
            )
        SERVER.fail_start(workdir, why, lambda: stop(workdir, quiet=True))
    SERVER.started(workdir, state, t0, f"Mistral ({backend})")
    return url


def stop(workdir: Path, quiet: bool = False) -> bool:
    """Stop the server of ``workdir`` and drop its database; whether one was running."""
    state = SERVER.load_state(workdir)
    was_running = stop_process(_read_pid(workdir) or state.get("pid"), 15.0, on_slow=lambda: SERVER.log("server did not stop in 15s, killing it"))
    if state.get("backend") == "postgres" and state.get("database"):
        ok, out = drop_database(MISTRAL.bin("python"), state["database"], PgParams.from_state(state.get("pg")))
        if not ok and not quiet:
            SERVER.log(f"could not drop database {state['database']}: {out}")
    SERVER.forget(workdir, _pid_path(workdir))
    return was_running


def status(workdir: Path, port: int) -> int:
    """Print one status line on stdout; 0 running and answering, 1 not answering, 3 stopped."""
    state = SERVER.load_state(workdir)
    pid = _read_pid(workdir)
    if not pid or not pid_alive(pid):
        print(f"stopped (workdir {workdir})")
        return 3
    url = state.get("url") or f"http://{HOST}:{port}/v2"
    code = http_status(url + "/workflows")
    if state.get("auth") and code == 401:
        code = 200  # auth on: an unauthenticated request is refused, as it should be
    answer = "answers 200" if code == 200 else f"not answering ({code})"
    print(f"running: pid {pid}, backend {state.get('backend', '?')}, {url}, API {answer}, workdir {workdir}")
    return 0 if code == 200 else 1
