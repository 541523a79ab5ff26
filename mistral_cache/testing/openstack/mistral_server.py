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
    StartFailed,
    http_request,
    http_status,
    kill_group,
    log,
    open_url,
    pid_alive,
    port_free,
    port_open,
    read_json,
    run_logged,
    spawn_logged,
    tail,
    write_json,
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
from .install import install, install_project, installed_ok
from .pins import MISTRAL
from .postgres import PgParams, create_database, database_url, drop_database

__all__ = ["DEFAULT_PORT", "DEFAULT_TIMEOUT", "PG_COMPONENTS", "PROG", "StartOptions", "default_workdir", "start", "status", "stop"]

PROG = "mistral-server"
DEFAULT_PORT = 8989
DEFAULT_TIMEOUT = 180.0
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


def _log(msg: str) -> None:
    log(PROG, msg)


def default_workdir(port: int) -> Path:
    return REPO / ".mistral" / f"run-{port}"


def _state_path(workdir: Path) -> Path:
    return workdir / "state.json"


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
        _log(f"no admin token from Keystone: {getattr(e, 'code', e)}")
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
            _log("PostgreSQL answers but the database could not be created, using sqlite:\n" + out)
            return None
        raise LaunchError(f"could not create database {db}:\n{out}")
    transport = os.environ.get("MISTRAL_TRANSPORT_URL", DEFAULT_TRANSPORT_URL)
    write_mistral_config(
        conf, opts.port, "postgres", workdir, database_url(params, db), transport, opts.keystone, opts.notify, opts.plugin
    )
    state.update(backend="postgres", database=db, pg=params.public())
    write_json(_state_path(workdir), state)
    manage = str(MISTRAL.bin("mistral-db-manage"))
    for step in (["upgrade", "head"], ["populate"]):
        t = time.monotonic()
        if run_logged([manage, "--config-file", str(conf), *step], logfile, workdir) != 0:
            drop_database(python, db, params)
            raise LaunchError("mistral-db-manage {} failed:\n{}".format(" ".join(step), tail(logfile)))
        _log("mistral-db-manage {}: {:.1f}s".format(" ".join(step), time.monotonic() - t))
    components = PG_COMPONENTS + (["event-engine"] if opts.with_event_engine else [])
    return [str(MISTRAL.bin("mistral-server")), "--config-file", str(conf), "--server", ",".join(components)]


def _prepare_sqlite(opts: StartOptions, workdir: Path, state: dict[str, Any], conf: Path) -> list[str]:
    for leftover in workdir.glob("mistral.sqlite*"):
        leftover.unlink()  # a fresh database for each start
    database = workdir / "mistral.sqlite"
    write_mistral_config(conf, opts.port, "sqlite", workdir, f"sqlite:///{database}", "fake:/", opts.keystone, opts.notify, opts.plugin)
    state.update(backend="sqlite", database=str(database))
    write_json(_state_path(workdir), state)
    return [str(MISTRAL.bin("python")), str(SINGLE_PROCESS_LAUNCHER), "--config-file", str(conf)]


def start(opts: StartOptions) -> str:
    """Start a server (installing Mistral first if needed), block until it is
    ready, return its API URL. A server already answering in the workdir is reused."""
    port = opts.port
    workdir = (opts.workdir or default_workdir(port)).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    # Owner-only, as Keystone's: the config, the SQLite database (execution params hold
    # the receiver's token) and the plugin's settings live here.
    os.chmod(workdir, 0o700)
    url = f"http://{HOST}:{port}/v2"
    keystone = opts.keystone
    pid = _read_pid(workdir)
    if pid and pid_alive(pid):
        if _api_status(url + "/workflows", keystone) == 200:
            _log(f"already running (pid {pid}) in {workdir}")
            return url
        raise LaunchError(f"a server (pid {pid}) from {workdir} is running but not answering; run `{sys.argv[0]} stop --workdir {workdir}` first")
    if not port_free(port):
        raise LaunchError(f"port {port} on {HOST} is in use")
    if not installed_ok(MISTRAL, deep=False):
        _log(f"Mistral is not installed in {MISTRAL.venv}: installing")
        install(MISTRAL, PROG)
    if opts.plugin:
        install_project(MISTRAL, PROG, PLUGIN_NAMESPACE, PLUGIN_TYPE)

    t0 = time.monotonic()
    logfile, conf = workdir / "mistral.log", workdir / "mistral.conf"
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

    _log(f"starting Mistral ({backend} back end) on port {port}, log {logfile}")
    proc = spawn_logged(cmd, logfile, workdir, env)
    _pid_path(workdir).write_text(f"{proc.pid}\n")
    state["pid"] = proc.pid
    write_json(_state_path(workdir), state)

    markers = ["Engine server started.", "Periodic server started."]
    if backend == "postgres":
        markers += ["Executor server started.", "Notification server started."]
    if backend == "sqlite" or opts.with_event_engine:
        markers.append("Event engine server started.")
    deadline = time.monotonic() + opts.timeout
    while not (_api_status(url + "/workflows", keystone, timeout=2.0) == 200 and _log_has_all(logfile, markers)):
        if proc.poll() is not None:
            _fail_start(workdir, f"the server exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            missing = [m for m in markers if not _log_has_all(logfile, [m])]
            _fail_start(
                workdir,
                f"not ready in {opts.timeout:.0f}s: GET {url}/workflows -> {_api_status(url + '/workflows', keystone)}, "
                f"components not started: {', '.join(missing) or 'none'}",
            )
        time.sleep(0.25)
    state["startup_seconds"] = round(time.monotonic() - t0, 1)
    write_json(_state_path(workdir), state)
    _log(f"Mistral ({backend}) ready in {time.monotonic() - t0:.1f}s, pid {proc.pid}")
    return url


def _fail_start(workdir: Path, why: str) -> None:
    logfile = workdir / "mistral.log"
    _log(f"start failed: {why}\n----- {logfile} (tail) -----\n{tail(logfile)}\n-----")
    stop(workdir, quiet=True)
    raise StartFailed(why)


def stop(workdir: Path, quiet: bool = False) -> bool:
    """Stop the server of ``workdir`` and drop its database; whether one was running."""
    state = read_json(_state_path(workdir)) or {}
    pid = _read_pid(workdir) or state.get("pid")
    was_running = bool(pid and pid_alive(pid))
    if pid:
        kill_group(pid, 15.0, on_slow=lambda: _log("server did not stop in 15s, killing it"))
    if state.get("backend") == "postgres" and state.get("database"):
        ok, out = drop_database(MISTRAL.bin("python"), state["database"], PgParams.from_state(state.get("pg")))
        if not ok and not quiet:
            _log(f"could not drop database {state['database']}: {out}")
    for p in (_pid_path(workdir), _state_path(workdir)):
        try:
            p.unlink()
        except OSError:
            pass
    return was_running


def status(workdir: Path, port: int) -> int:
    """Print one status line on stdout; 0 running and answering, 1 not answering, 3 stopped."""
    state = read_json(_state_path(workdir)) or {}
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
