"""For the webhook receiver: which tasks of an execution can never publish a global variable.

A finished task changes its execution only through ``publish`` ``global``
variables (``published_global``, ``updated_at``). The notification does not say
whether the task had any, so without this every finished task costs the readers
one refetch of an unchanged execution. The plugin asks Mistral's engine
(:mod:`.task_spec`); the receiver asks Mistral's API, once per burst of launches:

- the event is only a trigger. Its payload is low-trust (the token travels in
  every execution's ``params``), so which workflow the execution runs and when
  it was created come from Mistral's execution list, never from the payload:
  a forged launch can cost a lookup, never a kept execution;
- an execution runs the definition it started with (Mistral keeps a snapshot),
  and the API serves the current one. A definition is trusted for an execution
  only when it was last changed :data:`MARGIN` seconds or more before the
  execution was created (both Mistral's timestamps, so no clock of ours enters),
  and when it was fetched after the launch was received;
- the check is conservative: a task is quiet when no ``publish`` mapping with
  a ``global`` key appears anywhere in it (whatever state it ends in), nor in
  the rest of its workflow (``task-defaults`` included); a definition that does
  not parse, or where the workflow or the task is not found, has none. The task's
  name comes from its event: a forged one can spare only its own invalidation.

Anything unknown (the lookup failed or has not answered yet, the execution is
older than the receiver, another receiver process saw the launch) leaves the
execution invalidated, as without this module. What it costs: one execution list
and one definition GET per workflow per batch of launches (launches within
:data:`BATCH_WAIT` of each other share them), made by the receiver alone and
counted in its ``definition_requests``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..timestamps import parse, stamp

__all__ = ["BATCH_WAIT", "MARGIN", "Definitions", "quiet_tasks"]

log = logging.getLogger("mistral_cache.mistral.events")

#: Seconds between a definition's last change and an execution's creation for the
#: one to be the other's: timestamps have whole seconds, and an update committed
#: late must not pass for one the execution saw.
MARGIN = 2.0
#: Seconds a lookup waits for more launches to share it with.
BATCH_WAIT = 0.05
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

    def __init__(self, client: Any, *, margin: float = MARGIN, wait: float = BATCH_WAIT, maxsize: int = 100_000,
                 clock: Callable[[], float] = time.time) -> None:
        self.client, self.margin, self.wait, self.maxsize, self.clock = client, margin, wait, maxsize, clock
        self.requests = self.failures = 0
        self._pending: list[tuple[str, float]] = []  # (execution id, received at)
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

    def launched(self, execution_id: str) -> None:
        """A launch was received: look the execution up (never blocks the caller)."""
        with self._cond:
            if len(self._pending) < self.maxsize:
                self._pending.append((execution_id, self.clock()))
                self._cond.notify()

    def keeps_execution(self, execution_id: str | None, task: str | None) -> bool:
        """True only when that task of that execution is known to publish no global variable."""
        if execution_id is None or task is None:
            return False
        with self._cond:
            return task in self._quiet.get(execution_id, ())

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
            time.sleep(self.wait)  # let a burst of launches share one lookup
            with self._cond:
                batch, self._pending = self._pending, []
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
            created_at=since, fields=["id", "workflow_id", "created_at"], limit=1000)]
        by_workflow: dict[str, list[tuple[str, float]]] = {}
        for data in found:
            ident, workflow, created = data.get("id"), data.get("workflow_id"), parse(data.get("created_at"))
            if ident in wanted and isinstance(workflow, str) and workflow and created is not None:
                by_workflow.setdefault(workflow, []).append((str(ident), created))
        for workflow, executions in by_workflow.items():
            self.requests += 1
            try:
                definition = self.client.workflows.get(workflow).to_dict()
            except Exception as exc:  # deleted, not visible to these credentials: those executions stay unknown
                self.failures += 1
                log.debug("no definition for workflow %s: %s: %s", workflow, type(exc).__name__, exc)
                continue
            changed = parse(definition.get("updated_at")) or parse(definition.get("created_at"))
            quiet = quiet_tasks(definition.get("definition"), definition.get("name"))
            if changed is None or not quiet:
                continue
            with self._cond:
                for ident, created in executions:
                    if changed + self.margin <= created:
                        self._quiet[ident] = quiet
                        self._quiet.move_to_end(ident)
                while len(self._quiet) > self.maxsize:
                    self._quiet.popitem(last=False)
