"""Time and state: a hand-moved clock, the scheduler of future changes, and the store
of every resource with its full version history (the ground truth a benchmark counts
stale reads against)."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from .schema import JSON, KINDS, Record, Version, ts

__all__ = ["ManualClock", "Scheduler", "Store"]


class ManualClock:
    """A clock a test or benchmark moves by hand: pass it as ``clock=``."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds`` and return the new time."""
        with self._lock:
            self._now += seconds
            return self._now


class Scheduler:
    """Changes due at a future time (a task ending, a cron trigger firing), applied in
    time order whenever the simulator looks at the clock. Callers hold the store's lock."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._events: list[tuple[float, int, Callable[[float], None]]] = []
        self._seq = itertools.count()

    def at(self, t: float, action: Callable[[float], None]) -> None:
        """Run ``action(t)`` once the clock reaches ``t``."""
        heapq.heappush(self._events, (t, next(self._seq), action))

    def advance(self) -> float:
        """Apply every scheduled change due by now, in time order; return now."""
        now = self.clock()
        while self._events and self._events[0][0] <= now:
            t, _, action = heapq.heappop(self._events)
            action(t)
        return now


class Store:
    """The live resources of each kind (``records[kind][id]``) and every version each
    has had. ``lock`` guards all simulator state (reentrant: seeding nests)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.records: dict[str, dict[str, Record]] = {kind: {} for kind in KINDS}
        self.history: dict[tuple[str, str], list[Version]] = {}
        #: Called as ``listener(kind, id, previous value, new value, t)`` on every
        #: change, under the lock, once it is stored (the notifier's hook).
        self.listeners: list[Callable[[str, str, Record | None, Record | None, float], None]] = []

    def put(self, kind: str, rid: str, rec: JSON | None, t: float) -> Record | None:
        """Store ``rec`` (None deletes) as the resource's next version, true from ``t``."""
        previous = self.records[kind].get(rid)
        if rec is None:
            self.records[kind].pop(rid, None)
        else:
            rec["id"] = rid
            self.records[kind][rid] = rec
        versions = self.history.setdefault((kind, rid), [])
        versions.append(Version(len(versions) + 1, t, rec))
        for listener in self.listeners:
            listener(kind, rid, previous, rec, t)
        return rec

    def update(self, kind: str, rid: str, t: float, **changes: Any) -> Record:
        """The resource with ``changes`` applied and ``updated_at`` set, as its next version."""
        rec = {**self.records[kind][rid], **changes, "updated_at": ts(t)}
        self.put(kind, rid, rec, t)
        return rec

    @staticmethod
    def visible(rec: Record, project: str, all_projects: bool = False) -> bool:
        """Whether ``project`` sees ``rec``: its own, the unowned, and public ones."""
        return (all_projects or rec.get("project_id") in (project, None)
                or rec.get("scope") == "public")

    def find(self, kind: str, ident: str, namespace: str | None, project: str,
             *, by_id: bool = True) -> Record | None:
        """The first visible resource with id (if ``by_id``) or name ``ident`` (in
        ``namespace``, unless None)."""
        for rec in self.records[kind].values():
            if not self.visible(rec, project):
                continue
            if by_id and rec["id"] == ident:
                return rec
            if rec.get("name") == ident and (namespace is None or rec.get("namespace") == namespace):
                return rec
        return None

    def resolve(self, kind: str, ident: str) -> str:
        """The id of a resource given by id, or by name in namespace '' (live or deleted)."""
        if (kind, ident) in self.history:
            return ident
        for rec in self.records[kind].values():
            if rec.get("name") == ident and rec.get("namespace", "") in ("", None):
                return str(rec["id"])
        for (k, rid), versions in self.history.items():
            if k == kind and any(v.value and v.value.get("name") == ident for v in versions):
                return rid
        raise KeyError(f"{kind}/{ident}")

    def versions(self, kind: str, ident: str) -> list[Version]:
        """Every version of a resource (by id or name), oldest first (the live list)."""
        return self.history[kind, self.resolve(kind, ident)]

    def version_of(self, kind: str, ident: str, data: Mapping[str, Any]) -> int:
        """The newest version whose value agrees with ``data`` on their common keys; 0 if none."""
        for version in reversed(self.versions(kind, ident)):
            value = version.value
            if value is not None and all(
                value[k] == v for k, v in data.items() if k in value
            ):
                return version.number
        return 0
