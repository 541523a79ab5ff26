"""What this process owes Redis: invalidations and lock releases that did not reach it.

(The flows that send invalidations, and record here what fails, are in
:mod:`mistral_cache.invalidation`.)

An invalidation that fails (Redis down, frozen, its reply lost, the breaker open)
is not dropped. It is kept here with the time it was issued and replayed the
moment Redis answers again, before this process sends anything else (the Redis
tier's *gate*), so no process reads the old entry back once Redis is up. Until
the replay is acknowledged, this process treats a Redis entry for a pending key
or tag created before the invalidation as a miss (read-your-own-write).

A lock request whose reply was lost may still have taken the lock on the server
(a frozen Redis runs it when it wakes); a release that failed leaves the lock
held. Either way the token is kept and released, token-checked, as soon as Redis
answers, so no other process waits out ``lock_timeout`` behind a lock nobody
owns. A release that finds no lock is repeated for :data:`RELEASE_GRACE` seconds:
the lost request may reach the server after the release does.

What is kept lives in this process only: a process that dies before the replay
loses it, and the entries it would have invalidated live until their TTL.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

__all__ = ["Pending", "Owed", "DEFAULT_LIMIT", "RELEASE_GRACE"]

#: Pending keys and tags kept before they collapse into one namespace-wide clear.
DEFAULT_LIMIT = 256
#: Seconds a lock release that Redis answered "not held" is still repeated.
RELEASE_GRACE = 1.0


@dataclass(frozen=True)
class Owed:
    """A snapshot of what is owed, replayed as one unit and then settled."""

    keys: dict[str, float] = field(default_factory=dict)
    tags: dict[str, float] = field(default_factory=dict)
    clear_at: float | None = None


class Pending:
    """A bounded, thread-safe record of what Redis has not acknowledged.

    ``owed`` (invalidations only) is a plain attribute, read without the lock
    before every Redis command: the common case costs one attribute load. Lock
    releases are not ``owed``: nothing this process reads depends on them, so
    they are sent by the background probe rather than ahead of every command.
    """

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"the pending-invalidation limit must be an int >= 1, got {limit!r}")
        self.limit = limit
        self._lock = threading.Lock()
        self._keys: dict[str, float] = {}
        self._tags: dict[str, float] = {}
        self._clear_at: float | None = None
        self._releases: dict[bytes, tuple[str, float | None]] = {}  # token -> (lock key, first answered "not held")
        self.owed = False
        self.collapsed = 0  # times the bound turned the pending set into a clear

    def __len__(self) -> int:
        return len(self._keys) + len(self._tags) + (self._clear_at is not None) + len(self._releases)

    @property
    def anything(self) -> bool:
        """Invalidations or lock releases still owed."""
        return self.owed or bool(self._releases)

    def add(self, at: float, *, key: str | None = None, tags: tuple[str, ...] = (), clear: bool = False) -> None:
        """Keep an invalidation issued at ``at`` (the cache's clock) until Redis acknowledges it."""
        with self._lock:
            if key is not None:
                self._keys[key] = max(at, self._keys.get(key, at))
            for tag in tags:
                self._tags[tag] = max(at, self._tags.get(tag, at))
            if clear:
                self._clear_at = max(at, self._clear_at or at)
            if len(self._keys) + len(self._tags) > self.limit:
                # One clear covers them all: it drops every entry, older or not.
                latest = max([*self._keys.values(), *self._tags.values()])
                self._clear_at = max(latest, self._clear_at or latest)
                self._keys.clear()
                self._tags.clear()
                self.collapsed += 1
            self.owed = True

    def release_later(self, lock_key: str, token: bytes) -> None:
        """A lock that may be held by a token this process no longer uses."""
        with self._lock:
            self._releases[token] = (lock_key, None)

    def releases(self) -> dict[bytes, str]:
        with self._lock:
            return {token: lock_key for token, (lock_key, _) in self._releases.items()}

    def released(self, freed: dict[bytes, bool], now: float) -> None:
        """Results of releases Redis answered: forget a token once it freed its lock,
        or :data:`RELEASE_GRACE` seconds after Redis first said it held none."""
        with self._lock:
            for token, ok in freed.items():
                held = self._releases.get(token)
                if held is None:
                    continue
                lock_key, answered = held
                if ok or (answered is not None and now - answered >= RELEASE_GRACE):
                    del self._releases[token]
                elif answered is None:
                    self._releases[token] = (lock_key, now)

    def snapshot(self) -> Owed | None:
        with self._lock:
            if not self.owed:
                return None
            return Owed(dict(self._keys), dict(self._tags), self._clear_at)

    def settle(self, owed: Owed) -> None:
        """Forget what ``owed`` replayed, unless it was issued again meanwhile (a newer time)."""
        with self._lock:
            for key, at in owed.keys.items():
                if self._keys.get(key) == at:
                    del self._keys[key]
            for tag, at in owed.tags.items():
                if self._tags.get(tag) == at:
                    del self._tags[tag]
            if owed.clear_at is not None and self._clear_at == owed.clear_at:
                self._clear_at = None
            self.owed = bool(self._keys or self._tags or self._clear_at is not None)

    def blocks(self, key: str, tags: tuple[str, ...], created_at: float) -> bool:
        """True when an entry created at ``created_at`` predates a pending invalidation of it."""
        if not self.owed:
            return False
        clear_at = self._clear_at
        if clear_at is not None and created_at <= clear_at:
            return True
        at = self._keys.get(key)
        if at is not None and created_at <= at:
            return True
        pending_tags = self._tags
        return any(created_at <= pending_tags.get(t, -1.0) for t in tags) if pending_tags else False

    def summary(self) -> dict[str, int]:
        """Counts for ``stats()``: nothing that names a key or tag."""
        with self._lock:
            return {
                "keys": len(self._keys), "tags": len(self._tags), "clear": int(self._clear_at is not None),
                "releases": len(self._releases), "collapsed": self.collapsed,
            }
