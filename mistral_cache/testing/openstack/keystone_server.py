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
    LaunchError,
    Server,
    http_status,
    pid_alive,
    read_secret,
    run_logged,
    spawn_logged,
    stop_process,
    tail,
    wait_ready,
    write_private,
)
from .config import KEY_REPOSITORIES, write_keystone_config
from .install import ensure_installed
from .pins import KEYSTONE

__all__ = ["DEFAULT_PORT", "DEFAULT_TIMEOUT", "PROG", "SERVER", "default_workdir", "start", "status", "stop"]

PROG = "keystone-server"
DEFAULT_PORT = 5000
DEFAULT_TIMEOUT = 120.0
SERVER = Server(PROG, "keystone-run", "keystone.log")
default_workdir = SERVER.default_workdir


def _pid(workdir: Path) -> int | None:
    pid: int | None = SERVER.load_state(workdir).get("pid")
    return pid


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
    workdir = SERVER.open_workdir(workdir, port)
    url = f"http://{HOST}:{port}/v3"
    if SERVER.reuse(workdir, port, _pid(workdir), lambda: http_status(url) == 200, "stop it first"):
        return url
    ensure_installed(KEYSTONE, PROG)

    t0 = time.monotonic()
    password_file = password_file or workdir / "admin-password"
    password = _password(password_file)
    for leftover in workdir.glob("keystone.sqlite*"):
        leftover.unlink()  # a fresh database for each start
    for sub in KEY_REPOSITORIES:
        shutil.rmtree(workdir / "keys" / sub, ignore_errors=True)
    conf, _wsgi = write_keystone_config(workdir)
    logfile = workdir / SERVER.log_name
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
        SERVER.log(f"keystone-manage {step[0]}: {time.monotonic() - t:.1f}s")

    cmd = [str(KEYSTONE.bin("gunicorn")), "--bind", f"{HOST}:{port}", "--workers", "1", "--threads", "4", "--worker-class", "gthread"]
    cmd += ["--timeout", "120", "--chdir", str(workdir), "keystone_wsgi:application"]
    SERVER.log(f"starting Keystone on port {port}, log {logfile}")
    proc = spawn_logged(cmd, logfile, workdir, env)
    state = {
        "port": port,
        "url": url,
        "workdir": str(workdir),
        "venv": str(KEYSTONE.venv),
        "pid": proc.pid,
        "password_file": str(password_file.resolve()),
    }
    SERVER.save_state(workdir, state)
    if not wait_ready(proc, lambda: http_status(url, timeout=2.0) == 200, timeout, 0.2):
        exited = proc.returncode is not None
        why = f"gunicorn exited with code {proc.returncode}" if exited else f"not ready in {timeout:.0f}s: GET {url} -> {http_status(url)}"
        SERVER.fail_start(workdir, why, lambda: stop(workdir))
    SERVER.started(workdir, state, t0, "Keystone")
    return url


def stop(workdir: Path) -> bool:
    """Stop the server of ``workdir`` (its files stay); whether one was running."""
    was_running = stop_process(_pid(workdir), 10.0)
    SERVER.forget(workdir)
    return was_running


def status(workdir: Path, port: int) -> int:
    """Print one status line on stdout; 0 running and answering, 1 not answering, 3 stopped."""
    state = SERVER.load_state(workdir)
    pid = state.get("pid")
    if not pid or not pid_alive(pid):
        print(f"stopped (workdir {workdir})")
        return 3
    url = state.get("url") or f"http://{HOST}:{port}/v3"
    code = http_status(url)
    print(f"running: pid {pid}, {url}, {'answers 200' if code == 200 else f'not answering ({code})'}, workdir {workdir}")
    return 0 if code == 200 else 1
