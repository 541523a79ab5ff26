"""The workflow language: a small YAML subset, enough for Mistral DSL v2 definitions,
what a definition declares (workflows, their input, tags and tasks), and a generator
of definitions for seeding."""

from __future__ import annotations

import contextlib
import functools
import json
import re
from dataclasses import dataclass
from typing import Any

from .schema import JSON, ApiError

__all__ = ["scalar", "mini_yaml", "WorkflowSpec", "workflow_specs", "parse_dsl", "task_names", "workflow_definition"]

_KEY_RE = re.compile(r"^(?P<key>'[^']*'|\"[^\"]*\"|[^\s'\"#-][^#]*?|-[^\s#][^#]*?):(?:\s+(?P<val>.*))?$")


def scalar(text: str) -> Any:
    """A YAML scalar: quoted text, a JSON literal (number, true, null...), or plain text."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    with contextlib.suppress(ValueError):
        return json.loads(text)
    return text


def mini_yaml(text: str) -> JSON:
    """Parse block mappings, block lists of scalars or one-line mappings, and scalars."""
    root: JSON = {}
    stack: list[tuple[int, Any]] = [(-1, root)]
    pending: tuple[JSON, str, int] | None = None
    block: tuple[JSON, str, int] | None = None
    for raw in text.splitlines():
        stripped = raw.strip()
        indent = len(raw) - len(raw.lstrip())
        if block is not None:
            if not stripped or indent > block[2]:
                block[0][block[1]] += stripped + "\n"
                continue
            block = None
        if not stripped or stripped.startswith("#") or stripped in ("---", "..."):
            continue
        body = re.sub(r"\s+#.*$", "", stripped)
        if pending is not None:
            owner, key, key_indent = pending
            pending = None
            if indent > key_indent:
                child: Any = [] if body.startswith("- ") or body == "-" else {}
                owner[key] = child
                stack.append((key_indent, child))
        while indent <= stack[-1][0]:
            stack.pop()
        parent = stack[-1][1]
        if body.startswith("- ") or body == "-":
            if not isinstance(parent, list):
                raise ValueError(f"unexpected list item: {stripped!r}")
            item = body[1:].strip()
            m = _KEY_RE.match(item)
            parent.append({scalar(m["key"]): scalar(m["val"] or "")} if m else scalar(item))
            continue
        m = _KEY_RE.match(body)
        if m is None:
            raise ValueError(f"cannot parse line: {stripped!r}")
        if isinstance(parent, list) and parent and isinstance(parent[-1], dict):
            parent = parent[-1]
        if not isinstance(parent, dict):
            raise TypeError(f"unexpected mapping entry: {stripped!r}")
        key, val = str(scalar(m["key"])), (m["val"] or "").strip()
        if val in ("|", ">", "|-", ">-"):
            parent[key] = ""
            block = (parent, key, indent)
        elif val:
            parent[key] = scalar(val)
        else:
            parent[key] = None
            pending = (parent, key, indent)
    return root


@dataclass(frozen=True)
class WorkflowSpec:
    """What a definition says of one workflow, in the shapes the API shows."""

    name: str
    input: str
    interface: str
    tags: list[str]
    tasks: list[str]


def workflow_specs(doc: JSON, prefix: str = "") -> list[WorkflowSpec]:
    """The workflows of a parsed definition (names prefixed, e.g. by a workbook's)."""
    specs = []
    for name, body in doc.items():
        if name in ("version", "description", "tags", "name"):
            continue
        if not isinstance(body, dict) or not isinstance(body.get("tasks"), dict):
            raise ApiError(400, f"Invalid DSL: workflow {name!r} must have a 'tasks' mapping")
        params = body.get("input") or []
        if not isinstance(params, list):
            raise ApiError(400, f"Invalid DSL: input of {name!r} must be a list")
        shown = [
            ", ".join(f'{k}="{v}"' for k, v in p.items()) if isinstance(p, dict) else str(p)
            for p in params
        ]
        output = body.get("output")
        interface = {"input": params, "output": list(output) if isinstance(output, dict) else []}
        tags = body.get("tags")
        specs.append(
            WorkflowSpec(
                name=prefix + name,
                input=", ".join(shown),
                interface=json.dumps(interface),
                tags=[str(t) for t in tags] if isinstance(tags, list) else [],
                tasks=list(body["tasks"]),
            )
        )
    return specs


def parse_dsl(text: str) -> JSON:
    """A DSL v2 document, or ``ApiError`` 400 as Mistral answers a bad one."""
    try:
        doc = mini_yaml(text)
    except (ValueError, TypeError) as exc:
        raise ApiError(400, f"Invalid DSL: {exc}") from None
    if str(doc.get("version")) != "2.0":
        raise ApiError(400, "Invalid DSL: 'version' must be '2.0'")
    return doc


@functools.lru_cache(maxsize=1024)
def task_names(definition: str, name: str) -> tuple[str, ...]:
    """Task names of workflow ``name`` (``wb.wf`` inside a workbook) in ``definition``."""
    doc = parse_dsl(definition)
    body = doc.get(name)
    if not isinstance(body, dict):
        workflows = doc.get("workflows")
        body = workflows.get(name.split(".", 1)[-1]) if isinstance(workflows, dict) else None
    tasks = body.get("tasks") if isinstance(body, dict) else None
    return tuple(tasks) if isinstance(tasks, dict) and tasks else ("task1",)


def workflow_definition(name: str, tasks: int = 3) -> str:
    """Return a DSL v2 definition of a direct workflow with ``tasks`` chained tasks."""
    lines = [
        "---", "version: '2.0'", "", f"{name}:", "  type: direct", "  input:", "    - x",
        "    - y: 1", "  output:", "    result: <% $.x %>", "  tasks:",
    ]
    for i in range(1, tasks + 1):
        lines += [f"    task{i}:", "      action: std.noop"]
        if i < tasks:
            lines.append(f"      on-success: task{i + 1}")
    return "\n".join(lines) + "\n"
