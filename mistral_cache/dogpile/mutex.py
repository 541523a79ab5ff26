"""A dogpile ``CacheMutex`` on the cache's Redis lock: one creator per key across
processes and hosts, released token-checked, extended while held.

Why not redis-py's ``Lock`` (as ``dogpile.cache.redis`` does): ours runs through
the tier's retry policy and circuit breaker, so a sick Redis makes the mutex fail
open (the caller computes) instead of raising into the service; and one thread per
backend keeps every held lock alive (the keeper the Cache's own locks have), so a
slow creator keeps its lock while a dead holder's lock still expires after
``RedisLock.timeout``.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from dogpile.cache.api import CacheMutex

from ..exceptions import LockTimeout
from ..policies import RedisLock
from ..stampede import LockKeeper
from ..tiers.redis import FAILED, RedisTier

__all__ = ["DistributedMutex", "LockExtender"]

#: Polling pause while another process holds the lock: doubles up to the second value.
POLL = (0.005, 0.05)


class LockExtender(LockKeeper):
    """The core's :class:`~mistral_cache.stampede.LockKeeper` (one daemon thread
    resetting each held lock's expiry every ``timeout / 3``) on the tier's
    token-checked reacquire script, one per backend. Only a refused extension is
    a lost lock: Redis failing is not (the lock expires or the mutex failed open)."""

    def __init__(self, tier: RedisTier, timeout: float) -> None:
        timeout_ms = int(timeout * 1000)

        def extend(lock_key: str, token: bytes) -> bool:
            got = tier.run(tier.reacquire(lock_key, token, timeout_ms), "extend lock")
            return got is FAILED or bool(got)

        super().__init__(extend, timeout / 3)


class DistributedMutex(CacheMutex):
    """dogpile's mutex for one key: a ``threading.Lock`` (threads of this process
    queue locally, not on Redis) and then the Redis lock.

    ``acquire(wait=False)`` never waits. ``acquire()`` polls Redis up to
    ``RedisLock.wait``, then follows ``on_timeout``: ``"compute"`` returns True
    without the Redis lock, ``"raise"`` raises :class:`~mistral_cache.LockTimeout`.
    Redis failing (or the breaker open) also returns True: fail open, as the Cache.
    """

    def __init__(self, tier: RedisTier, lock_key: str, entry_key: str, policy: RedisLock, extender: LockExtender) -> None:
        self._tier, self._key, self._entry, self._policy, self._extender = tier, lock_key, entry_key, policy, extender
        self._local = threading.Lock()
        self._token: bytes | None = None
        self.failed_open = 0  # acquisitions granted without the Redis lock

    def _try(self, token: bytes) -> Any:
        res = self._tier.run(self._tier.acquire(self._key, token, int(self._policy.timeout * 1000), [self._entry]), "dogpile lock")
        return res if res is FAILED else bool(res[0])

    def acquire(self, wait: bool = True) -> bool:
        if not self._local.acquire(wait):
            return False
        keep = False
        try:
            token = os.urandom(16)
            deadline, pause = time.monotonic() + self._policy.wait, POLL[0]
            while True:
                got = self._try(token)
                if got is FAILED:
                    self.failed_open += 1
                    keep = True
                    return True
                if got:
                    self._token = token
                    self._extender.add(self._key, token)
                    keep = True
                    return True
                if not wait:
                    return False
                if time.monotonic() >= deadline:
                    if self._policy.on_timeout == "raise":
                        raise LockTimeout(f"waited {self._policy.wait}s for the dogpile lock {self._key}", key=self._key)
                    self.failed_open += 1
                    keep = True
                    return True
                time.sleep(pause)
                pause = min(pause * 2, POLL[1])
        finally:
            if not keep:
                self._local.release()

    def release(self) -> None:
        token, self._token = self._token, None
        try:
            if token is not None:
                self._extender.remove(token)
                self._tier.run(self._tier.release(self._key, token), "dogpile unlock")  # lost: it expires after timeout
        finally:
            self._local.release()

    def locked(self) -> bool:
        if self._local.locked():
            return True
        res = self._tier.run(lambda c: c.exists(self._key), "dogpile locked")
        return res is not FAILED and bool(res)
