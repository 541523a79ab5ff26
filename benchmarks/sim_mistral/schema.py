"""The resources the simulated Mistral serves: their kinds (wire fields, filters, what
lists hide), one version of a resource, timestamps as Mistral writes them, and the
API error every layer raises (:class:`ApiError`, turned into Mistral's fault body by
:mod:`.api`)."""

from __future__ import annotations

import calendar
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = [
    "JSON", "Record", "DEFAULT_PROJECT", "FINAL", "Kind", "KINDS", "SYSTEM_ACTIONS", "Version",
    "ApiError", "not_found", "ts", "norm_ts", "epoch", "json_obj",
]

JSON = dict[str, Any]
Record = Mapping[str, Any]

DEFAULT_PROJECT = "<default-project>"
"""The project Mistral reports when authentication is disabled."""

FINAL = frozenset({"SUCCESS", "ERROR", "CANCELLED"})
"""Execution states that end a run."""


@dataclass(frozen=True)
class Kind:
    """One resource kind: its label in error messages, its wire fields (in order), the
    filters its list accepts, and the fields a list leaves out."""

    label: str
    fields: tuple[str, ...]
    filters: frozenset[str]
    hidden_in_lists: frozenset[str] = frozenset()


def _kind(label: str, fields: str, filters: str, hidden: str = "") -> Kind:
    return Kind(label, tuple(fields.split()), frozenset(filters.split()), frozenset(hidden.split()))


KINDS: dict[str, Kind] = {
    "workflows": _kind(
        "Workflow",
        "id name namespace input interface definition checksum tags scope project_id "
        "created_at updated_at",
        "name input definition tags scope project_id created_at updated_at namespace "
        "all_projects",
    ),
    "executions": _kind(
        "WorkflowExecution",
        "id workflow_id workflow_name workflow_namespace description tags params "
        "task_execution_id root_execution_id state state_info input output created_at "
        "updated_at project_id published_global",
        "workflow_name workflow_id description tags params task_execution_id "
        "root_execution_id state state_info input output created_at updated_at "
        "include_output project_id all_projects nulls",
        "output published_global",
    ),
    "tasks": _kind(
        "Task execution",
        "id name type workflow_name workflow_namespace workflow_id workflow_execution_id "
        "tags state state_info project_id runtime_context result published "
        "published_global processed created_at updated_at started_at finished_at",
        "name workflow_name workflow_id workflow_execution_id tags state state_info result "
        "published processed created_at updated_at reset env",
        "result published_global",
    ),
    "actions": _kind(
        "Action",
        "id name is_system input description tags definition scope project_id created_at "
        "updated_at namespace",
        "created_at name scope tags updated_at description definition is_system input "
        "namespace",
    ),
    "workbooks": _kind(
        "Workbook",
        "id name namespace definition tags scope project_id created_at updated_at",
        "created_at definition name scope tags updated_at namespace",
    ),
    "environments": _kind(
        "Environment",
        "id name description variables scope project_id created_at updated_at",
        "name description variables scope created_at updated_at",
    ),
    "cron_triggers": _kind(
        "Cron trigger",
        "id name workflow_name workflow_id workflow_input workflow_params project_id scope "
        "pattern remaining_executions first_execution_time next_execution_time created_at "
        "updated_at",
        "name workflow_name workflow_id workflow_input workflow_params scope pattern "
        "remaining_executions first_execution_time next_execution_time created_at "
        "updated_at project_id all_projects",
    ),
}

SYSTEM_ACTIONS = {
    "std.async_noop": "",
    "std.echo": "output, delay=0",
    "std.email": "from_addr, to_addrs, smtp_server, reply_to=null, cc_addrs=null, "
    "bcc_addrs=null, smtp_password=null, subject=null, body=null, html_body=null",
    "std.fail": "error_data=null",
    "std.http": "url, method=GET, params=null, body=null, json=null, headers=null, "
    "cookies=null, auth=null, timeout=null, allow_redirects=null, proxies=null, "
    "verify=null",
    "std.javascript": "script, context=null",
    "std.js": "script, context=null",
    "std.mistral_http": "url, method=GET, params=null, body=null, json=null, "
    "headers=null, cookies=null, auth=null, timeout=null, allow_redirects=null, "
    "proxies=null, verify=null",
    "std.noop": "",
    "std.sleep": "seconds=1",
    "std.ssh": "cmd, host, username, password=null, private_key_filename=null, "
    "private_key=null",
    "std.ssh_proxied": "cmd, host, username, private_key_filename, gateway_host, "
    "gateway_username=null, password=null, proxy_command=null, private_key=null",
    "std.test_dict": "size=0, key_prefix='', val=''",
}
"""The system actions every Mistral lists, with their input signatures."""


@dataclass(frozen=True)
class Version:
    """One version of a resource: its number, when it became the truth, its value."""

    number: int
    started_at: float
    value: Record | None  # the full wire record; None once deleted (or before creation)


class ApiError(Exception):
    """A request Mistral would refuse: its HTTP status and ``faultstring``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def not_found(kind: str, **ident: object) -> ApiError:
    """Mistral's 404 for a resource of ``kind`` named by ``ident``."""
    args = ", ".join(f"{k}={v}" for k, v in ident.items())
    return ApiError(404, f"{KINDS[kind].label} not found [{args}]")


def ts(t: float) -> str:
    """Format epoch seconds like Mistral: UTC, whole seconds, 'YYYY-MM-DD HH:MM:SS'."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def norm_ts(value: str) -> str:
    """A client's ISO timestamp as naive UTC text (``ApiError`` 400 if it is not one)."""
    text = value.strip()
    if text.endswith(("Z", "z")):  # Python 3.10's fromisoformat() lacks 'Z'
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(400, f"Invalid date/time value: {value!r}") from None
    offset = dt.utcoffset()
    if offset is not None:
        dt = (dt - offset).replace(tzinfo=None)
    return dt.isoformat(" ")


def epoch(text: str) -> float:
    """Epoch seconds of a naive UTC timestamp string."""
    dt = datetime.fromisoformat(text)
    return calendar.timegm(dt.timetuple()) + dt.microsecond / 1e6


def json_obj(value: object, name: str) -> JSON:
    """Decode a Mistral ``jsontype`` value (a dict, or a JSON string of one)."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ApiError(400, f"Invalid JSON in field {name}: {value!r}") from None
    if not isinstance(value, dict):
        raise ApiError(400, f"JsonType field value must be a dictionary [actual={value}]")
    return value
