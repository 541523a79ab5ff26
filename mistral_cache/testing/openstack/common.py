"""What the Mistral and Keystone launchers share: paths, loopback probes, process
groups, logs and the secret files.

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
from pathlib import Path
from typing import Any

__all__ = [
    "HOST",
    "REPO",
    "LaunchError",
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
    "tail",
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
