"""Whether a finished task changed its execution, asked of Mistral's own engine.

A task's ``publish`` ``global`` variables are merged into its execution's context
when the task finishes, which changes the execution's ``published_global`` and
``updated_at``; nothing else of the execution changes then (its state changes come
with workflow events). The notification does not say which kind of task it was,
so without this every finished task costs every poller one refetch of an
unchanged execution. Inside Mistral (the publisher plugin) the answer is in the
engine's memory: the execution's spec, asked with Mistral's own
``TaskSpec.get_publish(state)`` -- the call the engine itself used to publish.

The webhook receiver cannot ask: its payload is low-trust and Mistral's API
does not serve a task's spec, so it keeps invalidating the execution.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

__all__ = ["publishes_global"]

log = logging.getLogger("mistral_cache.mistral.events")

#: The task states whose publish clause Mistral runs (``data_flow.publish_variables``).
_PUBLISHING_STATES = frozenset({"SUCCESS", "ERROR", "SKIPPED"})


def _mistral() -> tuple[Any, Any]:
    """(``mistral.db.v2.api``, ``mistral.lang.parser``): only importable inside Mistral."""
    return importlib.import_module("mistral.db.v2.api"), importlib.import_module("mistral.lang.parser")


def publishes_global(execution_id: str, task_name: str | None, state: str | None) -> bool | None:
    """True when the task ``task_name`` of that execution publishes a global
    variable in ``state``, False when it publishes none, None when it cannot tell
    (not inside Mistral, no such task, an unreadable spec, a state that publishes
    nothing): the caller then invalidates the execution, as for any task event.

    The engine waits for the notifier, so this reads the execution's spec from the
    engine's own cache (``get_workflow_spec_by_execution_id``, filled when the
    engine ran the task: the spec the execution started with, not the workflow's
    current definition); only a spec the engine no longer holds costs a read."""
    if state not in _PUBLISHING_STATES or not task_name:
        return None
    try:
        db_api, parser = _mistral()
        with db_api.transaction(read_only=True):
            workflow = parser.get_workflow_spec_by_execution_id(execution_id)
        publish = workflow.get_task(task_name).get_publish(state)
        return bool(publish is not None and publish.get_global())
    except Exception as exc:  # noqa: BLE001 - any doubt invalidates, as without the check
        log.debug("mistral_cache publisher: no spec for task %s of %s: %s", task_name, execution_id, exc)
        return None
