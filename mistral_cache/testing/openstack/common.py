"""What the Mistral and Keystone launchers share: paths, loopback probes, process
groups, logs, the secret files, and the steps of start, stop and status that both
servers take alike (:class:`Server`).

Standard library only: the launchers also run under a bare ``python3`` that has
none of the project's dependencies (``scripts/mistral-server`` falls back to
loading this package alone).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

__all__ = [
    "HOST",
    "REPO",
    "LaunchError",
    "Server",
    "StartFailed",
    "http_request",
    "http_status",
    "kill_group",
    "log",
    "open_url",
    "pid_alive",
    "port_free",
    "port_open",
    "read_json",
    "read_secret",
    "run_logged",
    "spawn_logged",
    "stop_process",
    "tail",
    "wait_ready",
    "write_json",
    "write_private",
]

# The source checkout: default virtualenvs and workdirs live in <repo>/.mistral.
REPO = Path(__file__).resolve().parents[3]
HOST = "127.0.0.1"

# Loopback only: never through an http_proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class LaunchError(Exception):
    """A step failed; the CLI prints ``<prog>: error: <message>`` and exits 1."""


class StartFailed(LaunchError):
    """``start`` failed and already said why (with the server log's tail) on stderr."""


def log(prog: str, msg: str) -> None:
    """One line on stderr: stdout is kept for what callers parse (the URL, the status)."""
    print(f"{prog}: {msg}", file=sys.stderr, flush=True)


def port_open(port: int, host: str = HOST, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_free(port: int, host: str = HOST) -> bool:
    """Bindable and nobody answering (a port in TIME_WAIT from a stopped server counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
        try:
            s.bind((host, port))
        except OSError:
            return False
    return not port_open(port, host, timeout=0.5)


def http_request(url: str, data: bytes | None = None, headers: Mapping[str, str] | None = None, method: str | None = None) -> urllib.request.Request:
    """A request to an http(s) URL; any other scheme (``file:``...) is refused."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url}")
    return urllib.request.Request(url, data=data, headers=dict(headers or {}), method=method)  # noqa: S310 - scheme checked


def open_url(request: urllib.request.Request, timeout: float) -> Any:
    """``urlopen`` without any proxy (the response, a context manager)."""
    return _OPENER.open(request, timeout=timeout)


def http_status(url: str, timeout: float = 5.0, headers: Mapping[str, str] | None = None) -> int | None:
    """The status of a GET, None when nothing answered."""
    try:
        with open_url(http_request(url, headers=headers), timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError, ValueError):
        return None


def tail(path: Path, lines: int = 60) -> str:
    """The last lines of a log, for an error message."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 200 * lines))
            data = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"(no log at {path}: {e})"
    return "\n".join(data.splitlines()[-lines:])


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie (our own child not reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def kill_group(pid: int, grace: float, on_slow: Callable[[], None] | None = None) -> None:
    """SIGTERM the server's process group (it was started in a new session), SIGKILL
    what is left after ``grace`` seconds; ``on_slow`` is called before the SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            if not pid_alive(pid) and not _group_alive(pid):
                return
            time.sleep(0.1)
        if sig == signal.SIGTERM and on_slow is not None:
            on_slow()


def _log_command(out: Any, cmd: Sequence[str]) -> None:
    # Commands carry paths and options only: secrets travel in files and environments.
    out.write(("\n$ {}\n".format(" ".join(cmd))).encode())
    out.flush()


def run_logged(cmd: Sequence[str], logfile: Path, cwd: Path, env: Mapping[str, str] | None = None) -> int:
    """Run a set-up step with its output appended to the server log; its exit code."""
    with open(logfile, "ab") as out:
        _log_command(out, cmd)
        return subprocess.run(
            list(cmd), stdout=out, stderr=subprocess.STDOUT, cwd=str(cwd), stdin=subprocess.DEVNULL, env=env, check=False
        ).returncode


def spawn_logged(cmd: Sequence[str], logfile: Path, cwd: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start the server in its own session (so :func:`kill_group` reaches its workers), logging to ``logfile``."""
    with open(logfile, "ab") as out:
        _log_command(out, cmd)
        return subprocess.Popen(
            list(cmd), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(cwd), env=env, start_new_session=True
        )


def wait_ready(proc: subprocess.Popen[bytes], ready: Callable[[], bool], timeout: float, interval: float) -> bool:
    """Poll ``ready()`` every ``interval`` seconds: True once it holds; False when the
    process exited first (``proc.returncode`` is set) or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def stop_process(pid: int | None, grace: float, on_slow: Callable[[], None] | None = None) -> bool:
    """:func:`kill_group` the server a workdir recorded, if any; whether it was running."""
    was_running = bool(pid and pid_alive(pid))
    if pid:
        kill_group(pid, grace, on_slow)
    return was_running


@dataclass(frozen=True)
class Server:
    """One launcher's names, and the start steps Mistral's and Keystone's take alike,
    so that both word their messages and lay out their workdirs the same way."""

    prog: str  # "mistral-server": every message starts with it
    run_dir: str  # the default workdir is <repo>/.mistral/<run_dir>-PORT
    log_name: str  # the server's log, inside the workdir

    def log(self, msg: str) -> None:
        log(self.prog, msg)

    def default_workdir(self, port: int) -> Path:
        return REPO / ".mistral" / f"{self.run_dir}-{port}"

    @staticmethod
    def state_path(workdir: Path) -> Path:
        return workdir / "state.json"

    def load_state(self, workdir: Path) -> dict[str, Any]:
        """What the last start recorded (``{}`` when nothing or nothing readable)."""
        return read_json(self.state_path(workdir)) or {}

    def save_state(self, workdir: Path, state: Mapping[str, Any]) -> None:
        write_json(self.state_path(workdir), state)

    def forget(self, workdir: Path, *others: Path) -> None:
        """Delete ``others`` (a pid file), then the state file, those that exist: a stopped server's records."""
        for path in (*others, self.state_path(workdir)):
            try:
                path.unlink()
            except OSError:
                pass

    def open_workdir(self, workdir: Path | None, port: int) -> Path:
        """The workdir, resolved and created owner-only (0700): the configs, databases,
        keys and passwords live there."""
        workdir = (workdir or self.default_workdir(port)).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(workdir, 0o700)
        return workdir

    def reuse(self, workdir: Path, port: int, pid: int | None, answers: Callable[[], bool], hint: str) -> bool:
        """Before a start: True when the workdir's server runs and ``answers()`` (start
        returns its URL); LaunchError when it runs but does not answer (``hint``: what
        to do) or another process holds the port; False: go ahead."""
        if pid and pid_alive(pid):
            if answers():
                self.log(f"already running (pid {pid}) in {workdir}")
                return True
            raise LaunchError(f"a server (pid {pid}) from {workdir} is running but not answering; {hint}")
        if not port_free(port):
            raise LaunchError(f"port {port} on {HOST} is in use")
        return False

    def fail_start(self, workdir: Path, why: str, stop: Callable[[], object]) -> NoReturn:
        """Say why with the log's tail, ``stop()`` what started, raise :class:`StartFailed`."""
        logfile = workdir / self.log_name
        self.log(f"start failed: {why}\n----- {logfile} (tail) -----\n{tail(logfile)}\n-----")
        stop()
        raise StartFailed(why)

    def started(self, workdir: Path, state: dict[str, Any], t0: float, what: str) -> None:
        """Record in the state file how long the start took (since ``t0``) and say so."""
        state["startup_seconds"] = round(time.monotonic() - t0, 1)
        self.save_state(workdir, state)
        self.log(f"{what} ready in {time.monotonic() - t0:.1f}s, pid {state['pid']}")


def read_secret(path: str | Path) -> str:
    """The first line of a secret file, stripped; OSError or ValueError (empty file)
    for the caller to word. Secrets come from files, never from command lines."""
    lines = Path(path).read_text().splitlines()
    if not lines:
        raise ValueError("the file is empty")
    return lines[0].strip()


def write_private(path: Path, text: str, *, exclusive: bool = False) -> None:
    """Write a file readable by its owner only (it may hold a password or a token)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(str(path), flags, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2))
