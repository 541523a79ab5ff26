"""Reconciliation: what changed without an event is invalidated within N seconds.

Mistral's notifier logs and drops a POST that fails, so events can be lost while
the receiver is up. Every ``interval`` seconds the receiver lists executions and
tasks with ``updated_at=gte:<last check>`` (two cheap requests; an admin's lists
span every project) and invalidates each one whose state differs from the last
event it got about it, counting it as ``missed_events``. Worst staleness is then
bounded by the interval, lost events or not.

Credentials: a Mistral without authentication needs none (its one project is
``"<default-project>"``). With Keystone, give an admin account (``--keystone-*``):
an admin's lists cover every project; a member's cover its own project only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..timestamps import stamp
from .mapping import EventError, parse_event

__all__ = ["INTERVAL", "Reconciler"]

log = logging.getLogger("mistral_cache.mistral.events")

INTERVAL = 10.0
#: ``updated_at`` has one-second resolution and WORKFLOW_SUCCEEDED carries the old one.
SLACK = 2.0
_FIELDS = {
    "executions": ["id", "state", "project_id", "root_execution_id", "task_execution_id", "updated_at"],
    "tasks": ["id", "state", "project_id", "workflow_execution_id", "updated_at"],
}


class Reconciler:
    """A daemon thread calling :meth:`tick` every ``interval`` seconds.

    ``client``: a python-mistralclient ``Client`` (plain, uncached). ``receiver``:
    the :class:`~.receiver.Receiver` whose ``apply``/``last_state`` it uses.
    """

    def __init__(self, client: Any, receiver: Any, interval: float = INTERVAL,
                 clock: Callable[[], float] = time.time) -> None:
        self.client, self.receiver, self.interval, self.clock = client, receiver, interval, clock
        self.since = clock()
        self.ticks = self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Reconciler:
        self._thread = threading.Thread(target=self._run, name="mistral-cache-reconcile", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception as exc:  # Mistral down, credentials refused: try again next time
                self.failures += 1
                log.warning("reconciliation failed: %s: %s", type(exc).__name__, exc)

    def tick(self) -> int:
        """One sweep; returns how many resources had changed without an event."""
        started = self.clock()
        since = "gte:" + stamp(self.since - SLACK)
        missed = 0
        for manager, kind in (("executions", "WORKFLOW_RERUN"), ("tasks", "TASK_RERUN")):
            self.receiver.count("reconcile_requests")
            items = getattr(self.client, manager).list(updated_at=since, fields=_FIELDS[manager], limit=1000)
            for item in items:
                data = item.to_dict()
                if self.receiver.last_state(str(data.get("id"))) == data.get("state"):
                    continue  # an event already told us
                try:
                    event = parse_event(data, kind)
                except EventError:
                    continue
                self.receiver.apply(event, missed=True)
                missed += 1
        self.since = started
        self.ticks += 1
        return missed
