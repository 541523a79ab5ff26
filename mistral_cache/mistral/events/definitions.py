"""For the webhook receiver: which tasks of an execution can never publish a global variable.

A finished task changes its execution only through ``publish`` ``global``
variables (``published_global``, ``updated_at``). The notification does not say
whether the task had any, so without this every finished task costs the readers
one refetch of an unchanged execution. The plugin asks Mistral's engine
(:mod:`.task_spec`); the receiver asks Mistral's API, once per burst of launches:

- the event is only a trigger. Its payload is low-trust (the token travels in
  every execution's ``params``), so which workflow the execution runs comes from
  Mistral's execution list, never from the payload: a forged launch can cost a
  lookup (at most one every :data:`MIN_INTERVAL`, an id looked up once), never
  a kept execution;
- an execution runs the spec its engine parsed when it started, and the API
  serves the current definition. Only a definition never updated is trusted:
  the engine caches specs by definition id and ``updated_at``, which has whole
  seconds, so after two updates within one second it can keep running the first
  while the API serves the second under the same timestamp. A never-updated
  definition is the one every execution of it runs;
- the check is conservative: a task is quiet when no ``publish`` mapping with
  a ``global`` key appears anywhere in it (whatever state it ends in), nor in
  the rest of its workflow (``task-defaults`` included); a definition that does
  not parse, or where the workflow or the task is not found, has none. The task's
  name comes from its event: a forged one can spare only its own invalidation.

Anything unknown (the lookup failed or has not answered yet, the execution is
older than the receiver, another receiver process saw the launch) leaves the
execution invalidated, as without this module. What it costs: one execution list
and one definition GET per workflow per batch of launches (launches within
:data:`BATCH_WAIT`, or while the previous lookup runs, share them), made by the
receiver alone and counted in its ``definition_requests``; ``definition_lookups``
counts the batches answered. A workflow updated even once keeps costing its
readers one execution refetch per finished task (the plugin has no such limit).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..timestamps import stamp

__all__ = ["BATCH_WAIT", "MIN_INTERVAL", "Definitions", "quiet_tasks"]

log = logging.getLogger("mistral_cache.mistral.events")

#: Seconds a lookup waits for more launches to share it with.
BATCH_WAIT = 0.05
#: Fewest seconds between two lookups' starts: a flood of (forged) launches
#: costs Mistral at most a few lists a second.
MIN_INTERVAL = 0.25
#: The execution list looks this far before the earliest launch of a batch: the
#: receiver's clock and Mistral's need not agree.
LOOKBACK = 120.0
#: Largest definition read (Mistral's own limit is lower).
MAX_DEFINITION = 1 << 20


def _has_global(node: Any) -> bool:
    """Whether some ``publish`` mapping under ``node`` has a ``global`` key. A branch
    variable *named* ``global`` counts too: the check may only err towards invalidating."""
    seen: set[int] = set()  # YAML aliases share nodes: visit each once
    stack: list[Any] = [node]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, dict):
            publish = node.get("publish")
            if isinstance(publish, dict) and "global" in publish:
                return True
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def quiet_tasks(definition: Any, workflow: str | None = None) -> frozenset[str]:
    """The tasks of ``workflow`` (the definition's only workflow if not found by
    name) that publish no global variable in any state: empty when the text does
    not parse, the workflow is not found, or anything outside its tasks publishes one."""
    import yaml

    if not isinstance(definition, str) or len(definition) > MAX_DEFINITION:
        return frozenset()
    try:
        doc = yaml.safe_load(definition)
    except yaml.YAMLError:
        return frozenset()
    if not isinstance(doc, dict):
        return frozenset()
    if workflow not in doc:
        names = [k for k in doc if k != "version"]
        workflow = names[0] if len(names) == 1 else None
    spec = doc.get(workflow) if workflow is not None else None
    if not isinstance(spec, dict) or not isinstance(spec.get("tasks"), dict):
        return frozenset()
    if _has_global({k: v for k, v in spec.items() if k != "tasks"}):
        return frozenset()
    return frozenset(name for name, task in spec["tasks"].items() if isinstance(name, str) and not _has_global(task))


class Definitions:
    """Learns, in a daemon thread, the quiet tasks of each launched execution;
    :meth:`keeps_execution` answers from memory.

    ``client``: a python-mistralclient ``Client`` (plain, uncached), the
    reconciliation's credentials (an admin's lists and reads span every project).
    """

    def __init__(self, client: Any, *, wait: float = BATCH_WAIT, interval: float = MIN_INTERVAL,
                 maxsize: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        self.client, self.wait, self.interval, self.maxsize, self.clock = client, wait, interval, maxsize, clock
        self.requests = self.failures = self.lookups = 0
        self._pending: dict[str, float] = {}  # execution id -> received at
        self._asked: OrderedDict[str, None] = OrderedDict()  # execution ids looked up already
        self._quiet: OrderedDict[str, frozenset[str]] = OrderedDict()  # execution id -> its quiet tasks
        self._cond = threading.Condition()
        self._stop = False
        self._warned = float("-inf")  # monotonic time of the last warning
        self._thread: threading.Thread | None = None

    def start(self) -> Definitions:
        self._thread = threading.Thread(target=self._run, name="mistral-cache-definitions", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(5.0)

    def launched(self, execution_id: str) -> None:
        """A launch was received: look the execution up once (never blocks the caller)."""
        with self._cond:
            if execution_id not in self._asked and len(self._pending) < self.maxsize:
                self._pending.setdefault(execution_id, self.clock())
                self._cond.notify()

    def keeps_execution(self, execution_id: str | None, task: str | None) -> bool:
        """True only when that task of that execution is known to publish no global variable."""
        if execution_id is None or task is None:
            return False
        with self._cond:
            return task in self._quiet.get(execution_id, ())

    def _run(self) -> None:
        last = float("-inf")
        while True:
            with self._cond:
                while not self._pending and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
            # let a burst of launches share one lookup, and space lookups out
            time.sleep(max(self.wait, last + self.interval - time.monotonic()))
            last = time.monotonic()
            with self._cond:
                batch, self._pending = list(self._pending.items()), {}
                for ident, _ in batch:
                    self._asked[ident] = None
                while len(self._asked) > self.maxsize:
                    self._asked.popitem(last=False)
            try:
                self.resolve(batch)
            except Exception as exc:  # Mistral down, credentials refused: those executions stay unknown
                self.failures += 1
                # a refusal repeats at every launch: one warning a minute, the rest at debug
                now = time.monotonic()
                loud = now - self._warned >= 60.0
                if loud:
                    self._warned = now
                log.log(logging.WARNING if loud else logging.DEBUG, "definition lookup failed (%d so far): %s: %s",
                        self.failures, type(exc).__name__, exc)

    def resolve(self, batch: list[tuple[str, float]]) -> None:
        """Look up the batch's executions in Mistral, then each of their workflows once."""
        if not batch:
            return
        wanted = {ident for ident, _ in batch}
        since = "gte:" + stamp(min(at for _, at in batch) - LOOKBACK)
        self.requests += 1
        found = [item.to_dict() for item in self.client.executions.list(
            created_at=since, fields=["id", "workflow_id"], sort_keys="created_at", sort_dirs="desc", limit=1000)]
        by_workflow: dict[str, list[str]] = {}
        for data in found:
            ident, workflow = data.get("id"), data.get("workflow_id")
            if ident in wanted and isinstance(workflow, str) and workflow:
                by_workflow.setdefault(workflow, []).append(str(ident))
        for workflow, executions in by_workflow.items():
            self.requests += 1
            try:
                definition = self.client.workflows.get(workflow).to_dict()
            except Exception as exc:  # deleted, not visible to these credentials: those executions stay unknown
                self.failures += 1
                log.debug("no definition for workflow %s: %s: %s", workflow, type(exc).__name__, exc)
                continue
            if definition.get("updated_at"):  # updated: perhaps not what its executions run
                continue
            quiet = quiet_tasks(definition.get("definition"), definition.get("name"))
            if not quiet:
                continue
            with self._cond:
                for ident in executions:
                    self._quiet[ident] = quiet
                    self._quiet.move_to_end(ident)
                while len(self._quiet) > self.maxsize:
                    self._quiet.popitem(last=False)
        self.lookups += 1
