"""The facade: :class:`Cache` builds the per-cache services (:mod:`.runtime`) and,
for each decorated function, an :class:`~.engine.Engine` and its wrapper; it
invalidates, clears, reports and closes."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import tenacity

from .engine import Engine
from .exceptions import ConfigurationError
from .observability.stats import gather
from .policies import INHERIT, Clock, EarlyRefresh, Inherit, Local, RedisLock, StaleIfError, Timeouts, seconds
from .resilience import CircuitBreaker
from .runtime import Runtime, Settings
from .serializers import Codec
from .tiers.local import LocalTier
from .tiers.redis import RedisTier, is_async
from .wrappers import make_wrapper

__all__ = ["Cache"]

F = TypeVar("F", bound=Callable[..., Any])


class Cache:
    """A two-tier cache: an in-process LRU in front of Redis.

    ``redis_url=None`` (and no ``redis=``) keeps the local tier only; ``local=None``
    keeps Redis only. ``redis=``: a ready redis-py client, sync or asyncio, or a
    ``(sync, asyncio)`` pair. The policies are small objects (:mod:`.policies`);
    ``retry`` is a tenacity policy for Redis commands. Nothing connects, and no
    thread starts, until the first call that needs Redis.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        redis: Any = None,
        namespace: str = "default",
        local: Local | None = Local(),
        codec: Codec | None = None,
        lock: RedisLock | None = RedisLock(),
        refresh: EarlyRefresh | None = EarlyRefresh(),
        stale: StaleIfError | None = None,
        retry: tenacity.BaseRetrying | None = None,
        breaker: CircuitBreaker | None = None,
        strict: bool = False,
        timeouts: Timeouts = Timeouts(),
        clock: Clock = Clock(),
    ) -> None:
        for name, value, kind in (("local", local, Local), ("codec", codec, Codec), ("lock", lock, RedisLock),
                                  ("refresh", refresh, EarlyRefresh), ("stale", stale, StaleIfError)):
            if value is not None and not isinstance(value, kind):
                raise ConfigurationError(f"{name} must be a {kind.__name__} or None, got {value!r}")
        self.namespace = namespace
        codec = codec or Codec()
        local_tier = (LocalTier(local.maxsize, max_bytes=local.max_bytes, admission=local.admission)
                      if local is not None and (local.maxsize or local.max_bytes) else None)
        sync_client, async_client = _clients(redis)
        tier: RedisTier | None = None
        if redis_url is not None or redis is not None:
            tier = RedisTier(
                redis_url, client=sync_client, async_client=async_client, breaker=breaker, retry=retry,
                socket_timeout=timeouts.socket, connect_timeout=timeouts.connect, strict=strict,
                on_error=self._redis_error,
            )
        lock_settings = lock or RedisLock()  # a function may turn a lock on that the cache has off
        settings = Settings(
            local_ttl=local.ttl if local is not None else None,
            local_max_bytes=local.max_bytes if local is not None else None,
            lock=lock, refresh=refresh, stale=stale,
            flight_wait=lock_settings.wait,
            on_flight_timeout=lock_settings.on_timeout,
            tombstone_ttl=max(60.0, 2 * lock_settings.timeout),
        )
        self.runtime = Runtime(
            namespace=namespace, codec=codec, local=local_tier, redis=tier, settings=settings,
            coherence_on=local is not None and local.coherence, replica_wait=timeouts.replica_wait,
            socket_timeout=timeouts.socket, timer=clock.time, sleep=clock.sleep,
        )
        #: Invalidations and lock releases Redis has not acknowledged (see module pending).
        self.pending = self.runtime.pending
        self.keyspace, self.codec, self.local, self.redis = self.runtime.keyspace, codec, local_tier, tier
        self.timer = clock.time

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
        lock: RedisLock | None | Inherit = INHERIT,
        refresh: EarlyRefresh | None | Inherit = INHERIT,
        stale: StaleIfError | None | Inherit = INHERIT,
        retry: tenacity.BaseRetrying | None = None,
        should_cache: Callable[[Any], bool] | None = None,
        local: bool = True,
    ) -> Callable[[F], F]:
        """Cache a function, method or coroutine function.

        ``ttl``: seconds, a timedelta, a callable of the result (so the lifetime can
        follow what came back), or a :class:`~mistral_cache.api.TTLPolicy`. ``key``:
        a template over the parameters, a callable, or None for a canonical encoding
        of all arguments. ``tags``: templates naming groups to invalidate together.
        ``lock``, ``refresh``, ``stale``: this function's policy instead of the
        cache's (None: off). ``retry``: a tenacity policy for the function itself.
        ``local=False``: skip the local tier for this function.
        """
        d = self.runtime.settings
        the_lock = d.lock if isinstance(lock, Inherit) else lock
        the_refresh = d.refresh if isinstance(refresh, Inherit) else refresh
        the_stale = d.stale if isinstance(stale, Inherit) else stale

        def decorate(fn: F) -> F:
            engine = Engine(
                self.runtime, fn, ttl=ttl, key=key, tags=tags, exclude=exclude, version=version, lock=the_lock,
                refresh=the_refresh, stale=the_stale, retry=retry, should_cache=should_cache, local=local,
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


def _clients(redis: Any) -> tuple[Any, Any]:
    """``redis=``: one client (sync or asyncio) or a (sync, asyncio) pair."""
    if redis is None:
        return None, None
    if isinstance(redis, tuple):
        if len(redis) != 2:
            raise ConfigurationError(f"redis= takes a client or a (sync, asyncio) pair, got a tuple of {len(redis)}")
        return redis
    return (None, redis) if is_async(redis) else (redis, None)
