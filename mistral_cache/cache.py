"""`Cache`: owns the tiers, the policies and the statistics; ``.cached()`` builds wrappers."""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import tenacity

from . import coherence as _coh
from .core import Engine, Flow, _Redis, adrive, drive
from .exceptions import ConfigurationError
from .invalidation import Owed, Pending
from .resilience import CLOSED, OPEN, CircuitBreaker, Prober
from .serializers import Codec, Serializer
from .stampede import LockKeeper, SingleFlight
from .stats import Stats
from .tiers.local import LocalTier
from .tiers.redis import FAILED, Keyspace, RedisTier, sequence

log = logging.getLogger("mistral_cache")
#: Seconds an invalidation waits for a replica's acknowledgement under Sentinel.
DEFAULT_REPLICA_WAIT = 0.1
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Options:
    """Cache-wide defaults; most can be overridden per decorated function."""

    local_ttl: float | None
    local_max_bytes: int | None
    lock: bool
    lock_timeout: float
    lock_wait: float
    on_lock_timeout: str
    early_refresh: bool
    beta: float
    stale_if_error: float
    stale_while_revalidate: bool
    tombstone_ttl: float
    replica_wait: float | None


def _seconds(value: float | _dt.timedelta | None, name: str, *, allow_zero: bool = True) -> float:
    if value is None:
        return 0.0
    if isinstance(value, _dt.timedelta):
        value = value.total_seconds()
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigurationError(f"{name} must be a non-negative number of seconds or a timedelta, got {value!r}")
    return float(value)


class Cache:
    """A two-tier cache: an in-process LRU in front of Redis.

    ``redis_url=None`` (and no ``redis=``) keeps the local tier only;
    ``local_maxsize=0`` keeps Redis only. Nothing connects, and no thread starts,
    until the first call that needs Redis.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        redis: Any = None,
        async_redis: Any = None,
        namespace: str = "default",
        local_maxsize: int = 4096,
        local_max_bytes: int | None = None,
        local_ttl: float | _dt.timedelta | None = 60.0,
        serializer: str | Serializer = "json",
        secret: bytes | str | None = None,
        compress_threshold: int | None = 16 * 1024,
        max_value_size: int | None = 4 * 1024 * 1024,
        lock: bool = True,
        lock_timeout: float = 10.0,
        lock_wait: float = 30.0,
        on_lock_timeout: str = "compute",
        early_refresh: bool = True,
        beta: float = 1.0,
        stale_if_error: float | _dt.timedelta = 0.0,
        stale_while_revalidate: bool = False,
        coherence: bool = True,
        redis_retry: tenacity.BaseRetrying | None = None,
        breaker: CircuitBreaker | None = None,
        socket_timeout: float = 0.25,
        connect_timeout: float = 0.25,
        replica_wait: float | _dt.timedelta | None = None,
        strict: bool = False,
        timer: Callable[[], float] = time.time,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        if not isinstance(local_maxsize, int) or local_maxsize < 0:
            raise ConfigurationError(f"local_maxsize must be an int >= 0, got {local_maxsize!r}")
        if on_lock_timeout not in ("compute", "raise"):
            raise ConfigurationError(f"on_lock_timeout must be 'compute' or 'raise', got {on_lock_timeout!r}")
        if lock_timeout <= 0 or lock_wait <= 0:
            raise ConfigurationError("lock_timeout and lock_wait must be positive")
        if replica_wait is not None and _seconds(replica_wait, "replica_wait") >= socket_timeout:
            raise ConfigurationError(
                f"replica_wait ({replica_wait!r}) must be shorter than socket_timeout ({socket_timeout!r}): "
                "a WAIT that outlives the socket would count as a Redis failure")
        self.namespace = namespace
        self.keyspace = Keyspace(namespace)
        self.options = Options(
            local_ttl=_seconds(local_ttl, "local_ttl") or None,
            local_max_bytes=local_max_bytes,
            lock=lock,
            lock_timeout=float(lock_timeout),
            lock_wait=float(lock_wait),
            on_lock_timeout=on_lock_timeout,
            early_refresh=early_refresh,
            beta=float(beta),
            stale_if_error=_seconds(stale_if_error, "stale_if_error"),
            stale_while_revalidate=stale_while_revalidate,
            tombstone_ttl=max(60.0, 2 * float(lock_timeout)),
            replica_wait=None if replica_wait is None else _seconds(replica_wait, "replica_wait"),
        )
        self.timer = timer
        self.sleep = sleep
        self.codec = Codec(serializer, secret=secret, compress_threshold=compress_threshold, max_value_size=max_value_size)
        self.local = LocalTier(local_maxsize, max_bytes=local_max_bytes) if (local_maxsize or local_max_bytes) else None
        self.redis: RedisTier | None = None
        if redis_url is not None or redis is not None or async_redis is not None:
            self.redis = RedisTier(
                redis_url, client=redis, async_client=async_redis, breaker=breaker, retry=redis_retry,
                socket_timeout=socket_timeout, connect_timeout=connect_timeout, strict=strict,
                on_error=self._redis_error,
            )
            self.redis.breaker.on_change(self._breaker_moved)
        #: Invalidations and lock releases Redis has not acknowledged (module invalidation).
        self.pending = Pending()
        self._prober: Prober | None = None
        if self.redis is not None:
            self.redis.owe(self.pending, self._settle_op)
            if self.redis.can_probe:
                tier = self.redis
                self._prober = Prober(self._probe, lambda: tier.breaker.state != CLOSED or self.pending.anything)
        self.flights = SingleFlight()
        self.sender = os.urandom(6).hex()
        self._coherence = coherence and self.local is not None and self.redis is not None
        self.listener: _coh.Listener | None = None
        self._keeper: LockKeeper | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self._engines: weakref.WeakSet[Engine] = weakref.WeakSet()
        self._init_lock = threading.Lock()
        self.stats_extra = Stats()
        self._socket_timeout = socket_timeout
        self._unreplicated_logged = -math.inf
        if self.local is not None:
            _watch_forks(self)

    def __repr__(self) -> str:
        tiers = [t for t, on in (("local", self.local), ("redis", self.redis)) if on]
        return f"<Cache namespace={self.namespace!r} tiers={'+'.join(tiers) or 'none'}>"

    # -- decorating -------------------------------------------------------
    def cached(
        self,
        ttl: float | _dt.timedelta | Callable[[Any], Any],
        key: str | Callable[..., str] | None = None,
        *,
        tags: Sequence[str] = (),
        exclude: Sequence[str] = (),
        version: str | int | None = None,
        lock: bool | None = None,
        early_refresh: bool | None = None,
        stale_if_error: float | None = None,
        stale_while_revalidate: bool | None = None,
        stale_on: Callable[[BaseException], bool] | None = None,
        retry: tenacity.BaseRetrying | None = None,
        should_cache: Callable[[Any], bool] | None = None,
        local: bool = True,
    ) -> Callable[[F], F]:
        """Cache a function, method or coroutine function.

        ``ttl``: seconds, a timedelta, or a callable of the result (so the
        lifetime can follow what came back). ``key``: a ``str.format`` template
        over the parameters, a callable, or None for a canonical encoding of all
        arguments. ``tags``: templates naming groups to invalidate together.
        ``retry``: a tenacity policy for the function itself.
        """
        from .decorator import make_wrapper

        def decorate(fn: F) -> F:
            engine = Engine(
                self, fn, ttl=ttl, key=key, tags=tags, exclude=exclude, version=version, lock=lock,
                early_refresh=early_refresh, stale_if_error=stale_if_error,
                stale_while_revalidate=stale_while_revalidate, stale_on=stale_on, retry=retry,
                should_cache=should_cache, local=local,
            )
            wrapped: F = make_wrapper(engine)
            return wrapped

        return decorate

    def _register(self, engine: Engine) -> None:
        self._engines.add(engine)

    # -- invalidation ---------------------------------------------------------
    def message(self, kind: str, payload: str = "") -> str:
        return _coh.message(self.sender, kind, payload)

    def _key_op(self, key: str, wait_ms: int = 0) -> Any:
        """A tombstone (so a computation that began before this cannot store its
        older value) and its announcement, in one round trip."""
        assert self.redis is not None
        ttl = self.options.tombstone_ttl
        data = self.codec.encode(None, created_at=self.timer(), ttl=ttl, tombstone=True, key=self.keyspace.entry(key))
        return self.redis.put_and_announce(
            self.keyspace.entry(key), data, int(ttl * 1000), self.keyspace.channel, self.message("k", key), wait_ms)

    def _bump_op(self, tags: Sequence[str], wait_ms: int = 0) -> Any:
        """Bump the tags' counters (the namespace's for no tags: a clear) and announce it."""
        assert self.redis is not None
        counters = [self.keyspace.tag(t) for t in tags] if tags else [self.keyspace.generation]
        message = self.message("t", _coh.SEP.join(tags)) if tags else self.message("c", "")
        return self.redis.bump_and_announce(counters, self.keyspace.channel, message, wait_ms)

    def _settle_op(self, owed: Owed) -> Any:
        """The replay of invalidations Redis has not acknowledged: fresh tombstones and counter bumps."""
        ops = [self._key_op(key) for key in owed.keys]
        if owed.tags:
            ops.append(self._bump_op(list(owed.tags)))
        if owed.clear_at is not None:
            ops.append(self._bump_op(()))
        return sequence(ops)

    def _probe(self) -> bool:
        """The background probe: PING and replay (the tier's), then owed lock releases."""
        assert self.redis is not None
        if not self.redis.probe():
            return False
        owed = self.pending.releases()
        if owed:
            tokens = list(owed)
            done = self.redis.run(sequence([self.redis.release(owed[t], t) for t in tokens]), "release owed locks")
            if done is not FAILED:
                self.pending.released({t: bool(r) for t, r in zip(tokens, done)}, time.monotonic())
        return True

    def _redis_invalidation(self, key: str | None, tags: Sequence[str]) -> Flow:
        """Send one invalidation (a key, tags, or with neither a clear); keep it to
        replay if Redis did not acknowledge it. Returns whether it did."""
        assert self.redis is not None
        issued = self.timer()
        wait_ms = self._replica_wait_ms()
        op = self._key_op(key, wait_ms) if key is not None else self._bump_op(tags, wait_ms)
        try:
            result = yield _Redis(op, "invalidate")
        except BaseException:  # strict mode's TierUnavailable, or the caller gave up: replay it anyway
            self._owe(issued, key, tags)
            raise
        if result is FAILED:
            self._owe(issued, key, tags)
            return False
        self._check_replicated(result, wait_ms)
        return True

    def owe_release(self, lock_key: str, token: bytes) -> None:
        """A lock call whose reply was lost: release it, token-checked, as soon as Redis answers."""
        self.pending.release_later(lock_key, token)
        self.stats_extra.locks_owed += 1
        self._kick()

    def _owe(self, issued: float, key: str | None, tags: Sequence[str]) -> None:
        self.pending.add(issued, key=key, tags=tuple(tags), clear=key is None and not tags)
        self.stats_extra.invalidations_pending += 1
        log.warning("an invalidation did not reach Redis: kept, and replayed as soon as Redis answers")
        self._kick()

    def _replica_wait_ms(self) -> int:
        """How long an invalidation waits (Redis WAIT, in its own pipeline) for a
        replica to hold it: replication is asynchronous, and a primary that fails
        over before passing it on would hand the old value back to everyone until
        its TTL. Under Sentinel by default; never on a cluster, whose pipelines
        span nodes."""
        assert self.redis is not None
        wait = self.options.replica_wait
        topology = self.redis.topology
        if wait is None:
            wait = min(DEFAULT_REPLICA_WAIT, self._socket_timeout / 2) if topology == "sentinel" else 0.0
        return 0 if wait <= 0 or topology == "cluster" else max(1, int(wait * 1000))

    def _check_replicated(self, result: Any, wait_ms: int) -> None:
        if not wait_ms or result is FAILED:  # a failed invalidation is a Redis error, counted as such
            return
        if not result or not result[-1]:
            self.stats_extra.unreplicated += 1
            now = time.monotonic()
            if now - self._unreplicated_logged >= 60.0:
                self._unreplicated_logged = now
                log.warning("invalidation not acknowledged by a replica within %d ms: a failover now would "
                            "serve the old value until its TTL (stats: unreplicated)", wait_ms)

    def _local_forget(self, key: str | None = None, tags: Sequence[str] = (), everything: bool = False) -> None:
        if key is not None:
            self.flights.forget(key)
        else:
            self.flights.forget_all()  # a computation in flight may depend on these tags
        if self.local is not None:
            if everything:
                self.local.clear()
            elif key is not None:
                self.local.delete(key)
            else:
                self.local.delete_tags(tags)

    def _invalidation(self, key: str | None = None, tags: Sequence[str] = (), everything: bool = False) -> Flow:
        """Forget locally, change Redis, forget locally again: a read that began in
        between may have refilled this process's local tier from the old Redis
        state, and our own announcement is not delivered back to us. Returns
        whether Redis acknowledged it (True without a Redis tier)."""
        self._local_forget(key, tags, everything)
        if self.redis is None:
            return True
        acked = yield from self._redis_invalidation(key, tags)
        self._local_forget(key, tags, everything)
        return acked

    def key_invalidation(self, key: str) -> Flow:
        return self._invalidation(key=key)

    def _tags_flow(self, tags: Iterable[str]) -> Flow:
        tags = [t for t in tags]
        for t in tags:
            _coh.check_tag(t)
        if not tags:
            return _nothing()  # no tags is not a clear
        return self._invalidation(tags=tags)

    def _clear_flow(self) -> Flow:
        return self._invalidation(everything=True)

    # Each returns whether Redis acknowledged the invalidation. False: it is kept and
    # replayed the moment Redis answers (see `pending`); this process meanwhile serves
    # nothing older. Strict mode raises TierUnavailable instead (and still replays).
    def invalidate(self, key: str) -> bool:
        """Drop one entry by its full key (as ``fn.cache_key(...)`` returns it) everywhere."""
        return bool(self._drive(self.key_invalidation(key)))

    async def ainvalidate(self, key: str) -> bool:
        return bool(await self._adrive(self.key_invalidation(key)))

    def invalidate_tags(self, *tags: str) -> bool:
        """Every entry computed under one of these tags becomes a miss, in every process (O(1) per tag)."""
        return bool(self._drive(self._tags_flow(tags)))

    async def ainvalidate_tags(self, *tags: str) -> bool:
        return bool(await self._adrive(self._tags_flow(tags)))

    def clear(self) -> bool:
        """Forget the whole namespace in every process, in O(1): bumps its generation."""
        return bool(self._drive(self._clear_flow()))

    async def aclear(self) -> bool:
        return bool(await self._adrive(self._clear_flow()))

    def replay_pending(self, timeout: float = 1.0) -> bool:
        """Block up to ``timeout`` seconds until every invalidation this process owes
        Redis has been replayed; True when nothing is owed. For a caller that must
        know before going on (a deploy step, a test); callers never block otherwise."""
        deadline = time.monotonic() + _seconds(timeout, "timeout")
        while self.pending.owed:
            if self.redis is None or time.monotonic() >= deadline:
                return False
            self.redis.probe()
            if self.pending.owed:
                self.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return True

    def _drive(self, flow: Flow) -> Any:
        return drive(flow, lambda op: self.redis.run(op.op, op.what) if self.redis else FAILED)

    async def _adrive(self, flow: Flow) -> Any:
        async def perform(op: Any) -> Any:
            return await self.redis.arun(op.op, op.what) if self.redis else FAILED

        return await adrive(flow, perform)

    # -- background machinery, started on first use ---------------------------
    def ensure_listener(self) -> None:
        if not self._coherence:
            return
        listener = self.listener
        if listener is None:
            with self._init_lock:
                if self.listener is None:
                    assert self.redis is not None and self.local is not None
                    tier = self.redis
                    self.listener = _coh.Listener(
                        lambda: tier.client().pubsub(), self.keyspace.channel, self.local, self.sender, flights=self.flights,
                        on_event=self._listener_event,
                    )
                listener = self.listener
        listener.ensure_started()

    @property
    def lock_keeper(self) -> LockKeeper:
        if self._keeper is None:
            with self._init_lock:
                if self._keeper is None:
                    tier, timeout = self.redis, self.options.lock_timeout
                    assert tier is not None
                    self._keeper = LockKeeper(
                        lambda k, t: tier.run(tier.reacquire(k, t, int(timeout * 1000)), "extend lock"),
                        timeout / 3,
                    )
        return self._keeper

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

    # -- faults ---------------------------------------------------------------
    def _redis_error(self, exc: BaseException) -> None:
        self.stats_extra.redis_errors += 1

    def _kick(self) -> None:
        if self._prober is not None:
            self._prober.kick()

    def _listener_event(self, kind: str) -> None:
        if kind == "connected" and (self.pending.anything or (self.redis is not None and self.redis.breaker.state != CLOSED)):
            self._kick()  # Redis answers again: recover now, not at the next timer

    def _breaker_moved(self, old: str, new: str) -> None:
        if new == OPEN:
            self._kick()
        if new == CLOSED and self.local is not None:
            # Invalidations sent while we could not reach Redis never reached us.
            log.info("redis is back: flushing the local tier")
            self.local.clear()

    # -- introspection --------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        total = Stats()
        total.merge(self.stats_extra)
        functions = {}
        for engine in list(self._engines):
            total.merge(engine.stats)
            functions[engine.name] = engine.stats.snapshot()
        out = total.snapshot()
        out["functions"] = functions
        out["local_size"] = len(self.local) if self.local is not None else None
        if self.redis is not None:
            b = self.redis.breaker
            out["breaker"] = {"state": b.state, "transitions": dict(b.transitions), "rejected": b.rejected}
            out["pending"] = self.pending.summary()
        if self.listener is not None:
            out["coherence"] = {
                "connected": self.listener.connected.is_set(),
                "reconnects": self.listener.reconnects,
                "received": self.listener.received,
                "ignored": self.listener.ignored,
            }
        return out

    def _after_fork(self) -> None:
        """In a forked child no listener runs until the first call that reaches Redis, so
        inherited local entries would miss every invalidation: drop them (and the
        in-flight table, whose lock a parent thread may have held at the fork)."""
        self.flights = SingleFlight()
        if self.listener is not None:
            self.listener.flights = self.flights
        if self.local is not None:
            self.local._lock = threading.Lock()
            self.local.clear()

    def close(self) -> None:
        """Stop the listener and the refresh threads (the cache stays usable; they restart on demand)."""
        if self.listener is not None:
            self.listener.stop()
            self.listener = None
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None


_forkable: weakref.WeakSet[Cache] = weakref.WeakSet()
_fork_hook = False


def _watch_forks(cache: Cache) -> None:
    global _fork_hook
    _forkable.add(cache)
    if not _fork_hook and hasattr(os, "register_at_fork"):
        _fork_hook = True
        os.register_at_fork(after_in_child=_after_fork_in_child)


def _after_fork_in_child() -> None:
    for cache in list(_forkable):
        cache._after_fork()


def _nothing() -> Flow:
    return True
    yield  # a generator that sends nothing


def _log_failure(future: Any) -> None:
    if future.cancelled():
        return
    exc = future.exception()
    if exc is not None:
        log.warning("background refresh failed: %s: %s", type(exc).__name__, exc)
