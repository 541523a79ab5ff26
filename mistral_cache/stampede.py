"""Stampede protection: in-process single-flight, the Redis lock's keeper, and
XFetch early refresh (Vattani, Chierichetti, Lowenstein, VLDB 2015).

XFetch recomputes a value early with probability that rises as expiry nears and
with the value's compute time ``delta``: refresh when
``now - delta * beta * ln(rand()) >= expiry``. With ``-ln(rand())`` above 7 only
once in a thousand rolls, nothing is rolled before ``expiry - 7 * delta * beta``
(:func:`soft_deadline`), which keeps the dice off the hot path.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["soft_deadline", "xfetch_due", "Flight", "SingleFlight", "LockKeeper"]

log = logging.getLogger("mistral_cache.stampede")

_WINDOW = 7.0


def soft_deadline(expires_at: float, compute_time: float, beta: float) -> float:
    return expires_at - _WINDOW * beta * compute_time


def xfetch_due(now: float, expires_at: float, compute_time: float, beta: float, rand: Callable[[], float] = random.random) -> bool:
    if beta <= 0 or compute_time <= 0:
        return now >= expires_at
    if now < expires_at - _WINDOW * beta * compute_time:  # soft_deadline: no roll this early (see above)
        return False
    r = rand()
    return now - compute_time * beta * math.log(r if r > 0 else 1e-12) >= expires_at


class Flight:
    """One in-process computation that other threads wait for.

    A lock held from birth until :meth:`finish` rather than a ``threading.Event``:
    every Redis hit and miss goes through a flight, and a bare lock costs a tenth
    of an Event's condition variable to create and to release."""

    __slots__ = ("_running", "value", "error")

    def __init__(self) -> None:
        self._running = threading.Lock()
        self._running.acquire()
        self.value: Any = None
        self.error: BaseException | None = None

    def finish(self, value: Any = None, error: BaseException | None = None) -> None:
        """Called exactly once, by the leader."""
        self.value, self.error = value, error
        self._running.release()

    def wait(self, timeout: float | None) -> bool:
        """True once finished (waiters pass the lock along), False on timeout."""
        if not self._running.acquire(True, -1 if timeout is None else max(timeout, 0.0)):
            return False
        self._running.release()
        return True

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


class SingleFlight:
    """Thread single-flight, plus one table of futures per event loop for coroutines."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.threads: dict[str, Flight] = {}
        self.loops: dict[int, dict[str, asyncio.Future[Any]]] = {}

    def after_fork(self) -> None:
        """In a forked child: a parent thread may have held the lock at the fork, and
        no flight of the parent's will ever finish here."""
        self._lock = threading.Lock()
        self.threads = {}
        self.loops = {}

    def join(self, key: str) -> tuple[Flight, bool]:
        """The flight for ``key`` and whether the caller leads it."""
        with self._lock:
            flight = self.threads.get(key)
            if flight is not None:
                return flight, False
            flight = self.threads[key] = Flight()
            return flight, True

    def leave(self, key: str, flight: Flight) -> None:
        with self._lock:
            if self.threads.get(key) is flight:
                del self.threads[key]

    def ajoin(self, key: str) -> tuple[asyncio.Future[Any], bool]:
        loop = asyncio.get_running_loop()
        table = self.loops.setdefault(id(loop), {})
        future = table.get(key)
        if future is not None:
            return future, False
        future = table[key] = loop.create_future()
        return future, True

    def aleave(self, key: str, future: asyncio.Future[Any]) -> None:
        table = self.loops.get(id(asyncio.get_running_loop()))
        if table is not None and table.get(key) is future:
            table.pop(key, None)  # the listener thread may forget it meanwhile
            if not table:
                self.loops.pop(id(asyncio.get_running_loop()), None)

    def forget(self, key: str) -> None:
        """After an invalidation, later callers must not join a computation that began before it."""
        with self._lock:
            self.threads.pop(key, None)
        for table in list(self.loops.values()):
            table.pop(key, None)

    def forget_all(self) -> None:
        with self._lock:
            self.threads.clear()
        for table in list(self.loops.values()):
            table.clear()


class LockKeeper:
    """One daemon thread that keeps the Redis locks of running sync computations
    alive (``extend(lock_key, token)`` every ``timeout/3``), so a long computation
    keeps its lock while a dead holder's lock still expires after ``timeout``."""

    def __init__(self, extend: Callable[[str, bytes], Any], interval: float) -> None:
        self._extend = extend
        self.interval = interval
        self._cond = threading.Condition()
        self._held: dict[bytes, str] = {}
        self._heap: list[tuple[float, bytes]] = []
        self._thread: threading.Thread | None = None

    def add(self, lock_key: str, token: bytes) -> None:
        with self._cond:
            self._held[token] = lock_key
            heapq.heappush(self._heap, (time.monotonic() + self.interval, token))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="mistral-cache-lock-keeper", daemon=True)
                self._thread.start()
            self._cond.notify()

    def remove(self, token: bytes) -> None:
        with self._cond:
            self._held.pop(token, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._heap and self._heap[0][1] not in self._held:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        if not self._cond.wait(timeout=30):
                            self._thread = None
                            return
                        continue
                    due, token = self._heap[0]
                    wait = due - time.monotonic()
                    if wait <= 0:
                        heapq.heapreplace(self._heap, (time.monotonic() + self.interval, token))
                        lock_key = self._held[token]
                        break
                    self._cond.wait(timeout=wait)
            try:
                if not self._extend(lock_key, token):
                    log.warning("lost the lock %s while computing (expired or taken over)", lock_key)
            except Exception:
                log.exception("extending lock %s failed", lock_key)
