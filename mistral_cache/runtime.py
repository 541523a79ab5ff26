"""The services one :class:`~mistral_cache.Cache` shares among its functions: the
tiers, the codec, the key layout, the in-process flights, the invalidator, and
the threads started on first use (listener, lock keeper, prober, refresh pool).

The engine of each decorated function works on a :class:`Runtime`, never on the
facade, so the layers import only downward: runtime < engine < wrappers < cache.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from . import coherence
from .flow import Flow, RedisCall, Sleep, adrive, drive
from .generations import Generations
from .invalidation import Invalidator
from .observability.stats import FunctionStats, Stats
from .policies import EarlyRefresh, RedisLock, StaleIfError
from .resilience import CLOSED, OPEN, Prober
from .serializers import Codec
from .stampede import LockKeeper, SingleFlight
from .tiers.local import LocalTier
from .tiers.redis import FAILED, Keyspace, RedisTier

__all__ = ["Runtime", "Settings"]

log = logging.getLogger("mistral_cache")


@dataclass(frozen=True)
class Settings:
    """Cache-wide defaults the engines read; functions may override the policies."""

    local_ttl: float | None
    local_max_bytes: int | None  # as the user gave it (None: the local tier's default bound)
    lock: RedisLock | None
    refresh: EarlyRefresh | None
    stale: StaleIfError | None
    flight_wait: float  # how long a caller waits for this process's computation of the same key
    on_flight_timeout: str
    tombstone_ttl: float


class Runtime:
    """Per-cache services. Nothing connects and no thread starts until first used."""

    def __init__(
        self,
        *,
        namespace: str,
        codec: Codec,
        local: LocalTier | None,
        redis: RedisTier | None,
        settings: Settings,
        coherence_on: bool,
        replica_wait: float | None,
        socket_timeout: float,
        timer: Callable[[], float],
        sleep: Callable[[float], Any],
    ) -> None:
        self.namespace, self.keyspace = namespace, Keyspace(namespace)
        self.codec, self.local, self.redis, self.settings = codec, local, redis, settings
        self.timer, self.sleep = timer, sleep
        self.stats = Stats()  # counters that belong to no one function
        self.flights = SingleFlight()
        #: Counter values held while the listener is subscribed (a Redis hit is then one GET).
        self.generations = Generations()
        self.sender = os.urandom(6).hex()
        self.functions: weakref.WeakSet[Any] = weakref.WeakSet()
        self.listener: coherence.Listener | None = None
        # The listener keeps the local tier coherent, and while it does a Redis hit may
        # trust held counter values (one GET, see generations.py). Without a local tier
        # no listener runs: every read fetches the counters with the entry, so an
        # invalidation that returned in any process is seen by the next read here.
        self._coherence = redis is not None and local is not None and coherence_on
        self._keepers: dict[float, LockKeeper] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self._init_lock = threading.Lock()
        self._prober: Prober | None = None
        self.invalidator = Invalidator(
            keyspace=self.keyspace, codec=codec, redis=redis, local=local, flights=self.flights, sender=self.sender,
            tombstone_ttl=settings.tombstone_ttl, replica_wait=replica_wait, socket_timeout=socket_timeout,
            timer=timer, stats=self.stats, kick=self.kick, generations=self.generations,
        )
        self.pending = self.invalidator.pending
        if redis is not None:
            redis.breaker.on_change(self._breaker_moved)
            redis.owe(self.pending, self.invalidator.settle_op)
            if redis.can_probe:
                self._prober = Prober(self.invalidator.probe, lambda: redis.breaker.state != CLOSED or self.pending.anything)
        if local is not None:
            _watch_forks(self)

    def register(self, function: FunctionStats) -> None:
        self.functions.add(function)

    # -- driving flows that need only Redis and sleeps (invalidations) ----------------
    def perform(self, op: Any) -> Any:
        if isinstance(op, RedisCall):
            return self.redis.run(op.op, op.what) if self.redis is not None else FAILED
        if isinstance(op, Sleep):
            return self.sleep(op.seconds)
        raise TypeError(f"a Redis-only flow yielded {op!r}")

    async def aperform(self, op: Any) -> Any:
        if isinstance(op, RedisCall):
            return await self.redis.arun(op.op, op.what) if self.redis is not None else FAILED
        if isinstance(op, Sleep):
            return await asyncio.sleep(op.seconds)
        raise TypeError(f"a Redis-only flow yielded {op!r}")

    def drive(self, flow: Flow) -> Any:
        return drive(flow, self.perform)

    async def adrive(self, flow: Flow) -> Any:
        return await adrive(flow, self.aperform)

    # -- background machinery, started on first use ---------------------------------
    def ensure_listener(self) -> None:
        if not self._coherence:
            return
        listener = self.listener
        if listener is None:
            with self._init_lock:
                if self.listener is None:
                    assert self.redis is not None
                    tier = self.redis
                    self.listener = coherence.Listener(
                        lambda: tier.client().pubsub(), self.keyspace.channel, self.local, self.sender,
                        flights=self.flights, on_event=self._listener_event,
                    )
                listener = self.listener
        listener.ensure_started()

    def lock_keeper(self, timeout: float) -> LockKeeper:
        """A thread extending the locks of running sync computations (every timeout/3),
        one per lock timeout in use."""
        keeper = self._keepers.get(timeout)
        if keeper is None:
            with self._init_lock:
                keeper = self._keepers.get(timeout)
                if keeper is None:
                    tier = self.redis
                    assert tier is not None
                    keeper = self._keepers[timeout] = LockKeeper(
                        lambda k, t: tier.run(tier.reacquire(k, t, int(timeout * 1000)), "extend lock"), timeout / 3)
        return keeper

    def background(self, job: Callable[[], Any]) -> None:
        if self._executor is None:
            with self._init_lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="mistral-cache-refresh")
        future = self._executor.submit(job)
        future.add_done_callback(_log_failure)

    def abackground(self, job: Coroutine[Any, Any, Any] | Awaitable[Any]) -> None:
        task = asyncio.ensure_future(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)

    # -- faults ------------------------------------------------------------------------
    def kick(self) -> None:
        """Probe Redis now (and keep probing while it is sick or something is owed)."""
        if self._prober is not None:
            self._prober.kick()

    def _listener_event(self, kind: str) -> None:
        if kind == "connected":
            self.generations.set_enabled(True)
            if self.pending.anything or (self.redis is not None and self.redis.breaker.state != CLOSED):
                self.kick()  # Redis answers again: recover now, not at the next timer
        elif kind == "disconnected":
            self.generations.set_enabled(False)
        elif kind != "k":
            self.generations.clear()  # a counter may have moved

    def _breaker_moved(self, old: str, new: str) -> None:
        if new == OPEN:
            self.kick()
        if new == CLOSED and self.local is not None:
            # Invalidations sent while we could not reach Redis never reached us.
            log.info("redis is back: flushing the local tier")
            self.local.clear()

    def replay_pending(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.pending.owed:
            if self.redis is None or time.monotonic() >= deadline:
                return False
            self.redis.probe()
            if self.pending.owed:
                self.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return True

    # -- lifecycle -----------------------------------------------------------------------
    def after_fork(self) -> None:
        """In a forked child no listener runs until the first call that reaches Redis, so
        inherited local entries would miss every invalidation: drop them (and the
        in-flight table, whose lock a parent thread may have held at the fork)."""
        self.flights.after_fork()
        self.generations.set_enabled(False)  # no listener runs in the child yet
        if self.local is not None:
            self.local.after_fork()

    def close(self) -> None:
        if self.listener is not None:
            self.listener.stop()
            self.listener = None
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None


_forkable: weakref.WeakSet[Runtime] = weakref.WeakSet()
_fork_hook = False


def _watch_forks(runtime: Runtime) -> None:
    global _fork_hook
    _forkable.add(runtime)
    if not _fork_hook and hasattr(os, "register_at_fork"):
        _fork_hook = True
        os.register_at_fork(after_in_child=_after_fork_in_child)


def _after_fork_in_child() -> None:
    for runtime in list(_forkable):
        runtime.after_fork()


def _log_failure(future: Any) -> None:
    if future.cancelled():
        return
    exc = future.exception()
    if exc is not None:
        log.warning("background refresh failed: %s: %s", type(exc).__name__, exc)
