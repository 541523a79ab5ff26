"""oslo.cache without patching it: ``LocalTierProxy``, a dogpile ``ProxyBackend``
that puts the coherent in-process tier in front of ``dogpile.cache.redis`` or
``dogpile.cache.redis_sentinel``.

Why a proxy: oslo.cache's ``[cache] backend`` accepts only its fixed list of
names, but ``[cache] proxies`` imports any class, and ``configure_cache_region``
wraps the region's backend with it. So an operator writes::

    [cache]
    enabled = true
    backend = dogpile.cache.redis
    redis_server = 127.0.0.1:6379
    proxies = mistral_cache.oslo.LocalTierProxy

Values stay where and as ``dogpile.cache.redis`` keeps them (its keys, its
pickled bytes), so processes with and without the proxy share one Redis. What the
proxy adds, on the Redis client the wrapped backend made:

- reads: a local hit does no I/O; a miss reads through the wrapped backend;
- writes and deletes: one pipelined round trip with an announcement on
  ``mc:<namespace>:inv``, so every process's proxy drops its local copy;
- ``get_mutex``: the Cache's Redis lock (one creator per key across processes),
  where ``dogpile.cache.redis`` gives none unless ``distributed_lock`` is set;
- Redis down: reads miss and writes are dropped instead of raising, so callers
  get their creator's value (the breaker keeps a dead Redis from slowing them).
  For that the wrapped backend's clients lose redis-py's own retries (which back
  off for seconds per command) and get a connect timeout if they had none.
- A delete (or a write: it replaces what others hold) that Redis did not
  acknowledge is not dropped: it is kept and replayed, DEL and announcement, the
  moment Redis answers (a background probe, and ahead of this proxy's next
  command). Until then this process reads those keys as misses, never Redis's
  old value. Past ``max_owed`` kept keys a delete raises ``TierUnavailable`` (a
  write logs an error and still serves its value locally).

Settings are class attributes; a subclass changes them
(``proxies = mypkg.cache.NovaLocalTier`` with ``namespace = "nova"``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from dogpile.cache.api import NO_VALUE
from dogpile.cache.proxy import ProxyBackend
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import coherence
from .cache import Cache
from .dogpile.copies import delete_announced, drop, fill, live_hits, live_value
from .dogpile.mutex import DistributedMutex, LockExtender
from .dogpile.ops import delete_many, write_many
from .exceptions import ConfigurationError, TierUnavailable
from .policies import Local, RedisLock
from .resilience import Prober
from .tiers.redis import FAILED, RedisTier

__all__ = ["LocalTierProxy"]

log = logging.getLogger("mistral_cache.oslo")


def _fail_fast(client: Any) -> None:
    """redis-py's own retries off (its default backs off for seconds per command) and a
    connect timeout where none was set: the tier's retry policy and breaker decide."""
    client.set_retry(Retry(NoBackoff(), 0))
    kwargs = getattr(client.connection_pool, "connection_kwargs", None)
    if isinstance(kwargs, dict):
        kwargs["retry"] = Retry(NoBackoff(), 0)
        if kwargs.get("socket_connect_timeout") is None:
            kwargs["socket_connect_timeout"] = kwargs.get("socket_timeout") or 1.0


class LocalTierProxy(ProxyBackend):
    """The coherent local tier in front of dogpile's Redis backends (see the module)."""

    #: Names the pub/sub channel and the lock keys (``mc:<namespace>:...``).
    namespace = "oslo"
    #: Local entries (0: no local tier, only the lock and fail-open reads).
    local_maxsize = 4096
    #: Seconds a local copy is served without Redis (bounds staleness if pub/sub is lost).
    local_ttl = 60.0
    lock = RedisLock(timeout=10.0, wait=30.0)
    #: False: leave ``get_mutex`` to the wrapped backend.
    distributed_lock = True
    #: Deletes kept while Redis cannot be reached; one more raises instead of being kept.
    max_owed = 100_000

    cache: Cache
    tier: RedisTier

    def wrap(self, backend: Any) -> LocalTierProxy:
        super().wrap(backend)
        actual = backend
        while hasattr(actual, "proxied"):
            actual = actual.proxied
        client = getattr(actual, "writer_client", None)
        if client is None:
            raise ConfigurationError(
                f"LocalTierProxy wraps dogpile.cache.redis or dogpile.cache.redis_sentinel, not {type(actual).__name__}")
        self.actual = actual
        for c in {id(x): x for x in (client, getattr(actual, "reader_client", client))}.values():
            _fail_fast(c)
        local = Local(self.local_maxsize, None, None, True) if self.local_maxsize else None
        self.cache = Cache(redis=client, namespace=self.namespace, local=local, lock=self.lock, refresh=None)
        assert self.cache.redis is not None
        self.tier, self.local, self.keyspace = self.cache.redis, self.cache.local, self.cache.keyspace
        self._sender: str = self.cache.runtime.sender  # hook wanted: Cache.sender (see dogpile.backend)
        self._extender = LockExtender(self.tier, self.lock.timeout)
        self._owed: dict[str, float] = {}  # key -> when its delete failed
        self._owed_lock = threading.Lock()
        self._prober = Prober(lambda: self._replay(probe=True), lambda: bool(self._owed))
        return self

    # -- deletes Redis missed -------------------------------------------------------
    def _owe(self, keys: list[str], what: str = "delete") -> None:
        now = time.monotonic()
        with self._owed_lock:
            if len(self._owed.keys() | set(keys)) > self.max_owed:
                if what == "delete":
                    raise TierUnavailable(f"Redis is unreachable and {len(self._owed)} deletes already wait for it: "
                                          f"this one ({len(keys)} keys) cannot be kept")
                # a set is a fill as often as an update: its caller gets its value, the miss is said
                log.error("oslo %s of %d keys not kept for replay: %d deletes already wait for Redis; other "
                          "processes may serve the values it replaces up to local_ttl", what, len(keys), len(self._owed))
                return
            for key in keys:
                self._owed[key] = now
        log.warning("oslo %s of %d keys did not reach Redis: kept, and replayed as soon as it answers", what, len(keys))
        self._prober.kick()

    def _replay(self, probe: bool = False) -> bool:
        """DEL what Redis missed and announce it, in one round trip; True once nothing is
        owed. ``probe``: PING past the breaker first (the background thread's call)."""
        with self._owed_lock:
            owed = dict(self._owed)
        if not owed:
            return True
        if probe and not self.tier.probe():
            return False
        keys = list(owed)
        messages = [coherence.message(self._sender, "k", k) for k in keys]
        if self.tier.run(delete_many(keys, self.keyspace.channel, messages), "oslo replay") is FAILED:
            return False
        self._settle(owed)
        return not self._owed

    def _settle(self, done: Mapping[str, float]) -> None:
        """Forget the deletes in ``done`` unless one failed again since."""
        with self._owed_lock:
            for key, at in done.items():
                if self._owed.get(key, math.inf) <= at:
                    del self._owed[key]

    # -- reads ---------------------------------------------------------------------
    def get_serialized(self, key: str) -> Any:
        value = live_value(self.local, key)
        if value is not NO_VALUE:
            return value
        return self.get_serialized_multi([key])[0]

    def get_serialized_multi(self, keys: Iterable[str]) -> Any:
        keys = list(keys)
        local = self.local
        out, missing = live_hits(local, keys)
        if not missing:
            return out
        self.cache.ensure_listener()
        if self._owed and not self._replay():
            missing = [i for i in missing if keys[i] not in self._owed]  # a miss: Redis still has the old value
            if not missing:
                return out
        since = local.begin() if local is not None else 0
        wanted = [keys[i] for i in missing]
        res = self.tier.run(lambda c: self.proxied.get_serialized_multi(wanted), "oslo get")
        if res is FAILED:
            return out
        for i, value in zip(missing, res):
            if value is not None and value is not NO_VALUE:
                out[i] = value
                self._fill(keys[i], value, since)
        return out

    # Values the region did not serialise (a region given serializer=None) go the same way.
    def get(self, key: str) -> Any:
        return self.get_serialized(key)

    def get_multi(self, keys: Iterable[str]) -> Any:
        return self.get_serialized_multi(keys)

    # -- writes --------------------------------------------------------------------
    def set_serialized(self, key: str, value: Any) -> None:
        self.set_serialized_multi({key: value})

    def set_serialized_multi(self, mapping: Mapping[str, Any]) -> None:
        """SET (as the wrapped backend would: its ``redis_expiration_time``) and announce, in one round trip."""
        if not mapping:
            return
        self.cache.ensure_listener()
        local = self.local
        drop(local, mapping)
        since = local.begin() if local is not None else 0
        if self._owed:
            self._replay()
        started = time.monotonic()
        expiry = getattr(self.actual, "redis_expiration_time", 0) or 0
        messages = [coherence.message(self._sender, "k", k) for k in mapping]
        res = self.tier.run(write_many(list(mapping.items()), int(expiry * 1000) or None, self.keyspace.channel, messages),
                            "oslo set")
        if res is FAILED:  # others (and Redis) may keep the value this one replaces
            self._owe(list(mapping), "set")
        elif self._owed:
            self._settle(dict.fromkeys(mapping, started))  # the write replaced what was owed, and announced it
        for key, value in mapping.items():
            self._fill(key, value, since)

    def set(self, key: str, value: Any) -> None:
        self.set_serialized_multi({key: value})

    def set_multi(self, mapping: Mapping[str, Any]) -> None:
        self.set_serialized_multi(mapping)

    def delete(self, key: str) -> None:
        self.delete_multi([key])

    def delete_multi(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        if not keys:
            return
        if self._owed:
            self._replay()
        if not delete_announced(self.tier, self.local, keys, keys, self.keyspace.channel, self._sender, "oslo delete"):
            self._owe(keys)

    # -- the mutex -----------------------------------------------------------------------
    def get_mutex(self, key: str) -> Any:
        if not self.distributed_lock:
            return self.proxied.get_mutex(key)
        return DistributedMutex(self.tier, self.keyspace.lock(key), self.keyspace.entry(key), self.lock, self._extender)

    def _fill(self, key: str, value: Any, since: int) -> None:
        fill(self.local, key, value, since, self.local_ttl or math.inf, size=len(value) if isinstance(value, bytes) else 1)
