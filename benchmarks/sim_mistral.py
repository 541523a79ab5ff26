"""A simulated Mistral v2 REST endpoint on loopback, for the bundled benchmarks.

Faithful enough that the real ``python-mistralclient`` runs end to end against it
(URLs, query parameters, filters, pagination, JSON shapes and error bodies follow
Mistral 23's API controllers), with service times drawn around the figures measured
on a real server, executions that move through states over (injectable) time, and a
ground-truth record of every resource version so a benchmark can count stale reads.

The integration tests use a real Mistral server; this is for benchmarks only.

    with SimulatedMistral(latency_scale=1.0, seed=1) as sim:
        names = sim.seed_workflows(20)
        ids = sim.seed_executions(500, running_fraction=0.2)
        client = mistralclient.api.client.client(mistral_url=sim.url)
        data = client.executions.get(ids[0]).to_dict()
        lag = sim.staleness_of("executions", ids[0], data)  # 0.0: it was fresh
"""

from __future__ import annotations

import argparse
import calendar
import contextlib
import functools
import hashlib
import heapq
import itertools
import json
import operator
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

if TYPE_CHECKING:
    from typing import Self

__all__ = ["DEFAULT_PROJECT", "SERVICE_TIME_MS", "ManualClock", "SimulatedMistral", "Version"]

JSON = dict[str, Any]
Record = Mapping[str, Any]

DEFAULT_PROJECT = "<default-project>"
"""The project Mistral reports when authentication is disabled."""

SERVICE_TIME_MS: dict[tuple[str, str], float] = {
    ("GET", "/workflows/{id}"): 10.0,
    ("GET", "/executions/{id}"): 14.0,
    ("GET", "/tasks/{id}"): 12.0,
    ("GET", "/actions/{id}"): 8.0,
    ("GET", "/workbooks/{id}"): 10.0,
    ("GET", "/environments/{id}"): 8.0,
    ("GET", "/cron_triggers/{id}"): 9.0,
    ("GET", "*"): 16.0,
    ("POST", "/executions"): 40.0,
    ("POST", "*"): 28.0,
    ("PUT", "*"): 23.0,
    ("DELETE", "*"): 18.0,
}
"""Median server-side service time per (method, route), in ms.

Calibrated so that a python-mistralclient call on loopback (which adds about 2 ms of
HTTP and parsing) lands on the figures measured against a real Mistral 23 server:
``workflows.get`` 12 ms, ``executions.get`` 16 ms, ``actions.list`` 18 ms.
"""

PER_ITEM_MS = 0.02
"""Extra service time per item a list returns."""

JITTER_SIGMA = 0.2
"""Sigma of the log-normal factor applied to every service time."""

_FINAL = frozenset({"SUCCESS", "ERROR", "CANCELLED"})
_DATES = frozenset(
    {"created_at", "updated_at", "started_at", "finished_at", "first_execution_time",
     "next_execution_time"}
)
_BOOLS = frozenset({"processed", "is_system", "reset", "all_projects", "include_output", "force"})
_OPS = ("eq", "neq", "gt", "gte", "lt", "lte", "has", "in", "nin")
_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq, "neq": operator.ne, "lt": operator.lt, "lte": operator.le,
    "gt": operator.gt, "gte": operator.ge, "in": lambda x, v: x in v,
    "nin": lambda x, v: x not in v, "has": lambda x, v: v in x,
}
_LIST_ARGS = frozenset({"marker", "limit", "sort_keys", "sort_dirs", "fields"})


@dataclass(frozen=True)
class _Kind:
    label: str
    fields: tuple[str, ...]
    filters: frozenset[str]
    hidden_in_lists: frozenset[str] = frozenset()


def _kind(label: str, fields: str, filters: str, hidden: str = "") -> _Kind:
    return _Kind(label, tuple(fields.split()), frozenset(filters.split()), frozenset(hidden.split()))


_KINDS: dict[str, _Kind] = {
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

_SYSTEM_ACTIONS = {
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


@dataclass(frozen=True)
class Version:
    """One version of a resource: its number, when it became the truth, its value."""

    number: int
    started_at: float
    value: Record | None  # the full wire record; None once deleted (or before creation)


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


class _ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _not_found(kind: str, **ident: object) -> _ApiError:
    args = ", ".join(f"{k}={v}" for k, v in ident.items())
    return _ApiError(404, f"{_KINDS[kind].label} not found [{args}]")


def _ts(t: float) -> str:
    """Format epoch seconds like Mistral: UTC, whole seconds, 'YYYY-MM-DD HH:MM:SS'."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def _norm_ts(value: str) -> str:
    text = value.strip()
    if text.endswith(("Z", "z")):  # Python 3.10's fromisoformat() lacks 'Z'
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise _ApiError(400, f"Invalid date/time value: {value!r}") from None
    offset = dt.utcoffset()
    if offset is not None:
        dt = (dt - offset).replace(tzinfo=None)
    return dt.isoformat(" ")


def _epoch(ts: str) -> float:
    """Epoch seconds of a naive UTC timestamp string."""
    dt = datetime.fromisoformat(ts)
    return calendar.timegm(dt.timetuple()) + dt.microsecond / 1e6


def _nulls_last(key: str) -> Callable[[Record], tuple[bool, Any]]:
    """Sort key on ``key`` with None after every value (NULLS LAST, as PostgreSQL)."""

    def get(rec: Record) -> tuple[bool, Any]:
        value = rec.get(key)
        return (value is None, "" if value is None else value)

    return get


def _json_obj(value: object, name: str) -> JSON:
    """Decode a Mistral ``jsontype`` value (a dict, or a JSON string of one)."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise _ApiError(400, f"Invalid JSON in field {name}: {value!r}") from None
    if not isinstance(value, dict):
        raise _ApiError(400, f"JsonType field value must be a dictionary [actual={value}]")
    return value


# -- a small YAML subset, enough for Mistral DSL v2 definitions -------------------

_KEY_RE = re.compile(r"^(?P<key>'[^']*'|\"[^\"]*\"|[^\s'\"#-][^#]*?|-[^\s#][^#]*?):(?:\s+(?P<val>.*))?$")


def _scalar(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    with contextlib.suppress(ValueError):
        return json.loads(text)
    return text


def _mini_yaml(text: str) -> JSON:
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
            parent.append({_scalar(m["key"]): _scalar(m["val"] or "")} if m else _scalar(item))
            continue
        m = _KEY_RE.match(body)
        if m is None:
            raise ValueError(f"cannot parse line: {stripped!r}")
        if isinstance(parent, list) and parent and isinstance(parent[-1], dict):
            parent = parent[-1]
        if not isinstance(parent, dict):
            raise TypeError(f"unexpected mapping entry: {stripped!r}")
        key, val = str(_scalar(m["key"])), (m["val"] or "").strip()
        if val in ("|", ">", "|-", ">-"):
            parent[key] = ""
            block = (parent, key, indent)
        elif val:
            parent[key] = _scalar(val)
        else:
            parent[key] = None
            pending = (parent, key, indent)
    return root


@dataclass(frozen=True)
class _WfSpec:
    name: str
    input: str
    interface: str
    tags: list[str]
    tasks: list[str]


def _workflow_specs(doc: JSON, prefix: str = "") -> list[_WfSpec]:
    specs = []
    for name, body in doc.items():
        if name in ("version", "description", "tags", "name"):
            continue
        if not isinstance(body, dict) or not isinstance(body.get("tasks"), dict):
            raise _ApiError(400, f"Invalid DSL: workflow {name!r} must have a 'tasks' mapping")
        params = body.get("input") or []
        if not isinstance(params, list):
            raise _ApiError(400, f"Invalid DSL: input of {name!r} must be a list")
        shown = [
            ", ".join(f'{k}="{v}"' for k, v in p.items()) if isinstance(p, dict) else str(p)
            for p in params
        ]
        output = body.get("output")
        interface = {"input": params, "output": list(output) if isinstance(output, dict) else []}
        tags = body.get("tags")
        specs.append(
            _WfSpec(
                name=prefix + name,
                input=", ".join(shown),
                interface=json.dumps(interface),
                tags=[str(t) for t in tags] if isinstance(tags, list) else [],
                tasks=list(body["tasks"]),
            )
        )
    return specs


def _parse_dsl(text: str) -> JSON:
    try:
        doc = _mini_yaml(text)
    except (ValueError, TypeError) as exc:
        raise _ApiError(400, f"Invalid DSL: {exc}") from None
    if str(doc.get("version")) != "2.0":
        raise _ApiError(400, "Invalid DSL: 'version' must be '2.0'")
    return doc


@functools.lru_cache(maxsize=1024)
def _task_names(definition: str, name: str) -> tuple[str, ...]:
    """Task names of workflow ``name`` (``wb.wf`` inside a workbook) in ``definition``."""
    doc = _parse_dsl(definition)
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


# -- the simulator -------------------------------------------------------------------


@dataclass
class _Run:
    """The engine's plan for one workflow execution."""

    ex_id: str
    steps: list[tuple[str, float, bool]]  # task name, duration, succeeds
    index: int = 0
    epoch: int = 0
    task_id: str | None = None
    task_end: float | None = None
    remaining: float | None = None


@dataclass
class _Req:
    params: dict[str, str]
    body: bytes
    ident: str = ""
    extra: str = ""
    project: str = DEFAULT_PROJECT
    host: str = "127.0.0.1"
    items: int = 0

    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> JSON:
        try:
            data = json.loads(self.body or b"{}")
        except ValueError:
            raise _ApiError(400, "Request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise _ApiError(400, "Request body must be a JSON object")
        return data

    def flag(self, name: str) -> bool:
        return self.params.get(name, "").lower() in ("true", "1", "yes", "on")

    def allow(self, names: Iterable[str]) -> None:
        for name in self.params.keys() - set(names):
            raise _ApiError(400, f'Unknown argument: "{name}"')


Handler = Callable[[_Req], tuple[int, Any]]

_ROUTES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^/executions/(?P<id>[^/]+)/tasks/?$"), "/executions/{id}/tasks"),
    (re.compile(r"^/actions/(?P<id>[^/]+)(?:/(?P<extra>[^/]*))?$"), "/actions/{id}"),
    (re.compile(r"^/(?P<kind>[a-z_]+)/?$"), "/{kind}"),
    (re.compile(r"^/(?P<kind>[a-z_]+)/(?P<id>[^/]+)/?$"), "/{kind}/{id}"),
]


class SimulatedMistral:
    """An in-memory Mistral v2 API served over HTTP on loopback.

    ``clock`` (epoch seconds) drives resource timestamps and execution progress;
    ``sleep`` and ``latency_scale`` (0 disables) the simulated service time.
    Requests carrying ``X-Project-Id`` act as that project, others as
    ``project_id``; private resources of other projects are invisible.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_scale: float = 1.0,
        seed: int = 0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        mean_duration: float = 5.0,
        error_rate: float = 0.1,
        max_limit: int = 1000,
        max_concurrency: int | None = None,
        project_id: str = DEFAULT_PROJECT,
    ) -> None:
        self.host, self.port = host, port
        self.latency_scale = latency_scale
        self.mean_duration = mean_duration
        self.error_rate = error_rate
        self.max_limit = max_limit
        self.project_id = project_id
        self.requests: Counter[tuple[str, str]] = Counter()
        self._clock, self._sleep = clock, sleep
        self._rng = random.Random(seed)
        self._latency_rng = random.Random(seed + 1)
        self._latency_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_concurrency) if max_concurrency else None
        self._lock = threading.RLock()
        self._store: dict[str, dict[str, Record]] = {kind: {} for kind in _KINDS}
        self._history: dict[tuple[str, str], list[Version]] = {}
        self._runs: dict[str, _Run] = {}
        self._events: list[tuple[float, int, Callable[[float], None]]] = []
        self._seq = itertools.count()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._api: dict[tuple[str, str], Handler] = self._build_api()
        now = clock()
        for name, params in _SYSTEM_ACTIONS.items():
            self._put("actions", name, {
                "id": name, "name": name, "is_system": False, "input": params,
                "description": "", "tags": None, "definition": "", "scope": "public",
                "project_id": None, "created_at": "", "updated_at": "", "namespace": "",
            }, now)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> str:
        """Serve in a daemon thread; return the base URL (``http://HOST:PORT/v2``)."""
        if self._server is None:
            server = ThreadingHTTPServer((self.host, self.port), _Handler)
            server.daemon_threads = True
            cast(Any, server).sim = self
            self.port = server.server_address[1]
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05},
                name=f"sim-mistral-{self.port}", daemon=True,
            )
            self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving and close the socket."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL to pass as ``mistral_url``."""
        return f"http://{self.host}:{self.port}/v2"

    def now(self) -> float:
        """The simulator's clock."""
        return self._clock()

    # -- counters --------------------------------------------------------------------

    @property
    def requests_total(self) -> int:
        """Requests served since the last :meth:`reset_counters`."""
        with self._lock:
            return sum(self.requests.values())

    def request_counts(self) -> dict[tuple[str, str], int]:
        """A snapshot of ``requests``: counts per (method, route template)."""
        with self._lock:
            return dict(self.requests)

    def reset_counters(self) -> None:
        """Zero the per-(method, route) request counters."""
        with self._lock:
            self.requests.clear()

    # -- seeding -----------------------------------------------------------------------

    def seed_workflows(self, n: int, *, namespace: str = "", tasks: int = 3,
                       prefix: str = "wf") -> list[str]:
        """Create ``n`` workflows (``{prefix}_0000``...); return their names."""
        with self._lock:
            now = self._advance()
            start = len(self._store["workflows"])
            names = [f"{prefix}_{i:04d}" for i in range(start, start + n)]
            for name in names:
                definition = workflow_definition(name, tasks)
                self._create_workflows(definition, namespace, "private", self.project_id, now)
            return names

    def seed_executions(self, n: int, *, running_fraction: float = 0.2,
                        workflow: str | None = None, spread: float = 3600.0) -> list[str]:
        """Create ``n`` executions; return their ids.

        ``round(n * running_fraction)`` are still RUNNING now (each finishes after
        its drawn duration); the rest started up to ``spread`` seconds ago and
        finished, in SUCCESS or (``error_rate``) ERROR. Their histories are complete.
        """
        with self._lock:
            now = self._advance()
            wfs = [w for w in self._store["workflows"].values()
                   if workflow is None or workflow in (w["name"], w["id"])]
            if not wfs:
                if workflow is not None:
                    raise KeyError(workflow)
                self.seed_workflows(1)
                wfs = list(self._store["workflows"].values())
            running = round(n * running_fraction)
            ids = []
            for i in range(n):
                wf = wfs[i % len(wfs)]
                steps = self._plan(self._wf_tasks(wf))
                total = self._planned_duration(steps)
                if i < running:
                    started = now - self._rng.uniform(0.0, 0.9) * total
                else:
                    started = now - total - self._rng.uniform(0.0, spread)
                ids.append(self._start_execution(wf, started, "{}", {}, "", self.project_id,
                                                 steps=steps))
            self._advance()
            return ids

    def seed_environments(self, n: int, *, prefix: str = "env") -> list[str]:
        """Create ``n`` environments; return their names."""
        with self._lock:
            now = self._advance()
            start = len(self._store["environments"])
            names = [f"{prefix}_{i:04d}" for i in range(start, start + n)]
            for name in names:
                self._put("environments", str(uuid.uuid4()), {
                    "id": None, "name": name, "description": f"seeded {name}",
                    "variables": json.dumps({"region": "RegionOne", "index": start}),
                    "scope": "private", "project_id": self.project_id,
                    "created_at": _ts(now), "updated_at": None,
                }, now)
            return names

    def seed_cron_triggers(self, n: int, *, pattern: str = "*/5 * * * *",
                           workflow: str | None = None) -> list[str]:
        """Create ``n`` cron triggers that fire on ``pattern``; return their names."""
        with self._lock:
            if not self._store["workflows"]:
                self.seed_workflows(1)
            wf = next(w for w in self._store["workflows"].values()
                      if workflow in (None, w["name"], w["id"]))
            start = len(self._store["cron_triggers"])
            names = [f"cron_{i:04d}" for i in range(start, start + n)]
            for name in names:
                self._create_cron({"name": name, "pattern": pattern, "workflow_id": wf["id"]},
                                  self.project_id, self._advance())
            return names

    def ids(self, kind: str) -> list[str]:
        """Ids of the live resources of ``kind`` (e.g. ``"executions"``)."""
        with self._lock:
            self._advance()
            return list(self._store[kind])

    # -- ground truth ------------------------------------------------------------------

    def history(self, kind: str, ident: str) -> list[Version]:
        """Every version of a resource (by id, or name in namespace ''), oldest first."""
        with self._lock:
            self._advance()
            return list(self._history[kind, self._resolve(kind, ident)])

    def state_at(self, kind: str, ident: str, at: float | None = None) -> Version:
        """The true version at ``at`` (default: now); number 0 if not yet created."""
        with self._lock:
            now = self._advance()
            when = now if at is None else at
            current = Version(0, float("-inf"), None)
            for version in self._history[kind, self._resolve(kind, ident)]:
                if version.started_at > when:
                    break
                current = version
            return current

    def version_of(self, kind: str, ident: str, data: Mapping[str, Any]) -> int:
        """The newest version whose value agrees with ``data`` (a read, e.g. ``to_dict()``).

        Only keys present in both are compared, so ``fields=`` probes and list rows
        work; 0 when no version matches.
        """
        with self._lock:
            for version in reversed(self._history[kind, self._resolve(kind, ident)]):
                value = version.value
                if value is not None and all(
                    value[k] == v for k, v in data.items() if k in value
                ):
                    return version.number
            return 0

    def staleness(self, kind: str, ident: str, version: int, at: float | None = None) -> float:
        """Seconds a read of ``version`` at ``at`` lagged the truth; 0.0 if it was current."""
        with self._lock:
            now = self._advance()
            when = now if at is None else at
            truth = self.state_at(kind, ident, when)
            if version >= truth.number:
                return 0.0
            newer = self._history[kind, self._resolve(kind, ident)][version]
            return max(0.0, when - newer.started_at)

    def staleness_of(self, kind: str, ident: str, data: Mapping[str, Any],
                     at: float | None = None) -> float:
        """:meth:`staleness` of a read given by its value rather than its version."""
        with self._lock:
            return self.staleness(kind, ident, self.version_of(kind, ident, data), at)

    def _resolve(self, kind: str, ident: str) -> str:
        if (kind, ident) in self._history:
            return ident
        for rec in self._store[kind].values():
            if rec.get("name") == ident and rec.get("namespace", "") in ("", None):
                return str(rec["id"])
        for (k, rid), versions in self._history.items():
            if k == kind and any(v.value and v.value.get("name") == ident for v in versions):
                return rid
        raise KeyError(f"{kind}/{ident}")

    # -- state changes -----------------------------------------------------------------

    def _put(self, kind: str, rid: str, rec: JSON | None, t: float) -> Record | None:
        """Store ``rec`` (None deletes) as the resource's next version, true from ``t``."""
        if rec is None:
            self._store[kind].pop(rid, None)
        else:
            rec["id"] = rid
            self._store[kind][rid] = rec
        versions = self._history.setdefault((kind, rid), [])
        versions.append(Version(len(versions) + 1, t, rec))
        return rec

    def _update(self, kind: str, rid: str, t: float, **changes: Any) -> Record:
        rec = {**self._store[kind][rid], **changes, "updated_at": _ts(t)}
        self._put(kind, rid, rec, t)
        return rec

    def _at(self, t: float, action: Callable[[float], None]) -> None:
        heapq.heappush(self._events, (t, next(self._seq), action))

    def _advance(self) -> float:
        """Apply every scheduled change due by now, in time order; return now."""
        now = self._clock()
        while self._events and self._events[0][0] <= now:
            t, _, action = heapq.heappop(self._events)
            action(t)
        return now

    # -- the engine ----------------------------------------------------------------------

    @staticmethod
    def _wf_tasks(wf: Record) -> list[str]:
        return list(_task_names(str(wf["definition"]), str(wf["name"])))

    def _plan(self, tasks: list[str]) -> list[tuple[str, float, bool]]:
        share = self.mean_duration / len(tasks)
        failing = self._rng.randrange(len(tasks)) if self._rng.random() < self.error_rate else -1
        return [(name, share * self._rng.uniform(0.5, 1.5), i != failing)
                for i, name in enumerate(tasks)]

    @staticmethod
    def _planned_duration(steps: list[tuple[str, float, bool]]) -> float:
        total = 0.0
        for _, duration, ok in steps:
            total += duration
            if not ok:
                break
        return total

    def _start_execution(self, wf: Record, t: float, input_json: str, params: JSON,
                         description: str, project: str, *, ex_id: str | None = None,
                         steps: list[tuple[str, float, bool]] | None = None) -> str:
        rid = ex_id or str(uuid.uuid4())
        self._put("executions", rid, {
            "id": rid, "workflow_id": wf["id"], "workflow_name": wf["name"],
            "workflow_namespace": wf["namespace"], "description": description, "tags": None,
            "params": json.dumps({"namespace": wf["namespace"], **params}),
            "task_execution_id": None, "root_execution_id": None, "state": "RUNNING",
            "state_info": None, "input": input_json, "output": "{}", "created_at": _ts(t),
            "updated_at": _ts(t), "project_id": project, "published_global": "{}",
        }, t)
        run = _Run(rid, steps or self._plan(self._wf_tasks(wf)))
        self._runs[rid] = run
        epoch = run.epoch
        self._at(t, lambda when: self._begin_task(run, epoch, when))
        return rid

    def _begin_task(self, run: _Run, epoch: int, t: float, duration: float | None = None) -> None:
        if run.epoch != epoch or run.ex_id not in self._store["executions"]:
            return
        name, planned, _ = run.steps[run.index]
        if run.task_id is None:
            ex = self._store["executions"][run.ex_id]
            run.task_id = str(uuid.uuid4())
            self._put("tasks", run.task_id, {
                "id": run.task_id, "name": name, "type": "ACTION",
                "workflow_name": ex["workflow_name"],
                "workflow_namespace": ex["workflow_namespace"],
                "workflow_id": ex["workflow_id"], "workflow_execution_id": run.ex_id,
                "tags": None, "state": "RUNNING", "state_info": None,
                "project_id": ex["project_id"],
                "runtime_context": json.dumps({"triggered_by": [], "retry_task_policy": {}}),
                "result": "null", "published": "{}", "published_global": "{}",
                "processed": False, "created_at": _ts(t), "updated_at": _ts(t),
                "started_at": _ts(t), "finished_at": None,
            }, t)
        run.task_end = t + (planned if duration is None else duration)
        self._at(run.task_end, lambda when: self._end_task(run, epoch, when))

    def _end_task(self, run: _Run, epoch: int, t: float) -> None:
        if run.epoch != epoch or run.task_id is None or run.ex_id not in self._store["executions"]:
            return
        name, _, ok = run.steps[run.index]
        task_id, run.task_id, run.task_end = run.task_id, None, None
        if task_id in self._store["tasks"]:
            self._update(
                "tasks", task_id, t, state="SUCCESS" if ok else "ERROR", processed=True,
                state_info=None if ok else f"Failed to run action [action_ex_id={uuid.uuid4()}]",
                result=json.dumps(f"{name} done") if ok else "null",
                published=json.dumps({f"{name}_done": True}) if ok else "{}",
                finished_at=_ts(t),
            )
        if not ok:
            self._update("executions", run.ex_id, t, state="ERROR",
                         state_info=f"Failure caused by error in tasks: {name}")
        elif run.index + 1 < len(run.steps):
            run.index += 1
            self._begin_task(run, epoch, t)
        else:
            ex = self._store["executions"][run.ex_id]
            self._update("executions", run.ex_id, t, state="SUCCESS",
                         output=json.dumps({"result": f"{ex['workflow_name']} done"}))

    def _set_execution_state(self, rid: str, state: str, info: str | None, t: float) -> None:
        ex = self._store["executions"][rid]
        run = self._runs.get(rid)
        current = ex["state"]
        if state == current:
            return
        if state == "PAUSED" and current == "RUNNING":
            if run is not None:
                run.epoch += 1
                run.remaining = None if run.task_end is None else max(0.0, run.task_end - t)
        elif state == "RUNNING" and current == "PAUSED":
            if run is not None:
                run.epoch += 1
                epoch = run.epoch
                self._at(t, lambda when: self._begin_task(run, epoch, when, run.remaining))
        elif state in _FINAL and current not in _FINAL:
            if run is not None:
                run.epoch += 1
                if run.task_id in self._store["tasks"]:
                    task_state = "SUCCESS" if state == "SUCCESS" else state
                    self._update("tasks", str(run.task_id), t, state=task_state,
                                 processed=True, finished_at=_ts(t))
                run.task_id = None
        elif current in _FINAL and state in _FINAL:
            return
        else:
            raise _ApiError(400, f"Cannot change state from {current} to {state}.")
        self._update("executions", rid, t, state=state, state_info=info)

    # -- definitions ---------------------------------------------------------------------

    def _find(self, kind: str, ident: str, namespace: str | None, project: str,
              *, by_id: bool = True) -> Record | None:
        for rec in self._store[kind].values():
            if not self._visible(rec, project):
                continue
            if by_id and rec["id"] == ident:
                return rec
            if rec.get("name") == ident and (namespace is None or rec.get("namespace") == namespace):
                return rec
        return None

    @staticmethod
    def _visible(rec: Record, project: str, all_projects: bool = False) -> bool:
        return (all_projects or rec.get("project_id") in (project, None)
                or rec.get("scope") == "public")

    def _create_workflows(self, definition: str, namespace: str, scope: str, project: str,
                          t: float, workbook: str = "") -> list[Record]:
        doc = _parse_dsl(definition)
        specs = _workflow_specs(doc)
        created = []
        for spec in specs:
            name = f"{workbook}.{spec.name}" if workbook else spec.name
            if any(w["name"] == name and w["namespace"] == namespace and w["project_id"] == project
                   for w in self._store["workflows"].values()):
                raise _ApiError(409, "Duplicate entry for WorkflowDefinition ['name', "
                                f"'namespace', 'project_id']: {name}, {namespace}, {project}")
            rec = self._wf_record(spec, name, definition, namespace, scope, project)
            created.append(self._put("workflows", str(uuid.uuid4()),
                                     {**rec, "created_at": _ts(t), "updated_at": None}, t))
        return [c for c in created if c is not None]

    @staticmethod
    def _wf_record(spec: _WfSpec, name: str, definition: str, namespace: str, scope: str,
                   project: str) -> JSON:
        return {
            "id": None, "name": name, "namespace": namespace, "input": spec.input,
            "interface": spec.interface, "definition": definition,
            "checksum": hashlib.md5(definition.encode(), usedforsecurity=False).hexdigest(),
            "tags": spec.tags, "scope": scope, "project_id": project,
        }

    def _create_cron(self, body: JSON, project: str, t: float) -> Record:
        name = body.get("name")
        if not name:
            raise _ApiError(400, "Cron trigger name must be provided.")
        pattern, first = body.get("pattern"), body.get("first_execution_time")
        if not pattern and not first:
            raise _ApiError(400, "Pattern or first_execution_time must be specified.")
        if self._find("cron_triggers", name, None, project, by_id=False):
            raise _ApiError(409, f"Duplicate entry for cron trigger ['name', 'project_id']: {name}")
        wf_ident = body.get("workflow_id") or body.get("workflow_name") or ""
        wf = self._find("workflows", wf_ident, None if body.get("workflow_id") else "", project)
        if wf is None:
            raise _not_found("workflows", workflow_identifier=wf_ident, namespace="")
        period = self._cron_period(pattern)
        if first:
            next_t = _epoch(_norm_ts(first))
        else:
            next_t = (int(t) // period + 1) * period
        remaining = body.get("remaining_executions")
        rec = self._put("cron_triggers", str(uuid.uuid4()), {
            "id": None, "name": name, "workflow_name": wf["name"], "workflow_id": wf["id"],
            "workflow_input": json.dumps(_json_obj(body.get("workflow_input"), "workflow_input")),
            "workflow_params": json.dumps(_json_obj(body.get("workflow_params"), "workflow_params")),
            "project_id": project, "scope": "private", "pattern": pattern or "0 0 30 2 0",
            "remaining_executions": int(remaining) if remaining else None,
            "first_execution_time": _ts(next_t) if first else None,
            "next_execution_time": _ts(next_t), "created_at": _ts(t), "updated_at": None,
        }, t)
        assert rec is not None
        rid = str(rec["id"])
        self._at(next_t, lambda when: self._fire_cron(rid, period if pattern else 0, when))
        return rec

    @staticmethod
    def _cron_period(pattern: str | None) -> int:
        """Seconds between firings: minute fields ``*`` and ``*/N`` exactly, others hourly."""
        minute = (pattern or "").split()[:1]
        if minute == ["*"]:
            return 60
        if minute and minute[0].startswith("*/") and minute[0][2:].isdigit():
            return 60 * max(1, int(minute[0][2:]))
        return 3600

    def _fire_cron(self, rid: str, period: int, t: float) -> None:
        trig = self._store["cron_triggers"].get(rid)
        if trig is None:
            return
        wf = self._store["workflows"].get(str(trig["workflow_id"]))
        if wf is not None:
            self._start_execution(wf, t, str(trig["workflow_input"]),
                                  json.loads(str(trig["workflow_params"])), "", str(trig["project_id"]))
        remaining = trig["remaining_executions"]
        if (remaining is not None and remaining <= 1) or not period:
            self._put("cron_triggers", rid, None, t)
            return
        self._update("cron_triggers", rid, t, next_execution_time=_ts(t + period),
                     remaining_executions=None if remaining is None else remaining - 1)
        self._at(t + period, lambda when: self._fire_cron(rid, period, when))

    # -- HTTP ----------------------------------------------------------------------------

    def _route(self, method: str, path: str) -> tuple[str, Handler | None, dict[str, str]]:
        if not path.startswith("/v2/"):
            return path, None, {}
        rest = path[3:]
        for pattern, template in _ROUTES:
            m = pattern.match(rest)
            if m is None:
                continue
            args = {k: unquote(v) for k, v in m.groupdict().items() if v is not None}
            kind = args.pop("kind", "")
            name = template.replace("{kind}", kind)
            if kind and kind not in _KINDS:
                return name, None, {}
            return name, self._api.get((method, name)), args
        return rest, None, {}

    def handle(self, method: str, target: str, body: bytes = b"",
               headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
        """Serve one request (as the HTTP layer does); return (status, JSON body or None)."""
        headers = headers or {}
        split = urlsplit(target)
        route, handler, args = self._route(method, split.path)
        with self._lock:
            self.requests[(method, route)] += 1
        req = _Req(
            params=dict(parse_qsl(split.query, keep_blank_values=True)), body=body,
            ident=args.get("id", ""), extra=args.get("extra", ""),
            project=headers.get("X-Project-Id") or self.project_id,
            host=headers.get("Host") or f"{self.host}:{self.port}",
        )
        with self._slots or contextlib.nullcontext():
            self._pause(method, route, 0)
            with self._lock:
                self._advance()
                try:
                    if handler is None:
                        known = any(r == route for _, r in self._api)
                        raise _ApiError(405 if known else 404,
                                        "Method not allowed." if known
                                        else "The resource could not be found.")
                    status, payload = handler(req)
                except _ApiError as exc:
                    status, payload = exc.status, {
                        "faultcode": "Client" if exc.status < 500 else "Server",
                        "faultstring": exc.message, "debuginfo": None,
                    }
            self._pause(method, "", req.items)
        return status, payload

    def _pause(self, method: str, route: str, items: int) -> None:
        if self.latency_scale <= 0:
            return
        if route:
            base = SERVICE_TIME_MS.get((method, route)) or SERVICE_TIME_MS[(method, "*")]
        else:
            base = items * PER_ITEM_MS
        if base <= 0:
            return
        with self._latency_lock:
            jitter = self._latency_rng.lognormvariate(0.0, JITTER_SIGMA)
        self._sleep(base * jitter * self.latency_scale / 1000.0)

    def _build_api(self) -> dict[tuple[str, str], Handler]:
        api: dict[tuple[str, str], Handler] = {}
        for kind in _KINDS:
            if kind != "actions":
                api[("GET", f"/{kind}")] = functools.partial(self._list, kind)
        for kind in ("executions", "tasks", "environments", "cron_triggers"):
            api[("GET", f"/{kind}/{{id}}")] = functools.partial(self._get_simple, kind)
        for kind in ("workflows", "workbooks"):
            api[("GET", f"/{kind}/{{id}}")] = functools.partial(self._get_named_ns, kind)
            api[("DELETE", f"/{kind}/{{id}}")] = functools.partial(self._delete_named_ns, kind)
        for kind in ("environments", "cron_triggers"):
            api[("DELETE", f"/{kind}/{{id}}")] = functools.partial(self._delete_simple, kind)
        api.update({
            ("POST", "/workflows"): self._post_workflows,
            ("PUT", "/workflows"): self._put_workflows,
            ("PUT", "/workflows/{id}"): self._put_workflows,
            ("POST", "/executions"): self._post_execution,
            ("PUT", "/executions/{id}"): self._put_execution,
            ("DELETE", "/executions/{id}"): self._delete_execution,
            ("GET", "/executions/{id}/tasks"): self._list_execution_tasks,
            ("PUT", "/tasks/{id}"): self._rerun_task,
            ("GET", "/actions"): self._list_actions,
            ("GET", "/actions/{id}"): self._get_action,
            ("POST", "/workbooks"): self._post_workbook,
            ("PUT", "/workbooks"): self._put_workbook,
            ("POST", "/environments"): self._post_environment,
            ("PUT", "/environments"): self._put_environment,
            ("POST", "/cron_triggers"): self._post_cron,
        })
        return api

    # -- reads -----------------------------------------------------------------------------

    @staticmethod
    def _fields(kind: str, raw: str | None) -> list[str]:
        """Parse ``fields=`` like Mistral: unique, lower-cased, validated, 'id' first."""
        fields = list(dict.fromkeys(f.strip() for f in (raw or "").lower().split(",") if f.strip()))
        bad = set(fields) - set(_KINDS[kind].fields)
        if bad:
            raise _ApiError(400, "Some fields do not exist  [{}], please choose from [{}]".format(
                ", ".join(sorted(bad)), ", ".join(_KINDS[kind].fields)))
        if fields and "id" not in fields:
            fields.insert(0, "id")
        return fields

    @staticmethod
    def _render(kind: str, rec: Record, fields: list[str], listing: bool = False,
                include_output: bool = False) -> JSON:
        spec = _KINDS[kind]
        if fields:
            return {f: rec.get(f) for f in spec.fields if f in fields}
        hidden = spec.hidden_in_lists if listing else frozenset()
        if include_output:
            hidden = hidden - {"output"}
        return {f: rec.get(f) for f in spec.fields if f not in hidden}

    def _get_simple(self, kind: str, req: _Req) -> tuple[int, Any]:
        req.allow({"fields"})
        fields = self._fields(kind, req.params.get("fields"))
        by_name = kind in ("environments", "cron_triggers")
        rec = self._store[kind].get(req.ident)
        if rec is None and by_name:
            rec = self._find(kind, req.ident, None, req.project, by_id=False)
        if rec is None or not self._visible(rec, req.project):
            raise _not_found(kind, **({"name": req.ident} if by_name else {"id": req.ident}))
        return 200, self._render(kind, rec, fields)

    def _get_named_ns(self, kind: str, req: _Req) -> tuple[int, Any]:
        req.allow({"namespace", "fields"})
        fields = self._fields(kind, req.params.get("fields"))
        namespace = req.params.get("namespace", "")
        rec = self._find(kind, req.ident, namespace, req.project)
        if rec is None:
            key = "workflow_identifier" if kind == "workflows" else "name"
            raise _not_found(kind, **{key: req.ident, "namespace": namespace})
        return 200, self._render(kind, rec, fields)

    def _list(self, kind: str, req: _Req, scope: Callable[[Record], bool] | None = None,
              extra_filters: frozenset[str] = frozenset()) -> tuple[int, Any]:
        spec = _KINDS[kind]
        allowed = (spec.filters | _LIST_ARGS) - extra_filters
        req.allow(allowed)
        p = req.params
        limit = self._limit(p.get("limit"))
        keys = [k.strip().lower() for k in (p.get("sort_keys") or "created_at").split(",") if k.strip()]
        dirs = [d.strip().lower() for d in (p.get("sort_dirs") or "asc").split(",") if d.strip()]
        if len(keys) < len(dirs):
            raise _ApiError(400, "Length of sort_keys must be equal or greater than sort_dirs.")
        dirs += ["asc"] * (len(keys) - len(dirs))
        if any(d not in ("asc", "desc") for d in dirs):
            raise _ApiError(400, "Unknown sort direction, must be 'desc' or 'asc'.")
        if any(k not in spec.fields for k in keys):
            raise _ApiError(400, f"Invalid sort key: {p.get('sort_keys')}")
        if "id" not in keys:
            keys.append("id")
            dirs.append("asc")
        fields = self._fields(kind, p.get("fields"))
        filters = self._filters(kind, p)
        nulls = [n.strip() for n in p.get("nulls", "").split(",") if n.strip()]
        everyone = req.flag("all_projects")
        rows = [
            rec for rec in self._store[kind].values()
            if self._visible(rec, req.project, everyone) and (scope is None or scope(rec))
            and all(self._match(rec, f, op, v) for f, op, v in filters)
            and all(rec.get(n) is None for n in nulls)
        ]
        self._sort(rows, keys, dirs)
        compare = functools.partial(self._compare, keys=keys, dirs=dirs)
        marker = p.get("marker")
        if marker:
            mrec = self._store[kind].get(marker)
            if mrec is None:
                raise _not_found(kind, id=marker)
            rows = [r for r in rows if compare(r, mrec) > 0]
        rows = rows[:limit]
        req.items = len(rows)
        out: JSON = {kind: [self._render(kind, r, fields, True, req.flag("include_output"))
                            for r in rows]}
        if rows and len(rows) == limit:
            args = f"sort_keys={','.join(keys)}&sort_dirs={','.join(dirs)}&"
            for f, op, v in filters:
                args += f"{f}={op}:{','.join(v) if isinstance(v, list) else v}&"
            nxt = f"http://{req.host}/v2/{kind}?{args}limit={limit}&marker={rows[-1]['id']}"
            if fields:
                nxt += f"&fields={','.join(fields)}"
            out["next"] = nxt
        return 200, out

    def _limit(self, raw: str | None) -> int:
        if raw is None or raw == "":
            return self.max_limit
        try:
            limit = int(raw)
        except ValueError:
            raise _ApiError(400, f"Invalid input for field/attribute limit. Value: '{raw}'.") from None
        if limit <= 0:
            raise _ApiError(400, "Limit must be positive.")
        return min(limit, self.max_limit)

    @staticmethod
    def _sort(rows: list[Record], keys: list[str], dirs: list[str]) -> None:
        """Sort in place like :meth:`_compare`, one stable pass per key, last key first."""
        for key, direction in reversed(list(zip(keys, dirs))):
            rows.sort(key=_nulls_last(key), reverse=direction == "desc")

    @staticmethod
    def _compare(a: Record, b: Record, *, keys: list[str], dirs: list[str]) -> int:
        for key, direction in zip(keys, dirs):
            x, y = a.get(key), b.get(key)
            if x == y:
                continue
            if x is None or y is None:
                result = 1 if x is None else -1  # NULLS LAST ascending, as PostgreSQL
            else:
                try:
                    result = -1 if x < y else 1
                except TypeError:
                    result = -1 if str(x) < str(y) else 1
            return result if direction == "asc" else -result
        return 0

    @staticmethod
    def _filters(kind: str, params: Mapping[str, str]) -> list[tuple[str, str, Any]]:
        out: list[tuple[str, str, Any]] = []
        for name in sorted(_KINDS[kind].filters - {"all_projects", "include_output", "nulls"}):
            if name not in params:
                continue
            raw = params[name]
            op, value = "eq", raw
            for candidate in _OPS:
                if raw.startswith(candidate + ":"):
                    op, value = raw.split(":", 1)
                    break
            values: list[Any] = value.split(",") if op in ("in", "nin") else [value]
            if name in _DATES:
                values = [_norm_ts(v) for v in values]
            elif name in _BOOLS:
                values = [v.lower() in ("true", "1", "yes", "on") for v in values]
            elif name == "remaining_executions":
                try:
                    values = [int(v) for v in values]
                except ValueError:
                    raise _ApiError(400, f"Invalid integer filter: {raw!r}") from None
            out.append((name, op, values if op in ("in", "nin") else values[0]))
        return out

    @staticmethod
    def _match(rec: Record, name: str, op: str, value: Any) -> bool:
        if name not in rec:
            return True
        x = rec[name]
        if x is None:
            return False
        try:
            return bool(_COMPARE[op](x, value))
        except TypeError:
            raise _ApiError(400, f"Cannot apply filter {op} to field {name}") from None

    def _list_execution_tasks(self, req: _Req) -> tuple[int, Any]:
        ex_id = req.ident
        return self._list("tasks", req, lambda r: r["workflow_execution_id"] == ex_id,
                          frozenset({"workflow_execution_id"}))

    def _list_actions(self, req: _Req) -> tuple[int, Any]:
        # Mirrors Mistral's action controller: sorted by name, the marker is a name and
        # its row is included again, an unknown marker restarts, no max_limit clamp.
        req.allow(_KINDS["actions"].filters | _LIST_ARGS)
        p = req.params
        namespace = p.get("namespace", "")
        limit = self._limit(p["limit"]) if p.get("limit") else None
        keys = [k for k in (p.get("sort_keys") or "name").lower().split(",") if k]
        dirs = [d for d in (p.get("sort_dirs") or "asc").lower().split(",") if d]
        dirs += ["asc"] * (len(keys) - len(dirs))
        filters = [f for f in self._filters("actions", p) if f[0] != "namespace"]
        rows = [r for r in self._store["actions"].values()
                if r["namespace"] == namespace and self._visible(r, req.project)
                and all(self._match(r, f, op, v) for f, op, v in filters)]
        self._sort(rows, keys, dirs)
        start = next((i for i, r in enumerate(rows) if r["name"] == p.get("marker")), 0)
        if limit:
            rows = rows[start:start + limit]
        req.items = len(rows)
        fields = self._fields("actions", p.get("fields"))
        out: JSON = {"actions": [self._render("actions", r, fields) for r in rows]}
        if limit and rows and len(rows) == limit:
            out["next"] = (f"http://{req.host}/v2/actions?sort_keys={','.join(keys)}&sort_dirs="
                           f"{','.join(dirs)}&limit={limit}&marker={rows[-1]['id']}")
        return 200, out

    def _get_action(self, req: _Req) -> tuple[int, Any]:
        req.allow(set())
        namespace = req.extra
        rec = self._find("actions", req.ident, namespace, req.project)
        if rec is None:
            raise _ApiError(404, f"Action not found [name={req.ident}, namespace={namespace}]")
        return 200, self._render("actions", rec, [])

    # -- writes ----------------------------------------------------------------------------

    @staticmethod
    def _scope(req: _Req) -> str:
        scope = req.params.get("scope") or "private"
        if scope not in ("private", "public"):
            raise _ApiError(400, "Scope must be one of the following: ['private', 'public']; "
                                 f"actual: {scope}")
        return scope

    def _post_workflows(self, req: _Req) -> tuple[int, Any]:
        req.allow({"namespace", "scope", "skip_validation"})
        t = self._advance()
        made = self._create_workflows(req.text(), req.params.get("namespace", ""),
                                      self._scope(req), req.project, t)
        return 201, {"workflows": [self._render("workflows", w, []) for w in made]}

    def _put_workflows(self, req: _Req) -> tuple[int, Any]:
        req.allow({"namespace", "scope", "skip_validation"})
        t, namespace, scope = self._advance(), req.params.get("namespace", ""), self._scope(req)
        definition = req.text()
        specs = _workflow_specs(_parse_dsl(definition))
        if req.ident and len(specs) != 1:
            raise _ApiError(400, "More than one workflows are not supported for update with "
                                 "identifier.")
        updated = []
        for spec in specs:
            ident = req.ident or spec.name
            rec = self._find("workflows", ident, None if req.ident else namespace, req.project)
            if rec is None or rec["project_id"] != req.project:
                raise _not_found("workflows", workflow_identifier=ident, namespace=namespace)
            new = self._wf_record(spec, spec.name, definition, str(rec["namespace"]), scope,
                                  req.project)
            updated.append(self._update("workflows", str(rec["id"]), t,
                                        **{k: v for k, v in new.items() if k != "id"}))
        rendered = [self._render("workflows", w, []) for w in updated]
        return 200, rendered[0] if req.ident else {"workflows": rendered}

    def _delete_named_ns(self, kind: str, req: _Req) -> tuple[int, Any]:
        req.allow({"namespace"})
        namespace = req.params.get("namespace", "")
        rec = self._find(kind, req.ident, namespace, req.project)
        if rec is None or rec["project_id"] != req.project:
            key = "workflow_identifier" if kind == "workflows" else "name"
            raise _not_found(kind, **{key: req.ident, "namespace": namespace})
        t = self._advance()
        if kind == "workbooks":
            for wf in self._workbook_workflows(rec):
                self._put("workflows", str(wf["id"]), None, t)
        self._put(kind, str(rec["id"]), None, t)
        return 204, None

    def _post_execution(self, req: _Req) -> tuple[int, Any]:
        req.allow(set())
        body = req.json()
        t = self._advance()
        if body.get("id") and body["id"] in self._store["executions"]:
            return 201, self._render("executions", self._store["executions"][body["id"]], [])
        description = str(body.get("description") or "")
        source = body.get("source_execution_id")
        if source:
            src = self._store["executions"].get(source)
            if src is None or not self._visible(src, req.project):
                raise _not_found("executions", id=source)
            body = {"workflow_id": src["workflow_id"], "input": src["input"], **body}
            description = f"{description} Based on the execution '{source}'".strip()
        ident = body.get("workflow_id") or body.get("workflow_name")
        if not ident:
            raise _ApiError(400, "Workflow ID or workflow name must be provided. Workflow ID "
                                 "is recommended.")
        namespace = str(body.get("workflow_namespace") or "")
        wf = self._find("workflows", ident, None if body.get("workflow_id") else namespace,
                        req.project)
        if wf is None:
            raise _not_found("workflows", workflow_identifier=ident, namespace=namespace)
        input_json = json.dumps(_json_obj(body.get("input"), "input"))
        params = _json_obj(body.get("params"), "params")
        rid = self._start_execution(wf, t, input_json, params, description, req.project,
                                    ex_id=body.get("id"))
        self._advance()
        rec = self._store["executions"][rid]
        return 201, {k: v for k, v in self._render("executions", rec, []).items()
                     if k != "published_global"}

    def _execution(self, req: _Req) -> Record:
        rec = self._store["executions"].get(req.ident)
        if rec is None or not self._visible(rec, req.project):
            raise _not_found("executions", id=req.ident)
        return rec

    def _put_execution(self, req: _Req) -> tuple[int, Any]:
        req.allow(set())
        t = self._advance()
        body, ex = req.json(), self._execution(req)
        state, description = body.get("state"), body.get("description")
        env = (_json_obj(body.get("params"), "params") or {}).get("env")
        if not (state or description or env):
            raise _ApiError(400, "The property state, description, or env is not provided "
                                 "for update.")
        if description and state:
            raise _ApiError(400, "The property description must be updated separately from "
                                 "state.")
        if env and state and state != "RUNNING":
            raise _ApiError(400, "The property env can only be updated when workflow execution "
                                 "is not running or on resume from pause.")
        rid = str(ex["id"])
        if description:
            self._update("executions", rid, t, description=description)
        if env:
            params = json.loads(str(ex["params"]))
            params["env"] = {**params.get("env", {}), **env}
            self._update("executions", rid, t, params=json.dumps(params))
        if state:
            if state not in ("RUNNING", "PAUSED", *_FINAL):
                raise _ApiError(400, f"Cannot change state to {state}. Allowed states are: "
                                     "'RUNNING, PAUSED, SUCCESS, ERROR, CANCELLED")
            self._set_execution_state(rid, state, body.get("state_info"), t)
        return 200, self._render("executions", self._store["executions"][rid], [])

    def _delete_execution(self, req: _Req) -> tuple[int, Any]:
        req.allow({"force"})
        t = self._advance()
        ex = self._execution(req)
        if not req.flag("force") and ex["state"] not in _FINAL:
            raise _ApiError(403, "Only completed executions can be deleted. Use --force to "
                                 f"override this. Execution {ex['id']} is in {ex['state']} state")
        rid = str(ex["id"])
        run = self._runs.pop(rid, None)
        if run is not None:
            run.epoch += 1
        for task in [r for r in self._store["tasks"].values() if r["workflow_execution_id"] == rid]:
            self._put("tasks", str(task["id"]), None, t)
        self._put("executions", rid, None, t)
        return 204, None

    def _rerun_task(self, req: _Req) -> tuple[int, Any]:
        req.allow(set())
        body, t = req.json(), self._advance()
        task = self._store["tasks"].get(req.ident)
        if task is None or not self._visible(task, req.project):
            raise _not_found("tasks", id=req.ident)
        if body.get("state") != "RUNNING":
            raise _ApiError(400, "Only rerun of a task (state RUNNING) is supported.")
        run = self._runs.get(str(task["workflow_execution_id"]))
        ex = self._store["executions"].get(str(task["workflow_execution_id"]))
        if task["state"] != "ERROR" or run is None or ex is None or ex["state"] != "ERROR":
            raise _ApiError(400, f"Failed to rerun the task because it is not in ERROR state "
                                 f"[task_ex_id={task['id']}, state={task['state']}]")
        name = run.steps[run.index][0]
        duration = self.mean_duration / len(run.steps) * self._rng.uniform(0.5, 1.5)
        run.steps[run.index] = (name, duration, self._rng.random() >= self.error_rate)
        run.epoch += 1
        run.task_id = str(task["id"])
        self._update("tasks", run.task_id, t, state="RUNNING", state_info=None, processed=False,
                     finished_at=None)
        self._update("executions", str(ex["id"]), t, state="RUNNING", state_info=None)
        epoch = run.epoch
        self._at(t, lambda when: self._begin_task(run, epoch, when))
        self._advance()
        return 200, self._render("tasks", self._store["tasks"][run.task_id], [])

    def _workbook_workflows(self, wb: Record) -> list[Record]:
        prefix = f"{wb['name']}."
        return [w for w in self._store["workflows"].values()
                if str(w["name"]).startswith(prefix) and w["namespace"] == wb["namespace"]
                and w["project_id"] == wb["project_id"]]

    def _workbook_doc(self, definition: str) -> tuple[str, JSON]:
        doc = _parse_dsl(definition)
        name = doc.get("name")
        if not name:
            raise _ApiError(400, "Invalid DSL: a workbook must have a 'name'")
        workflows = doc.get("workflows") or {}
        if not isinstance(workflows, dict):
            raise _ApiError(400, "Invalid DSL: 'workflows' must be a mapping")
        return str(name), workflows

    def _post_workbook(self, req: _Req) -> tuple[int, Any]:
        req.allow({"namespace", "scope", "skip_validation"})
        definition, t = req.text(), self._advance()
        name, workflows = self._workbook_doc(definition)
        namespace, scope = req.params.get("namespace", ""), self._scope(req)
        if any(w["name"] == name and w["namespace"] == namespace and w["project_id"] == req.project
               for w in self._store["workbooks"].values()):
            raise _ApiError(409, "Duplicate entry for WorkbookDefinition ['name', 'namespace', "
                                 f"'project_id']: {name}, {namespace}, {req.project}")
        rec = self._put("workbooks", str(uuid.uuid4()), {
            "id": None, "name": name, "namespace": namespace, "definition": definition,
            "tags": [], "scope": scope, "project_id": req.project, "created_at": _ts(t),
            "updated_at": None,
        }, t)
        assert rec is not None
        for spec in _workflow_specs(workflows, f"{name}."):
            self._put("workflows", str(uuid.uuid4()), {
                **self._wf_record(spec, spec.name, definition, namespace, scope, req.project),
                "created_at": _ts(t), "updated_at": None,
            }, t)
        return 201, self._render("workbooks", rec, [])

    def _put_workbook(self, req: _Req) -> tuple[int, Any]:
        req.allow({"namespace", "scope", "skip_validation"})
        definition, t = req.text(), self._advance()
        name, workflows = self._workbook_doc(definition)
        namespace, scope = req.params.get("namespace", ""), self._scope(req)
        wb = self._find("workbooks", name, namespace, req.project, by_id=False)
        if wb is None:
            raise _not_found("workbooks", workbook_name=name, namespace=namespace)
        specs = {s.name: s for s in _workflow_specs(workflows, f"{name}.")}
        for wf in self._workbook_workflows(wb):
            spec = specs.pop(str(wf["name"]), None)
            if spec is None:
                self._put("workflows", str(wf["id"]), None, t)
            else:
                new = self._wf_record(spec, spec.name, definition, namespace, scope, req.project)
                self._update("workflows", str(wf["id"]), t,
                             **{k: v for k, v in new.items() if k != "id"})
        for spec in specs.values():
            self._put("workflows", str(uuid.uuid4()), {
                **self._wf_record(spec, spec.name, definition, namespace, scope, req.project),
                "created_at": _ts(t), "updated_at": None,
            }, t)
        rec = self._update("workbooks", str(wb["id"]), t, definition=definition, scope=scope)
        return 200, self._render("workbooks", rec, [])

    def _post_environment(self, req: _Req) -> tuple[int, Any]:
        req.allow(set())
        body, t = req.json(), self._advance()
        if set(body) - {"name", "description", "variables", "scope"}:
            raise _ApiError(400, "Please, check your environment definition. Only: "
                                 "['name', 'description', 'variables', 'scope'] are allowed as "
                                 "definition keys.")
        name = body.get("name")
        if not name:
            raise _ApiError(400, "Name of the environment is not provided.")
        if self._find("environments", name, None, req.project, by_id=False):
            raise _ApiError(409, f"Duplicate entry for Environment: ['name', 'project_id']: "
                                 f"{name}, {req.project}")
        rec = self._put("environments", str(uuid.uuid4()), {
            "id": None, "name": name, "description": body.get("description"),
            "variables": json.dumps(_json_obj(body.get("variables"), "variables")),
            "scope": body.get("scope") or "private", "project_id": req.project,
            "created_at": _ts(t), "updated_at": None,
        }, t)
        assert rec is not None
        return 201, self._render("environments", rec, [])

    def _put_environment(self, req: _Req) -> tuple[int, Any]:
        req.allow(set())
        body, t = req.json(), self._advance()
        name = body.pop("name", None)
        if not name:
            raise _ApiError(400, "Name of the environment is not provided.")
        if set(body) - {"description", "variables", "scope"}:
            raise _ApiError(400, "Please, check your environment definition. Only: "
                                 "['description', 'variables', 'scope'] are allowed as "
                                 "definition keys.")
        rec = self._find("environments", name, None, req.project, by_id=False)
        if rec is None:
            raise _not_found("environments", name=name)
        changes = {k: v for k, v in body.items() if v is not None}
        if "variables" in changes:
            changes["variables"] = json.dumps(_json_obj(changes["variables"], "variables"))
        new = self._update("environments", str(rec["id"]), t, **changes)
        return 200, self._render("environments", new, [])

    def _delete_simple(self, kind: str, req: _Req) -> tuple[int, Any]:
        req.allow(set())
        rec = self._store[kind].get(req.ident) or self._find(kind, req.ident, None, req.project,
                                                            by_id=False)
        if rec is None or not self._visible(rec, req.project):
            raise _not_found(kind, name=req.ident)
        self._put(kind, str(rec["id"]), None, self._advance())
        return 204, None

    def _post_cron(self, req: _Req) -> tuple[int, Any]:
        req.allow(set())
        rec = self._create_cron(req.json(), req.project, self._advance())
        return 201, self._render("cron_triggers", rec, [])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def _serve(self) -> None:
        sim: SimulatedMistral = cast(Any, self.server).sim
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k: v for k, v in self.headers.items()}
        status, payload = sim.handle(self.command, self.path, body, headers)
        self.send_response(status)
        if status == 204:
            self.end_headers()
            return
        data = json.dumps(payload).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: benchmarks print their own reports."""


def _iter_lines(sim: SimulatedMistral) -> Iterator[str]:
    yield f"simulated Mistral at {sim.url}"
    for kind in ("workflows", "executions", "environments", "cron_triggers"):
        yield f"  {kind}: {len(sim.ids(kind))}"


def main(argv: list[str] | None = None) -> None:
    """Run a simulator in the foreground for manual poking."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sim_mistral",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8989)
    parser.add_argument("--latency-scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workflows", type=int, default=20)
    parser.add_argument("--executions", type=int, default=200)
    parser.add_argument("--running-fraction", type=float, default=0.2)
    args = parser.parse_args(argv)
    sim = SimulatedMistral(host=args.host, port=args.port, latency_scale=args.latency_scale,
                           seed=args.seed)
    sim.seed_workflows(args.workflows)
    sim.seed_executions(args.executions, running_fraction=args.running_fraction)
    sim.seed_environments(3)
    sim.start()
    print("\n".join(_iter_lines(sim)), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
