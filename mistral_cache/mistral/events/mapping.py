"""From one Mistral notification to the cache tags it makes outdated.

The same mapping serves the webhook receiver, the publisher plugin and the
reconciliation, so every path clears exactly the same entries. Tags follow the
facade's naming (``<scope>|<manager>|id:<id>``, ``<scope>|<manager>|list...``)
and are built for both scopes that can hold the resource: its project's and the
admins' (an admin reads every project), via the one :func:`scope_for`.

The mapping only ever names things to invalidate; nothing in an event is ever
cached, so a forged event can cost refetches but never put wrong data in front
of a reader.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..identity import scope_for

__all__ = [
    "ANY", "COUNTERS", "EVENT_TYPES", "RECEIVER_COUNTERS",
    "EventError", "Event", "FINISHING", "KEEPS_EXECUTION", "TASK_EVENTS", "WORKFLOW_EVENTS", "list_tag",
    "parse_event", "tags_for",
]

_STATES = ("LAUNCHED", "SUCCEEDED", "FAILED", "CANCELLED", "PAUSED", "RESUMED", "RERUN")
WORKFLOW_EVENTS = frozenset(f"WORKFLOW_{s}" for s in _STATES)
TASK_EVENTS = frozenset({*(f"TASK_{s}" for s in _STATES), "TASK_SKIPPED"})
EVENT_TYPES = WORKFLOW_EVENTS | TASK_EVENTS

#: Task events after which the task's execution reads the same: a task starting
#: changes neither the execution's state nor its output, published_global or
#: updated_at (observed on Mistral 23, polling the execution every 20 ms). A task
#: finishing can: its ``publish`` ``global`` variables change the execution's
#: published_global and updated_at at that moment, so the other task events still
#: invalidate the execution.
KEEPS_EXECUTION = frozenset({"TASK_LAUNCHED"})

#: Task events after which Mistral has run the task's ``publish``: the only ones
#: whose ``global`` variables can change the execution. A sender that can read the
#: task's spec (the plugin, inside Mistral) marks one that publishes no global
#: variable with ``Event.execution_kept``.
FINISHING = frozenset({"TASK_SUCCEEDED", "TASK_FAILED", "TASK_SKIPPED"})

#: The counters every events publisher reports, zero or not (the receiver and the
#: plugin, in ``mistral-cache stats`` and Prometheus); the receiver adds the
#: requests it makes to Mistral.
COUNTERS = ("invalidations", "missed_events", "unacknowledged", "discarded", "kept_executions")
RECEIVER_COUNTERS = (*COUNTERS, "reconcile_requests", "definition_requests")

#: The filter value of a list read without that filter (an unfiltered task list).
ANY = "*"

# Mistral ids are UUIDs; accept any short plain identifier, refuse separators and controls.
_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,255}\Z")  # a project id, a task or workflow name


class EventError(ValueError):
    """A notification that cannot be mapped (the receiver answers 4xx and invalidates nothing)."""


@dataclass(frozen=True)
class Event:
    """The fields of a notification the mapping uses (everything else is ignored)."""

    kind: str  # WORKFLOW_* or TASK_*
    id: str
    project_id: str
    state: str | None = None
    workflow_execution_id: str | None = None  # task events: the task's execution
    root_execution_id: str | None = None  # workflow events: the top of a sub-workflow tree
    task_execution_id: str | None = None  # workflow events: the parent task of a sub-workflow
    name: str | None = None  # the task's or the workflow's name (to look its spec up)
    #: Set only by a sender that read the task's spec (never from a payload: the
    #: webhook's token is low-trust): this finishing task published no global
    #: variable, so its execution reads as before.
    execution_kept: bool = False

    @property
    def is_task(self) -> bool:
        return self.kind in TASK_EVENTS


def _opt_id(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _ID.match(value):
        raise EventError(f"{name} is not an id")
    return value


def parse_event(data: Any, event: Any = None) -> Event:
    """Validate a notification payload (``event`` given apart by the plugin path).
    Raises :class:`EventError` naming what is wrong: unknown type, missing ids."""
    if not isinstance(data, Mapping):
        raise EventError("the body must be a JSON object")
    kind = event if event is not None else data.get("event")
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        raise EventError(f"unknown event type {str(kind)[:40]!r}")
    ident = _opt_id(data, "id")
    if ident is None:
        raise EventError("missing id")
    project = data.get("project_id")
    if not isinstance(project, str) or not _NAME.match(project):
        raise EventError("missing project_id")
    state = data.get("state")
    if state is not None and (not isinstance(state, str) or not _ID.match(state)):
        raise EventError("state is not a state name")
    name = data.get("name")  # only ever narrows what is kept: an odd one is dropped, not refused
    if not isinstance(name, str) or not _NAME.match(name):
        name = None
    wf = _opt_id(data, "workflow_execution_id")
    if kind in TASK_EVENTS and wf is None:
        raise EventError("a task event needs workflow_execution_id")
    return Event(
        kind=kind, id=ident, project_id=project, state=state, workflow_execution_id=wf,
        root_execution_id=_opt_id(data, "root_execution_id"), task_execution_id=_opt_id(data, "task_execution_id"),
        name=name,
    )


def list_tag(scope: str, manager: str, name: str, value: str) -> str:
    """The tag of the ``manager`` lists read with filter ``name=value`` (or :data:`ANY`)."""
    return f"{scope}|{manager}|list|{name}:{value}"


def _relative_tags(scope: str, ev: Event) -> list[str]:
    if ev.is_task:
        assert ev.workflow_execution_id is not None
        tags = [
            f"{scope}|tasks|id:{ev.id}",
            list_tag(scope, "tasks", "wx", ev.workflow_execution_id), list_tag(scope, "tasks", "wx", ANY),
            # the task's action executions (they send no events of their own) and its sub-workflows
            list_tag(scope, "action_executions", "task", ev.id), list_tag(scope, "action_executions", "task", ANY),
        ]
        if ev.kind not in KEEPS_EXECUTION and not ev.execution_kept:  # a task's publish global changes its execution
            tags.append(f"{scope}|executions|id:{ev.workflow_execution_id}")
        return tags
    out = [f"{scope}|executions|list"]
    # A launch leaves a cached read of the execution current: Mistral creates it and
    # sets it RUNNING in one transaction and posts after the commit, so whoever found
    # it found it launched. Clearing it would only cost a "create, then poll" client
    # a refetch. (What a launch does outdate is a remembered 404 of an id its creator
    # chose; while events are live a 404 is kept at most policies.NOT_FOUND_EVENT_TTL.)
    if ev.kind != "WORKFLOW_LAUNCHED":
        out.append(f"{scope}|executions|id:{ev.id}")
    if ev.root_execution_id and ev.root_execution_id != ev.id:
        out.append(f"{scope}|executions|id:{ev.root_execution_id}")
    if ev.task_execution_id:  # a sub-workflow: its parent task and that task's lists
        out += [f"{scope}|tasks|id:{ev.task_execution_id}", list_tag(scope, "tasks", "wx", ANY)]
    return out


def tags_for(ev: Event, mistral_url: str) -> list[str]:
    """Every tag one event makes outdated, in the project's scope and the admins'."""
    tags: list[str] = []
    for admin in (False, True):
        tags += _relative_tags(scope_for(ev.project_id, mistral_url, admin=admin), ev)
    return tags
