"""Retries (tenacity) and the circuit breaker that keeps a sick Redis off the hot path."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import redis.exceptions as rex
import tenacity

__all__ = ["CLOSED", "OPEN", "HALF_OPEN", "RETRYABLE", "default_redis_retry", "as_async", "as_sync", "CircuitBreaker", "Prober"]

log = logging.getLogger("mistral_cache.resilience")

#: Errors a retry can fix: a refused or reset connection. A *timeout* is not
#: retried: a frozen or overloaded server will not answer faster the second time,
#: and retrying it would multiply the latency the breaker exists to bound.
RETRYABLE = (rex.ConnectionError, rex.BusyLoadingError)


def default_redis_retry() -> tenacity.Retrying:
    """Three quick tries within 200 ms, with jittered exponential backoff."""
    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(3) | tenacity.stop_after_delay(0.2),
        wait=tenacity.wait_exponential_jitter(initial=0.005, max=0.05, jitter=0.005),
        retry=tenacity.retry_if_exception_type(RETRYABLE)
        & tenacity.retry_if_not_exception_type(rex.TimeoutError),
        reraise=True,
    )


_COPIED = ("stop", "wait", "retry", "before", "after", "before_sleep", "reraise", "retry_error_callback")


def as_async(policy: tenacity.BaseRetrying) -> tenacity.AsyncRetrying:
    """The same tenacity policy (stop, wait, retry, callbacks), driving coroutines."""
    if isinstance(policy, tenacity.AsyncRetrying):
        return policy
    return tenacity.AsyncRetrying(**{name: getattr(policy, name) for name in _COPIED})


def as_sync(policy: tenacity.BaseRetrying) -> tenacity.Retrying:
    if isinstance(policy, tenacity.Retrying):
        return policy
    return tenacity.Retrying(**{name: getattr(policy, name) for name in _COPIED})


CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    """Opens after ``failure_threshold`` consecutive failures; after ``reset_timeout``
    lets one probe through (half-open) and closes when it succeeds.

    While open, callers skip Redis entirely, so an outage costs them nothing but
    the local tier and the function. ``on_change(old, new)`` observers hear every
    transition (the cache flushes its local tier when the breaker closes: what it
    holds may have been invalidated while Redis was out of reach).
    """

    def __init__(
        self,
        failure_threshold: int = 3,
        reset_timeout: float = 2.0,
        *,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or reset_timeout <= 0:
            raise ValueError("failure_threshold must be >= 1 and reset_timeout > 0")
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._timer = timer
        self._lock = threading.Lock()
        self.state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self._probe_at = 0.0
        self.transitions: dict[str, int] = {CLOSED: 0, OPEN: 0, HALF_OPEN: 0}
        self.rejected = 0
        self._observers: list[Callable[[str, str], Any]] = []

    def on_change(self, observer: Callable[[str, str], Any]) -> None:
        self._observers.append(observer)

    def _move(self, new: str) -> None:
        old, self.state = self.state, new
        self.transitions[new] += 1
        level = logging.WARNING if new == OPEN else logging.INFO
        log.log(level, "redis circuit breaker %s -> %s", old, new)
        for observer in self._observers:
            try:
                observer(old, new)
            except Exception:  # an observer must not break the breaker
                log.exception("circuit breaker observer failed")

    def allow(self) -> bool:
        if self.state == CLOSED:
            return True
        with self._lock:
            if self.state == OPEN and self._timer() - self._opened_at >= self.reset_timeout:
                self._move(HALF_OPEN)
            # A probe that never reported back (its caller was cancelled or raised
            # something else) must not wedge the breaker half-open: its lease ends
            # after reset_timeout and the next caller probes instead.
            if self.state == HALF_OPEN and (not self._probing or self._timer() - self._probe_at >= self.reset_timeout):
                self._probing = True
                self._probe_at = self._timer()
                return True
            if self.state == CLOSED:
                return True
            self.rejected += 1
            return False

    def success(self) -> None:
        if self.state == CLOSED and not self._failures:
            return
        with self._lock:
            self._failures = 0
            self._probing = False
            if self.state != CLOSED:
                self._move(CLOSED)

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._probing = False
            if self.state == HALF_OPEN or (self.state == CLOSED and self._failures >= self.failure_threshold):
                self._opened_at = self._timer()
                self._move(OPEN)


class Prober:
    """One daemon thread that calls ``probe()`` every ``interval`` seconds (jittered)
    while ``needed()``, and exits when it is not.

    Why a thread: a breaker lets a caller probe only after ``reset_timeout``, and
    only when some caller comes by. Invalidations owed to Redis must be replayed
    the moment it answers again, idle process or not, and the local tiers must not
    wait seconds to be trusted again. A PING every 100 ms of an outage is cheap.
    """

    def __init__(self, probe: Callable[[], bool], needed: Callable[[], bool], interval: float = 0.1) -> None:
        if interval <= 0:
            raise ValueError("the probe interval must be positive")
        self._probe, self._needed, self.interval = probe, needed, interval
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self.probes = 0

    def kick(self) -> None:
        """Probe now (and keep probing while needed)."""
        with self._lock:
            alive = self._thread is not None and self._thread.is_alive() and self._pid == os.getpid()
            if not alive:
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="mistral-cache-redis-probe", daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval * (0.5 + random.random()))
            self._wake.clear()
            try:
                if self._needed():
                    self.probes += 1
                    self._probe()
            except Exception:  # the prober must outlive any one probe
                log.exception("redis probe failed")
            with self._lock:
                if not self._needed():
                    self._thread = None
                    return
