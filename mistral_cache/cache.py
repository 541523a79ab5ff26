"""The facade: :class:`Cache` builds the per-cache services (:mod:`.runtime`) and,
for each decorated function, an :class:`~.engine.Engine` and its wrapper; it
invalidates, clears, reports and closes."""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import tenacity

from .engine import Engine
from .exceptions import ConfigurationError
from .observability.stats import gather
from .policies import EarlyRefresh, RedisLock, StaleIfError, seconds
from .resilience import CircuitBreaker
from .runtime import Runtime, Settings
from .serializers import Codec, Serializer
from .tiers.local import LocalTier
from .tiers.redis import RedisTier
from .wrappers import make_wrapper

__all__ = ["Cache"]

F = TypeVar("F", bound=Callable[..., Any])


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
        the_lock = RedisLock(lock_timeout, lock_wait, on_lock_timeout)  # type: ignore[arg-type]
        if replica_wait is not None and seconds(replica_wait, "replica_wait") >= socket_timeout:
            raise ConfigurationError(
                f"replica_wait ({replica_wait!r}) must be shorter than socket_timeout ({socket_timeout!r}): "
                "a WAIT that outlives the socket would count as a Redis failure")
        self.namespace = namespace
        codec = Codec(serializer, secret=secret, compress_threshold=compress_threshold, max_value_size=max_value_size)
        local_tier = LocalTier(local_maxsize, max_bytes=local_max_bytes) if (local_maxsize or local_max_bytes) else None
        tier: RedisTier | None = None
        if redis_url is not None or redis is not None or async_redis is not None:
            tier = RedisTier(
                redis_url, client=redis, async_client=async_redis, breaker=breaker, retry=redis_retry,
                socket_timeout=socket_timeout, connect_timeout=connect_timeout, strict=strict,
                on_error=self._redis_error,
            )
        stale_seconds = seconds(stale_if_error, "stale_if_error", forever=True)
        settings = Settings(
            local_ttl=seconds(local_ttl, "local_ttl") or None,
            local_max_bytes=local_max_bytes,
            lock=the_lock if lock else None,
            refresh=EarlyRefresh(beta, stale_while_revalidate) if early_refresh else None,
            stale=StaleIfError(stale_seconds) if stale_seconds else None,
            flight_wait=the_lock.wait,
            on_flight_timeout=the_lock.on_timeout,
            tombstone_ttl=max(60.0, 2 * the_lock.timeout),
        )
        self._lock_defaults = the_lock
        self._defaults: dict[str, Any] = {
            "lock": lock, "early_refresh": early_refresh, "beta": beta, "stale_while_revalidate": stale_while_revalidate,
            "stale_if_error": stale_seconds,
        }
        self.runtime = Runtime(
            namespace=namespace, codec=codec, local=local_tier, redis=tier, settings=settings, coherence_on=coherence,
            replica_wait=None if replica_wait is None else seconds(replica_wait, "replica_wait"),
            socket_timeout=socket_timeout, timer=timer, sleep=sleep,
        )
        #: Invalidations and lock releases Redis has not acknowledged (see module pending).
        self.pending = self.runtime.pending
        self.keyspace, self.codec, self.local, self.redis = self.runtime.keyspace, codec, local_tier, tier
        self.timer = timer

    def __repr__(self) -> str:
        tiers = [t for t, on in (("local", self.local), ("redis", self.redis)) if on]
        return f"<Cache namespace={self.namespace!r} tiers={'+'.join(tiers) or 'none'}>"

    def _redis_error(self, exc: BaseException) -> None:
        self.runtime.stats.redis_errors += 1

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

        ``ttl``: seconds, a timedelta, a callable of the result (so the lifetime can
        follow what came back), or a :class:`~mistral_cache.api.TTLPolicy`. ``key``:
        a template over the parameters, a callable, or None for a canonical encoding
        of all arguments. ``tags``: templates naming groups to invalidate together.
        ``retry``: a tenacity policy for the function itself.
        """
        d = self._defaults
        early = d["early_refresh"] if early_refresh is None else early_refresh
        swr = d["stale_while_revalidate"] if stale_while_revalidate is None else stale_while_revalidate
        refresh = EarlyRefresh(d["beta"], swr) if early else None
        stale_s = d["stale_if_error"] if stale_if_error is None else seconds(stale_if_error, "stale_if_error", forever=True)
        stale = (StaleIfError(stale_s, stale_on) if stale_on is not None else StaleIfError(stale_s)) if stale_s else None
        the_lock = self._lock_defaults if (d["lock"] if lock is None else lock) else None

        def decorate(fn: F) -> F:
            engine = Engine(
                self.runtime, fn, ttl=ttl, key=key, tags=tags, exclude=exclude, version=version, lock=the_lock,
                refresh=refresh, stale=stale, retry=retry, should_cache=should_cache, local=local,
            )
            wrapped: Any = make_wrapper(engine)
            wrapped.cache = self
            out: F = wrapped
            return out

        return decorate

    # -- invalidation ---------------------------------------------------------
    # Each returns whether Redis acknowledged the invalidation. False: it is kept and
    # replayed the moment Redis answers (see `pending`); this process meanwhile serves
    # nothing older. Strict mode raises TierUnavailable instead (and still replays).
    def invalidate(self, key: str) -> bool:
        """Drop one entry by its full key (as ``fn.cache_key(...)`` returns it) everywhere."""
        return bool(self.runtime.drive(self.runtime.invalidator.key(key)))

    async def ainvalidate(self, key: str) -> bool:
        return bool(await self.runtime.adrive(self.runtime.invalidator.key(key)))

    def invalidate_tags(self, *tags: str) -> bool:
        """Every entry computed under one of these tags becomes a miss, in every process (O(1) per tag)."""
        return bool(self.runtime.drive(self.runtime.invalidator.tags(tags)))

    async def ainvalidate_tags(self, *tags: str) -> bool:
        return bool(await self.runtime.adrive(self.runtime.invalidator.tags(tags)))

    def clear(self) -> bool:
        """Forget the whole namespace in every process, in O(1): bumps its generation."""
        return bool(self.runtime.drive(self.runtime.invalidator.clear()))

    async def aclear(self) -> bool:
        return bool(await self.runtime.adrive(self.runtime.invalidator.clear()))

    def replay_pending(self, timeout: float | _dt.timedelta = 1.0) -> bool:
        """Block up to ``timeout`` seconds until every invalidation this process owes
        Redis has been replayed; True when nothing is owed. For a caller that must
        know before going on (a deploy step, a test); callers never block otherwise."""
        return self.runtime.replay_pending(seconds(timeout, "timeout"))

    # -- introspection --------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        rt = self.runtime
        out = gather(rt.stats, rt.functions).snapshot()
        out["local_size"] = len(self.local) if self.local is not None else None
        if self.redis is not None:
            b = self.redis.breaker
            out["breaker"] = {"state": b.state, "transitions": dict(b.transitions), "rejected": b.rejected}
            out["pending"] = self.pending.summary()
        listener = rt.listener
        if listener is not None:
            out["coherence"] = {
                "connected": listener.connected.is_set(),
                "reconnects": listener.reconnects,
                "received": listener.received,
                "ignored": listener.ignored,
            }
        return out

    def ensure_listener(self) -> None:
        """Subscribe to invalidations now rather than at the first Redis call (for a
        process that wants coherence from its start, and for tests)."""
        self.runtime.ensure_listener()

    @property
    def listener(self) -> Any:
        """The invalidation listener, once started (None before the first Redis call)."""
        return self.runtime.listener

    def close(self) -> None:
        """Stop the listener and the refresh threads (the cache stays usable; they restart on demand)."""
        self.runtime.close()
