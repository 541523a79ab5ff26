"""Start, stop and check a real Keystone 30 for the authenticated tests.

Keystone runs on SQLite with fernet tokens and credential keys under the
workdir (0700), bootstrapped with an ``admin`` user (project ``admin``, role
``admin``, region RegionOne), and is served by gunicorn. Every start is a fresh
database and fresh keys.

The admin password never appears on a command line or in a log: it is read
from a file (default ``<workdir>/admin-password``, created 0600 with a random
password when missing) and handed to ``keystone-manage bootstrap`` alone, in
its environment (``OS_BOOTSTRAP_PASSWORD``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from pathlib import Path

from .common import (
    HOST,
    REPO,
    LaunchError,
    StartFailed,
    http_status,
    kill_group,
    log,
    pid_alive,
    port_free,
    read_json,
    read_secret,
    run_logged,
    spawn_logged,
    tail,
    write_json,
    write_private,
)
from .config import KEY_REPOSITORIES, write_keystone_config
from .install import install, installed_ok
from .pins import KEYSTONE

__all__ = ["DEFAULT_PORT", "DEFAULT_TIMEOUT", "PROG", "default_workdir", "start", "status", "stop"]

PROG = "keystone-server"
DEFAULT_PORT = 5000
DEFAULT_TIMEOUT = 120.0


def _log(msg: str) -> None:
    log(PROG, msg)


def default_workdir(port: int) -> Path:
    return REPO / ".mistral" / f"keystone-run-{port}"


def _state_path(workdir: Path) -> Path:
    return workdir / "state.json"


def _password(path: Path) -> str:
    """The admin password: the file's first line, created random when the file is missing."""
    if not path.exists():
        write_private(path, secrets.token_urlsafe(24) + "\n", exclusive=True)
    try:
        password = read_secret(path)
    except OSError as e:
        raise LaunchError(f"cannot read the password file {path}: {e.strerror}") from None
    except ValueError:
        password = ""
    if not password:
        raise LaunchError(f"the password file {path} is empty")
    return password


def start(port: int = DEFAULT_PORT, workdir: Path | None = None, timeout: float = DEFAULT_TIMEOUT, password_file: Path | None = None) -> str:
    """Bootstrap a fresh Keystone and serve it; block until it answers, return its
    identity URL. A server already answering in the workdir is reused."""
    workdir = (workdir or default_workdir(port)).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o700)  # keys, database and password live here
    url = f"http://{HOST}:{port}/v3"
    pid = (read_json(_state_path(workdir)) or {}).get("pid")
    if pid and pid_alive(pid):
        if http_status(url) == 200:
            _log(f"already running (pid {pid}) in {workdir}")
            return url
        raise LaunchError(f"a server (pid {pid}) from {workdir} is running but not answering; stop it first")
    if not port_free(port):
        raise LaunchError(f"port {port} on {HOST} is in use")
    if not installed_ok(KEYSTONE, deep=False):
        _log(f"Keystone is not installed in {KEYSTONE.venv}: installing")
        install(KEYSTONE, PROG)

    t0 = time.monotonic()
    password_file = password_file or workdir / "admin-password"
    password = _password(password_file)
    for leftover in workdir.glob("keystone.sqlite*"):
        leftover.unlink()  # a fresh database for each start
    for sub in KEY_REPOSITORIES:
        shutil.rmtree(workdir / "keys" / sub, ignore_errors=True)
    conf, _wsgi = write_keystone_config(workdir)
    logfile = workdir / "keystone.log"
    logfile.write_text("")
    env = dict(os.environ, PYTHONWARNINGS="ignore", OS_KEYSTONE_CONFIG_FILES=str(conf))
    env.pop("OS_BOOTSTRAP_PASSWORD", None)  # only bootstrap gets it
    manage = [str(KEYSTONE.bin("keystone-manage")), "--config-file", str(conf)]
    owner = ["--keystone-user", "root", "--keystone-group", "root"]
    endpoints = ["--bootstrap-admin-url", url, "--bootstrap-public-url", url, "--bootstrap-internal-url", url]
    steps = [["db_sync"], ["fernet_setup", *owner], ["credential_setup", *owner], ["bootstrap", *endpoints, "--bootstrap-region-id", "RegionOne"]]
    for step in steps:
        t = time.monotonic()
        step_env = dict(env, OS_BOOTSTRAP_PASSWORD=password) if step[0] == "bootstrap" else env
        if run_logged(manage + step, logfile, workdir, env=step_env) != 0:
            raise LaunchError(f"keystone-manage {step[0]} failed:\n{tail(logfile)}")
        _log(f"keystone-manage {step[0]}: {time.monotonic() - t:.1f}s")

    cmd = [str(KEYSTONE.bin("gunicorn")), "--bind", f"{HOST}:{port}", "--workers", "1", "--threads", "4", "--worker-class", "gthread"]
    cmd += ["--timeout", "120", "--chdir", str(workdir), "keystone_wsgi:application"]
    _log(f"starting Keystone on port {port}, log {logfile}")
    proc = spawn_logged(cmd, logfile, workdir, env)
    state = {
        "port": port,
        "url": url,
        "workdir": str(workdir),
        "venv": str(KEYSTONE.venv),
        "pid": proc.pid,
        "password_file": str(password_file.resolve()),
    }
    write_json(_state_path(workdir), state)
    deadline = time.monotonic() + timeout
    while http_status(url, timeout=2.0) != 200:
        if proc.poll() is not None:
            _fail_start(workdir, f"gunicorn exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            _fail_start(workdir, f"not ready in {timeout:.0f}s: GET {url} -> {http_status(url)}")
        time.sleep(0.2)
    state["startup_seconds"] = round(time.monotonic() - t0, 1)
    write_json(_state_path(workdir), state)
    _log(f"Keystone ready in {time.monotonic() - t0:.1f}s, pid {proc.pid}")
    return url


def _fail_start(workdir: Path, why: str) -> None:
    logfile = workdir / "keystone.log"
    _log(f"start failed: {why}\n----- {logfile} (tail) -----\n{tail(logfile)}\n-----")
    stop(workdir)
    raise StartFailed(why)


def stop(workdir: Path) -> bool:
    """Stop the server of ``workdir`` (its files stay); whether one was running."""
    pid = (read_json(_state_path(workdir)) or {}).get("pid")
    was_running = bool(pid and pid_alive(pid))
    if pid:
        kill_group(pid, 10.0)
    try:
        _state_path(workdir).unlink()
    except OSError:
        pass
    return was_running


def status(workdir: Path, port: int) -> int:
    """Print one status line on stdout; 0 running and answering, 1 not answering, 3 stopped."""
    state = read_json(_state_path(workdir)) or {}
    pid = state.get("pid")
    if not pid or not pid_alive(pid):
        print(f"stopped (workdir {workdir})")
        return 3
    url = state.get("url") or f"http://{HOST}:{port}/v3"
    code = http_status(url)
    print(f"running: pid {pid}, {url}, {'answers 200' if code == 200 else f'not answering ({code})'}, workdir {workdir}")
    return 0 if code == 200 else 1
