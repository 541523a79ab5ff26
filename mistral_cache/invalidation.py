"""Key, tag and namespace invalidation, written once as flows (see :mod:`.flow`).

An invalidation forgets locally, changes Redis (a tombstone, or a counter bump)
with its announcement in the same round trip, then forgets locally again: a read
that began in between may have refilled the local tier from the old Redis state,
and our own announcement is not delivered back to us. One that Redis does not
acknowledge is kept in :class:`~.pending.Pending` and replayed (see there).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from . import coherence
from .flow import Flow, RedisCall, returns
from .generations import Generations
from .observability.stats import Stats
from .pending import Owed, Pending
from .serializers import Codec
from .stampede import SingleFlight
from .tiers.local import LocalTier
from .tiers.redis import FAILED, Keyspace, Op, RedisTier, sequence

__all__ = ["Invalidator", "DEFAULT_REPLICA_WAIT"]

log = logging.getLogger("mistral_cache")

#: Seconds an invalidation waits for a replica's acknowledgement under Sentinel.
DEFAULT_REPLICA_WAIT = 0.1


class Invalidator:
    """The invalidation flows of one cache, and the replay of what Redis missed."""

    def __init__(
        self,
        *,
        keyspace: Keyspace,
        codec: Codec,
        redis: RedisTier | None,
        local: LocalTier | None,
        flights: SingleFlight,
        sender: str,
        tombstone_ttl: float,
        replica_wait: float | None,
        socket_timeout: float,
        timer: Callable[[], float],
        stats: Stats,
        kick: Callable[[], None],
        generations: Generations,
    ) -> None:
        self.keyspace, self.codec, self.redis, self.local, self.flights = keyspace, codec, redis, local, flights
        self.sender, self.tombstone_ttl, self.timer, self.stats, self.kick = sender, tombstone_ttl, timer, stats, kick
        self.pending = Pending()
        self.generations = generations
        self._wait_ms = self._replica_wait_ms(replica_wait, socket_timeout)
        self._unreplicated_logged = -math.inf

    # -- the flows ----------------------------------------------------------------
    def key(self, key: str) -> Flow:
        return self._invalidation(key=key)

    def tags(self, tags: Iterable[str]) -> Flow:
        tags = list(tags)
        for t in tags:
            coherence.check_tag(t)
        return self._invalidation(tags=tags) if tags else returns(True)  # no tags is not a clear

    def clear(self) -> Flow:
        return self._invalidation(everything=True)

    def _invalidation(self, key: str | None = None, tags: Sequence[str] = (), everything: bool = False) -> Flow:
        """Returns whether Redis acknowledged it (True without a Redis tier)."""
        self._forget(key, tags, everything)
        if self.redis is None:
            return True
        acked = yield from self._send(key, tags)
        self._forget(key, tags, everything)
        return acked

    def _send(self, key: str | None, tags: Sequence[str]) -> Flow:
        """Send one invalidation (a key, tags, or with neither a clear); keep it to
        replay if Redis did not acknowledge it."""
        issued = self.timer()
        op = self._key_op(key, self._wait_ms) if key is not None else self._bump_op(tags, self._wait_ms)
        try:
            result = yield RedisCall(op, "invalidate")
        except BaseException:  # strict mode's TierUnavailable, or the caller gave up: replay it anyway
            self._owe(issued, key, tags)
            raise
        if result is FAILED:
            self._owe(issued, key, tags)
            return False
        self._check_replicated(result)
        return True

    def _forget(self, key: str | None, tags: Sequence[str], everything: bool) -> None:
        if key is not None:
            self.flights.forget(key)
        else:
            self.flights.forget_all()  # a computation in flight may depend on these tags
            self.generations.clear()  # and held counter values are about to be outdated
        if self.local is not None:
            if everything:
                self.local.clear()
            elif key is not None:
                self.local.delete(key)
            else:
                self.local.delete_tags(tags)

    # -- Redis operations --------------------------------------------------------
    def message(self, kind: str, payload: str = "") -> str:
        return coherence.message(self.sender, kind, payload)

    def _key_op(self, key: str, wait_ms: int = 0) -> Op:
        """A tombstone (so a computation that began before this cannot store its
        older value) and its announcement, in one round trip."""
        assert self.redis is not None
        ttl, entry = self.tombstone_ttl, self.keyspace.entry(key)
        data = self.codec.encode(None, created_at=self.timer(), ttl=ttl, tombstone=True, key=entry)
        return self.redis.put_and_announce(entry, data, int(ttl * 1000), self.keyspace.channel, self.message("k", key), wait_ms)

    def _bump_op(self, tags: Sequence[str], wait_ms: int = 0) -> Op:
        """Bump the tags' counters (the namespace's for no tags: a clear) and announce it."""
        assert self.redis is not None
        counters = [self.keyspace.tag(t) for t in tags] if tags else [self.keyspace.generation]
        message = self.message("t", coherence.SEP.join(tags)) if tags else self.message("c", "")
        return self.redis.bump_and_announce(counters, self.keyspace.channel, message, wait_ms)

    def settle_op(self, owed: Owed) -> Op:
        """The replay of invalidations Redis has not acknowledged: fresh tombstones and counter bumps."""
        ops = [self._key_op(key) for key in owed.keys]
        if owed.tags:
            ops.append(self._bump_op(list(owed.tags)))
        if owed.clear_at is not None:
            ops.append(self._bump_op(()))
        if owed.tags or owed.clear_at is not None:
            ops.append(lambda c: self.generations.clear())  # after the bumps: values read before them are old
        return sequence(ops)

    # -- what Redis has not acknowledged ------------------------------------------
    def _owe(self, issued: float, key: str | None, tags: Sequence[str]) -> None:
        self.pending.add(issued, key=key, tags=tuple(tags), clear=key is None and not tags)
        self.stats.invalidations_pending += 1
        log.warning("an invalidation did not reach Redis: kept, and replayed as soon as Redis answers")
        self.kick()

    def owe_release(self, lock_key: str, token: bytes) -> None:
        """A lock call whose reply was lost: release it, token-checked, as soon as Redis answers."""
        self.pending.release_later(lock_key, token)
        self.stats.locks_owed += 1
        self.kick()

    def probe(self) -> bool:
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

    # -- replicas (Sentinel) ----------------------------------------------------------
    def _replica_wait_ms(self, wait: float | None, socket_timeout: float) -> int:
        """How long an invalidation waits (Redis WAIT, in its own pipeline) for a
        replica to hold it: replication is asynchronous, and a primary that fails
        over before passing it on would hand the old value back to everyone until
        its TTL. Under Sentinel by default; never on a cluster, whose pipelines
        span nodes."""
        if self.redis is None:
            return 0
        topology = self.redis.topology
        if wait is None:
            wait = min(DEFAULT_REPLICA_WAIT, socket_timeout / 2) if topology == "sentinel" else 0.0
        return 0 if wait <= 0 or topology == "cluster" else max(1, int(wait * 1000))

    def _check_replicated(self, result: Any) -> None:
        if not self._wait_ms:
            return
        if not result or not result[-1]:
            self.stats.unreplicated += 1
            now = time.monotonic()
            if now - self._unreplicated_logged >= 60.0:
                self._unreplicated_logged = now
                log.warning("invalidation not acknowledged by a replica within %d ms: a failover now would "
                            "serve the old value until its TTL (stats: unreplicated)", self._wait_ms)
