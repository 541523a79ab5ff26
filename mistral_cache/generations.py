"""The namespace and tag generation counters, as last read from Redis, held in
this process so a Redis hit can be one GET of the entry instead of an MGET of the
entry and its counters.

Held values are trusted only while the invalidation listener is subscribed: every
bump is announced on the channel, so a held value can be older than Redis's by at
most the pub/sub delivery delay — the same window in which this process's local
tier may still serve a value another process just invalidated (README, "Coherence").
A cache without a local tier has no such window, so it runs no listener and never
enables this: its reads fetch the counters with the entry.
Anything that might hide a bump clears them all: the listener connecting or losing
its connection, any announcement other than a single-key one (tags, clear,
unreadable or unknown messages), and this process's own bumps.

A value read before a clear must not be stored after it (it may predate the bump
that caused the clear): :meth:`store` takes the epoch :meth:`epoch` returned before
the read, and drops the values if a clear happened since.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

__all__ = ["Generations"]


class Generations:
    """A bounded map counter key -> raw value, valid while ``enabled``."""

    def __init__(self, maxsize: int = 10_000) -> None:
        self.maxsize = maxsize
        self._values: dict[str, Any] = {}
        self._epoch = 0
        self._lock = threading.Lock()
        self.enabled = False  # set by the listener's "connected", cleared by "disconnected"

    def epoch(self) -> int:
        return self._epoch

    def lookup(self, keys: Sequence[str]) -> list[Any] | None:
        """The held values of ``keys``, or None unless every one is held (and trusted)."""
        if not self.enabled:
            return None
        values = self._values
        out = []
        for key in keys:
            value = values.get(key, _ABSENT)
            if value is _ABSENT:
                return None
            out.append(value)
        return out

    def store(self, keys: Sequence[str], values: Sequence[Any], epoch: int) -> None:
        """Hold values read from Redis, unless a clear happened since ``epoch``."""
        with self._lock:
            if not self.enabled or epoch != self._epoch:
                return
            if len(self._values) + len(keys) > self.maxsize:
                self._values.clear()  # rare: a namespace with that many tags in use
            for key, value in zip(keys, values):
                self._values[key] = value

    def clear(self) -> None:
        with self._lock:
            self._epoch += 1
            self._values.clear()

    def set_enabled(self, enabled: bool) -> None:
        with self._lock:
            self._epoch += 1
            self._values.clear()
            self.enabled = enabled


class _Absent:
    pass


_ABSENT = _Absent()
