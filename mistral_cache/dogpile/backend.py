"""``MistralBackend``: the dogpile.cache backend ``mistral_cache``, the Cache's two
tiers (an in-process LRU in front of Redis) under a dogpile region.

Why a backend of its own rather than a region on ``dogpile.cache.redis``: every
hit there is a network round trip, and ``delete`` / ``region.invalidate()`` stay
in one process. Here a local hit does no I/O; a write or delete is announced on
the namespace's pub/sub channel, so every process drops its local copy; and the
region's hard and soft invalidation are generations in Redis (below).

Entries are the Cache's envelopes: the CachedValue's payload through the codec
(json by default; ``pickle`` with ``secret``, signed), its metadata dict as is in
the envelope's meta (``d``), beside the region generations it was written under
(``g``). The local tier holds the CachedValue object itself.

Region generations: two counters in Redis, ``hard`` and ``soft``
(:data:`HARD_TAG`, :data:`SOFT_TAG`, counted as the Cache counts tags). Every
read fetches them with the entries, in the same MGET. An entry written under an
older ``hard`` is a miss; one under an older ``soft`` comes back with its creation
time negated (``ct < 0``), which dogpile treats as expired: one caller regenerates
under the mutex while the others are served the old value. Bumping a counter is
``cache.invalidate_tags(tag)``: announced (every local tier drops its entries),
and replayed when Redis did not acknowledge it. :class:`RegionInvalidator` makes
``region.invalidate(hard=...)`` do that.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dogpile.cache.api import NO_VALUE, CacheBackend, CachedValue

from .. import coherence
from ..cache import Cache
from ..exceptions import ConfigurationError, SerializationError
from ..policies import Local, RedisLock, Timeouts
from ..serializers import Codec
from ..tiers.redis import FAILED, MAX_ENTRY_TTL
from .copies import delete_announced, fill, live_hits, live_value
from .mutex import DistributedMutex, LockExtender
from .ops import write_many

__all__ = ["MistralBackend", "HARD_TAG", "SOFT_TAG", "soft_ct"]

log = logging.getLogger("mistral_cache.dogpile")

#: Tags whose counters are the region's hard and soft generations.
HARD_TAG, SOFT_TAG = "dogpile.region.hard", "dogpile.region.soft"
_TAGS = (HARD_TAG, SOFT_TAG)


def soft_ct(ct: float) -> float:
    """The creation time a soft-invalidated value is handed to dogpile with: negative,
    so expired for any expiration time, and recognisable by :class:`RegionInvalidator`."""
    return -abs(ct) if ct else -1.0


def _number(args: dict[str, Any], name: str, default: float | None, kind: type = float) -> Any:
    value = args.pop(name, default)
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"mistral_cache backend: {name} must be a number, got {value!r}") from None


def _flag(args: dict[str, Any], name: str, default: bool) -> bool:
    value = args.pop(name, default)
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _gens(values: Sequence[Any]) -> list[str]:
    """Counter values as the Cache reads them (bytes as latin-1, missing as "0")."""
    return [v.decode("latin-1") if isinstance(v, bytes) else "0" if v is None else str(v) for v in values]


class MistralBackend(CacheBackend):
    """``make_region().configure("mistral_cache", arguments={...})``.

    Arguments (strings are accepted, as oslo-style configuration passes them):
    ``redis_url`` (or ``url``: the Cache's URL forms, ``redis://``, ``rediss://``,
    ``unix://``, ``redis+sentinel://h:p,h:p/service``, ``redis+cluster://h:p,h:p``),
    ``namespace`` (one per region: a region's invalidation covers its namespace),
    ``local_maxsize`` (0: no local tier), ``local_max_bytes``, ``local_ttl``
    (seconds a local copy is served without asking Redis; bounds staleness if the
    pub/sub link is lost), ``coherence``, ``serializer`` (json, msgpack, pickle),
    ``secret`` (HMAC key; required for pickle), ``lock_timeout``, ``lock_wait``,
    ``lock_on_timeout`` (compute, raise), ``distributed_lock`` (False: dogpile's
    thread lock), ``redis_expiration_time`` (Redis TTL of an entry, at most 30
    days, which is also the default), ``socket_timeout``, ``connect_timeout``,
    ``strict`` (raise instead of failing open). Unknown arguments are ignored, as
    dogpile's own backends do. The argument dict is never modified.
    """

    def __init__(self, arguments: Mapping[str, Any]) -> None:
        args = dict(arguments)
        url = args.pop("redis_url", None) or args.pop("url", None)
        if not url:
            raise ConfigurationError("mistral_cache backend: redis_url is required")
        maxsize = _number(args, "local_maxsize", 4096, int) or 0
        max_bytes = _number(args, "local_max_bytes", None, int)
        self.local_ttl = _number(args, "local_ttl", 60.0) or math.inf
        local = Local(maxsize, max_bytes, None, _flag(args, "coherence", True)) if maxsize else None
        secret = args.pop("secret", None)
        codec = Codec(args.pop("serializer", "json"), secret=secret or None)
        self.lock_policy = RedisLock(_number(args, "lock_timeout", 10.0), _number(args, "lock_wait", 30.0),
                                     args.pop("lock_on_timeout", "compute"))
        self.distributed_lock = _flag(args, "distributed_lock", True)
        expiry = _number(args, "redis_expiration_time", None) or MAX_ENTRY_TTL
        self.redis_ttl = min(expiry, MAX_ENTRY_TTL)
        timeouts = Timeouts(_number(args, "socket_timeout", 0.25), _number(args, "connect_timeout", 0.25))
        self.cache = Cache(str(url), namespace=str(args.pop("namespace", "dogpile")), local=local, codec=codec,
                           lock=self.lock_policy, refresh=None, stale=None, strict=_flag(args, "strict", False),
                           timeouts=timeouts)
        self.codec, self.keyspace, self.local = self.cache.codec, self.cache.keyspace, self.cache.local
        tier = self.cache.redis
        assert tier is not None
        self.tier = tier
        self.counters = [self.keyspace.tag(t) for t in _TAGS]
        # The Cache's sender id, so its own listener does not drop what this process
        # just wrote (hook wanted: a public Cache.sender or Cache.announce).
        self._sender: str = self.cache.runtime.sender
        self._gens: list[str] | None = None  # the region generations last read
        self._extender = LockExtender(tier, self.lock_policy.timeout)

    # -- dogpile's API ------------------------------------------------------------
    def has_lock_timeout(self) -> bool:
        return self.distributed_lock

    def get_mutex(self, key: str) -> DistributedMutex | None:
        if not self.distributed_lock:
            return None
        return DistributedMutex(self.tier, self.keyspace.lock(key), self.keyspace.entry(key), self.lock_policy, self._extender)

    def get(self, key: str) -> Any:
        value = live_value(self.local, key)
        if value is not NO_VALUE:
            return value
        return self.get_multi([key])[0]

    def get_multi(self, keys: Iterable[str]) -> list[Any]:
        """Local hits first; everything else, and the generations, in one MGET."""
        keys = list(keys)
        local = self.local
        out, missing = live_hits(local, keys)
        if not missing:
            return out
        self.cache.ensure_listener()
        since = local.begin() if local is not None else 0
        entry_keys = [self.keyspace.entry(keys[i]) for i in missing]
        res = self.tier.run(self.tier.read([*entry_keys, *self.counters]), "dogpile get")
        if res is FAILED:
            return out
        gens = self._gens = _gens(res[-2:])
        for j, i in enumerate(missing):
            out[i] = self._decode(keys[i], entry_keys[j], res[j], gens, since)
        return out

    def set(self, key: str, value: Any) -> None:
        self.set_multi({key: value})

    def set_multi(self, mapping: Mapping[str, Any]) -> None:
        """One round trip: the SETs, their announcements, and a re-read of the
        generations (a value written under generations that moved meanwhile is
        not kept locally: it was computed before an invalidation)."""
        if not mapping:
            return
        self.cache.ensure_listener()
        gens = self._gens
        if gens is None:
            res = self.tier.run(self.tier.read(self.counters), "dogpile generations")
            gens = self._gens = _gens(res) if res is not FAILED else ["0", "0"]
        local = self.local
        items, messages = [], []
        for key, value in mapping.items():
            entry_key = self.keyspace.entry(key)
            items.append((entry_key, self._encode(value, gens, entry_key)))
            messages.append(coherence.message(self._sender, "k", key))
            if local is not None:
                local.delete(key)  # the old value goes before the new one is known to have landed
        since = local.begin() if local is not None else 0
        res = self.tier.run(write_many(items, int(self.redis_ttl * 1000), self.keyspace.channel, messages, self.counters),
                            "dogpile set")
        if res is not FAILED:
            current = _gens(res)
            if current != gens:
                self._gens = current
                return
        if local is not None:  # also while Redis fails: the local tier keeps serving (until local_ttl)
            for key, value in mapping.items():
                self._fill(key, value, since)

    def delete(self, key: str) -> None:
        self.delete_multi([key])

    def delete_multi(self, keys: Iterable[str]) -> None:
        """One round trip (DEL and the announcements). If Redis does not acknowledge
        it, each key goes to the Cache's invalidation, which keeps it and replays it
        (a tombstone) as soon as Redis answers."""
        keys = list(keys)
        if not keys:
            return
        if not delete_announced(self.tier, self.local, keys, [self.keyspace.entry(k) for k in keys], self.keyspace.channel,
                                self._sender, "dogpile delete"):
            for key in keys:
                self.cache.invalidate(key)

    # -- the region's generations --------------------------------------------------
    def invalidate_region(self, hard: bool = True) -> bool:
        """Every value of this namespace is a miss (hard) or regenerated by one caller
        while the others keep the old one (soft), in every process. Returns whether
        Redis acknowledged it (if not, it is replayed when Redis answers)."""
        self._gens = None
        return self.cache.invalidate_tags(HARD_TAG if hard else SOFT_TAG)

    # -- envelopes -------------------------------------------------------------------
    def _encode(self, value: Any, gens: list[str], entry_key: str) -> bytes:
        meta: dict[str, Any] = {"g": gens}
        if isinstance(value, CachedValue):
            payload, created = value.payload, float(value.metadata.get("ct", 0.0))
            meta["d"] = dict(value.metadata)
        elif isinstance(value, bytes):  # get_serialized/set_serialized callers: kept as bytes
            payload, created, meta["b"] = value.decode("latin-1"), time.time(), 1
        else:
            payload, created, meta["o"] = value, time.time(), 1
        try:
            return self.codec.encode(payload, created_at=created, ttl=self.redis_ttl, meta=meta, key=entry_key)
        except ValueError as exc:  # over max_value_size
            raise SerializationError(str(exc), key=entry_key) from exc

    def _decode(self, key: str, entry_key: str, raw: Any, gens: list[str], since: int) -> Any:
        if raw is None:
            return NO_VALUE
        try:
            env = self.codec.decode(raw, key=entry_key)
        except SerializationError as exc:
            log.debug("unreadable entry %s: %s", entry_key, exc)
            return NO_VALUE
        meta, g = env.meta, env.meta.get("g")
        if env.tombstone or not isinstance(g, list) or len(g) != 2 or g[0] != gens[0]:
            return NO_VALUE  # deleted, not ours, or written before a hard invalidation
        if isinstance(meta.get("d"), dict):
            value: Any = CachedValue(env.value, meta["d"])
        elif meta.get("b") and isinstance(env.value, str):
            value = env.value.encode("latin-1")
        elif meta.get("o"):
            value = env.value
        else:
            return NO_VALUE
        if g[1] != gens[1]:  # written before a soft invalidation: expired, but servable while one regenerates
            if not isinstance(value, CachedValue):
                return NO_VALUE
            return CachedValue(value.payload, {**value.metadata, "ct": soft_ct(float(value.metadata.get("ct", 0.0)))})
        self._fill(key, value, since)
        return value

    def _fill(self, key: str, value: Any, since: int) -> None:
        fill(self.local, key, value, since, self.local_ttl, tags=_TAGS)  # tagged: a region invalidation drops it
