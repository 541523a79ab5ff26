"""Mistral's webhook notifier, simulated: a POST per workflow and task state change.

What real Mistral 23 does (``mistral/engine/workflows.py``, ``tasks.py``,
``notifiers/notification_events.py``, ``default_engine.py``), and so this does:

- the engine adds ``[notifier] notify`` to every execution it starts, in
  ``params.notify`` (:attr:`~.model.Executions.notify`);
- a state change is identified as an event by (from state, to state), e.g.
  RUNNING from PAUSED is WORKFLOW_RESUMED, from ERROR WORKFLOW_RERUN; a change
  that keeps the state sends nothing;
- the payload is the execution's (or task's) fields plus ``event``: ``id``,
  ``name``, ``workflow_*``, ``state``, ``state_info``, ``project_id``,
  ``root_execution_id``/``task_execution_id`` (workflows) or
  ``workflow_execution_id``, ``type``, ``started_at``/``finished_at`` (tasks),
  ``created_at``, ``updated_at``;
- it is posted after the change's transaction commits (``post_tx_queue``), one
  POST at a time and in order (with ``type = local`` the engine waits for each);
  a failed POST is logged and dropped.

The simulator applies scheduled changes lazily (when a request looks at the
clock); while a notifier runs, its thread also applies them every ``tick``, so a
change is committed within ``tick`` of its time even when nobody reads, and its
POST leaves ``delay`` later (:class:`PostDelay`).
"""

from __future__ import annotations

import collections
import json
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .model import Executions
from .schema import JSON, Record
from .store import Scheduler, Store

__all__ = ["PostDelay", "Notifier", "task_event", "workflow_event"]

_WF = {"SUCCESS": "WORKFLOW_SUCCEEDED", "ERROR": "WORKFLOW_FAILED", "CANCELLED": "WORKFLOW_CANCELLED",
       "PAUSED": "WORKFLOW_PAUSED"}
_TASK = {"SUCCESS": "TASK_SUCCEEDED", "ERROR": "TASK_FAILED", "CANCELLED": "TASK_CANCELLED",
         "PAUSED": "TASK_PAUSED", "SKIPPED": "TASK_SKIPPED"}


def workflow_event(before: str | None, after: str) -> str | None:
    """Mistral's ``identify_workflow_event``."""
    if after == "RUNNING":
        return {"PAUSED": "WORKFLOW_RESUMED", "ERROR": "WORKFLOW_RERUN"}.get(before or "", "WORKFLOW_LAUNCHED")
    return _WF.get(after)


def task_event(before: str | None, after: str) -> str | None:
    """Mistral's ``identify_task_event``."""
    if after == "RUNNING":
        return {"IDLE": "TASK_RESUMED", "PAUSED": "TASK_RESUMED", "WAITING": "TASK_RESUMED",
                "ERROR": "TASK_RERUN"}.get(before or "", "TASK_LAUNCHED")
    return _TASK.get(after)


_WF_FIELDS = ("id", "name", "workflow_name", "workflow_namespace", "workflow_id", "state", "state_info",
              "project_id", "task_execution_id", "root_execution_id", "created_at", "updated_at")
_TASK_FIELDS = ("id", "name", "workflow_execution_id", "workflow_name", "workflow_namespace", "workflow_id",
                "state", "state_info", "type", "project_id", "created_at", "updated_at", "started_at", "finished_at")


@dataclass(frozen=True)
class PostDelay:
    """Seconds from a change's commit to its POST reaching the receiver: lognormal
    around ``median`` (``sigma`` in log space), at most ``cap``. The defaults are
    measured on Mistral 23 with a loopback receiver (``python -m
    benchmarks.post_delay --executions 8``, 2 shared cores): fits gave medians of
    7.8 and 10.1 ms and sigmas of 0.89 and 0.96, and the slowest POSTs took 49 and
    57 ms. Each delay there is known within about +/- 24 ms, which widens sigma,
    so 0.9 is an upper estimate."""

    median: float = 0.010
    sigma: float = 0.9
    cap: float = 0.06

    def draw(self, rng: random.Random) -> float:
        if self.median <= 0:
            return 0.0
        return min(self.cap, self.median * math.exp(rng.gauss(0.0, self.sigma)))


class Notifier:
    """Posts every execution and task state change to ``url`` (JSON, with ``headers``,
    e.g. ``{"Authorization": "Bearer ..."}``), ``delay`` after it commits.

    Counters: ``changes`` (notifications due), ``posted``, ``failed`` (dropped, as Mistral drops them), ``by_type``,
    and ``delays``: each POST's send time less its change's time (seconds).
    """

    def __init__(self, store: Store, scheduler: Scheduler, executions: Executions, url: str,
                 headers: Mapping[str, str] | None = None, *, delay: PostDelay | None = None, seed: int = 0,
                 tick: float = 0.005, clock: Callable[[], float] = time.time, timeout: float = 2.0) -> None:
        self.store, self.scheduler, self.executions = store, scheduler, executions
        self.url, self.headers = url, dict(headers or {})
        self.delay = delay or PostDelay()
        self.rng = random.Random(seed)
        self.tick, self.clock, self.timeout = tick, clock, timeout
        self.publisher: JSON = {"type": "webhook", "url": url, "headers": self.headers}
        self.changes = self.posted = self.failed = 0  # changes: notifications due, posted or not
        self.by_type: collections.Counter[str] = collections.Counter()
        self.delays: list[float] = []
        self._queue: collections.deque[tuple[float, float, JSON]] = collections.deque()  # (due, change time, body)
        self._last_due = 0.0
        self._wake = threading.Condition(threading.Lock())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the engine side: changes -> queued notifications --------------------------------

    def on_change(self, kind: str, rid: str, before: Record | None, after: Record | None, t: float) -> None:
        """The store's listener (called under the store's lock, in change order)."""
        if after is None or kind not in ("executions", "tasks"):
            return
        execution = after if kind == "executions" else self.store.records["executions"].get(
            str(after.get("workflow_execution_id")))
        if execution is None or not self._notified(execution):
            return  # Mistral notifies the publishers in the execution's params.notify only
        old = before.get("state") if before is not None else None
        new = str(after.get("state"))
        if old == new:
            return
        wf = kind == "executions"
        event = workflow_event(old, new) if wf else task_event(old, new)
        if event is None:
            return
        body: JSON = {name: after.get(name) for name in (_WF_FIELDS if wf else _TASK_FIELDS)}
        body["event"] = event
        # One engine thread posts in commit order; each POST waits for the previous.
        due = max(self._last_due, t + self.delay.draw(self.rng))
        self._last_due = due
        self.changes += 1
        with self._wake:
            self._queue.append((due, t, body))
            self._wake.notify()

    def _notified(self, execution: Record) -> bool:
        params = execution.get("params")
        try:
            notify = json.loads(params).get("notify") if isinstance(params, str) else None
        except ValueError:
            return False
        return isinstance(notify, list) and self.publisher in notify

    # -- the posting side ---------------------------------------------------------------

    def start(self) -> Notifier:
        with self.store.lock:
            self.store.listeners.append(self.on_change)
            self.executions.notify.append(self.publisher)
        self._thread = threading.Thread(target=self._run, name="sim-mistral-notifier", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self.store.lock:
            if self.on_change in self.store.listeners:
                self.store.listeners.remove(self.on_change)
            if self.publisher in self.executions.notify:
                self.executions.notify.remove(self.publisher)
        self._stop.set()
        with self._wake:
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        import requests

        session = requests.Session()
        session.trust_env = False  # loopback: no proxy
        headers = {**self.headers, "Content-Type": "application/json"}
        while not self._stop.is_set():
            with self.store.lock:  # commit what is due (the listener queues its POSTs)
                self.scheduler.advance()
            now = self.clock()
            with self._wake:
                due = self._queue[0][0] if self._queue else math.inf
                if due > now:
                    self._wake.wait(min(self.tick, due - now))
                    continue
                _, changed, body = self._queue.popleft()
            sent = self.clock()
            try:
                r = session.post(self.url, data=json.dumps(body), headers=headers, timeout=self.timeout)
                ok = r.status_code in (200, 201)  # as Mistral's webhook publisher: anything else failed
            except requests.RequestException:
                ok = False
            if ok:
                self.posted += 1
                self.by_type[str(body["event"])] += 1
                self.delays.append(sent - changed)
            else:
                self.failed += 1
        session.close()

    def stats(self) -> dict[str, Any]:
        """What was posted, and the delays (commit to POST) in milliseconds."""
        d = sorted(self.delays)

        def q(p: float) -> float | None:
            return round(1000 * d[min(len(d) - 1, int(p * len(d)))], 2) if d else None

        return {"changes": self.changes, "posted": self.posted, "failed": self.failed, "by_type": dict(sorted(self.by_type.items())),
                "delay_ms": {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": q(1.0)},
                "pending": len(self._queue)}
