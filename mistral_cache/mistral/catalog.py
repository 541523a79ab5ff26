"""What the facade caches and what each write invalidates, per manager.

Data only, kept apart from the machinery so that a new Mistral method is one
line here: :data:`READS` names the cached reads, :data:`WRITES` the tags (within
the caller's scope) each write invalidates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Tags", "Read", "READS", "WRITES"]

#: A write's tags, from its bound arguments and its result (None if it raised).
Tags = Callable[[Mapping[str, Any], Any], Iterable[str]]


@dataclass(frozen=True)
class Read:
    ident: str | None = None  # the parameter naming one resource (None: a list)
    policy: str | None = None  # the policy (and tags) of another manager, e.g. sub-executions
    resource_class: str | None = None  # dotted name of the class to rebuild, if not the manager's
    list_filter: tuple[str, str] | None = None  # (parameter, tag name): lists tagged by that filter's value


def _all(*resources: str) -> Tags:
    """Invalidate every entry (items and lists) of these managers in the scope."""

    def tags(args: Mapping[str, Any], result: Any) -> Iterable[str]:
        return [f"{r}" for r in resources]

    return tags


def _lists(resource: str) -> Tags:
    def tags(args: Mapping[str, Any], result: Any) -> Iterable[str]:
        return [f"{resource}|list"]

    return tags


def _one(resource: str, param: str, *others: str) -> Tags:
    """That resource, its manager's lists and every entry of ``others``."""

    def tags(args: Mapping[str, Any], result: Any) -> Iterable[str]:
        return [f"{resource}|id:{args.get(param)}", f"{resource}|list", *others]

    return tags


def _rerun(args: Mapping[str, Any], result: Any) -> Iterable[str]:
    out = [f"tasks|id:{args.get('task_ex_id')}", "tasks|list", "tasks", "action_executions", "executions|list"]
    execution = getattr(result, "workflow_execution_id", None)
    out.append(f"executions|id:{execution}" if execution else "executions")
    return out


_DEFS = {"get": Read("identifier"), "list": Read()}
READS: dict[str, dict[str, Read]] = {
    "workflows": _DEFS,
    "workbooks": {"get": Read("name"), "list": Read()},
    "executions": {"get": Read("id"), "list": Read(), "get_ex_sub_executions": Read()},
    "tasks": {
        "get": Read("id"),
        "list": Read(list_filter=("workflow_execution_id", "wx")),
        "get_task_sub_executions": Read(policy="executions", resource_class="mistralclient.api.v2.executions.Execution"),
    },
    "action_executions": {"get": Read("id"), "list": Read(list_filter=("task_execution_id", "task"))},
    "actions": _DEFS,
    "environments": {"get": Read("name"), "list": Read()},
    "cron_triggers": {"get": Read("name"), "list": Read()},
    "event_triggers": {"get": Read("id"), "list": Read()},
    "members": {"get": Read("resource_id"), "list": Read()},
    "code_sources": _DEFS,
    "dynamic_actions": _DEFS,
}

_CUD = ("create", "update", "delete")
WRITES: dict[str, dict[str, Tags]] = {
    "workflows": dict.fromkeys(_CUD, _all("workflows")),
    "workbooks": dict.fromkeys(_CUD, _all("workbooks", "workflows", "actions")),
    "actions": dict.fromkeys(_CUD, _all("actions")),
    "environments": dict.fromkeys(_CUD, _all("environments")),
    "cron_triggers": dict.fromkeys(("create", "delete"), _all("cron_triggers")),
    "event_triggers": dict.fromkeys(("create", "delete"), _all("event_triggers")),
    "members": dict.fromkeys(_CUD, _all("members", "workflows", "workbooks")),
    "code_sources": dict.fromkeys(_CUD, _all("code_sources", "dynamic_actions", "actions")),
    "dynamic_actions": dict.fromkeys(_CUD, _all("dynamic_actions", "actions")),
    "executions": {
        "create": _lists("executions"),
        "update": _one("executions", "id", "tasks", "action_executions"),
        "delete": _one("executions", "id", "tasks", "action_executions"),
    },
    "tasks": {"rerun": _rerun},
    "action_executions": {
        "create": _lists("action_executions"),
        "update": _one("action_executions", "id", "tasks", "executions"),
        "delete": _one("action_executions", "id", "tasks", "executions"),
    },
}
