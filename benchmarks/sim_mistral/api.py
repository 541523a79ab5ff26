"""The REST surface: the route table (method and URL template to handler), request
dispatch with Mistral's fault bodies for errors, per-route request counters, and the
simulated service time (:class:`ServiceTime`)."""

from __future__ import annotations

import contextlib
import functools
import random
import re
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .reads import Reads
from .request import Handler, Request
from .schema import KINDS, ApiError
from .store import Scheduler, Store
from .writes import Writes

__all__ = ["SERVICE_TIME_MS", "PER_ITEM_MS", "JITTER_SIGMA", "ROUTES", "ServiceTime", "Api"]

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

ROUTES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^/executions/(?P<id>[^/]+)/tasks/?$"), "/executions/{id}/tasks"),
    (re.compile(r"^/actions/(?P<id>[^/]+)(?:/(?P<extra>[^/]*))?$"), "/actions/{id}"),
    (re.compile(r"^/(?P<kind>[a-z_]+)/?$"), "/{kind}"),
    (re.compile(r"^/(?P<kind>[a-z_]+)/(?P<id>[^/]+)/?$"), "/{kind}/{id}"),
]
"""Path patterns (after ``/v2``) and the route templates they count under."""


class ServiceTime:
    """Sleeps for a request's simulated service time: the route's median
    (:data:`SERVICE_TIME_MS`) or :data:`PER_ITEM_MS` per returned item, times a
    log-normal jitter, times ``scale`` (0 disables)."""

    def __init__(self, scale: float, seed: int, sleep: Callable[[float], None]) -> None:
        self.scale = scale
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def pause(self, method: str, route: str, items: int) -> None:
        """The service time of ``route`` (or, with ``route`` empty, of ``items`` items)."""
        if self.scale <= 0:
            return
        if route:
            base = SERVICE_TIME_MS.get((method, route)) or SERVICE_TIME_MS[(method, "*")]
        else:
            base = items * PER_ITEM_MS
        if base <= 0:
            return
        with self._lock:
            jitter = self._rng.lognormvariate(0.0, JITTER_SIGMA)
        self._sleep(base * jitter * self.scale / 1000.0)


class Api:
    """Dispatches requests to the read and write handlers under the store's lock,
    counting each by (method, route template) in ``requests``."""

    def __init__(self, store: Store, scheduler: Scheduler, reads: Reads, writes: Writes, *,
                 service: ServiceTime, project_id: str, default_host: Callable[[], str],
                 max_concurrency: int | None = None) -> None:
        self.store, self.scheduler = store, scheduler
        self.reads, self.writes, self.service = reads, writes, service
        self.project_id = project_id
        self.default_host = default_host
        self.requests: Counter[tuple[str, str]] = Counter()
        self._slots = threading.BoundedSemaphore(max_concurrency) if max_concurrency else None
        self.table: dict[tuple[str, str], Handler] = self._build_table()

    def _build_table(self) -> dict[tuple[str, str], Handler]:
        reads, writes = self.reads, self.writes
        api: dict[tuple[str, str], Handler] = {}
        for kind in KINDS:
            if kind != "actions":
                api[("GET", f"/{kind}")] = functools.partial(reads.list_kind, kind)
        for kind in ("executions", "tasks", "environments", "cron_triggers"):
            api[("GET", f"/{kind}/{{id}}")] = functools.partial(reads.get_simple, kind)
        for kind in ("workflows", "workbooks"):
            api[("GET", f"/{kind}/{{id}}")] = functools.partial(reads.get_named_ns, kind)
            api[("DELETE", f"/{kind}/{{id}}")] = functools.partial(writes.delete_named_ns, kind)
        for kind in ("environments", "cron_triggers"):
            api[("DELETE", f"/{kind}/{{id}}")] = functools.partial(writes.delete_simple, kind)
        api.update({
            ("POST", "/workflows"): writes.post_workflows,
            ("PUT", "/workflows"): writes.put_workflows,
            ("PUT", "/workflows/{id}"): writes.put_workflows,
            ("POST", "/executions"): writes.post_execution,
            ("PUT", "/executions/{id}"): writes.put_execution,
            ("DELETE", "/executions/{id}"): writes.delete_execution,
            ("GET", "/executions/{id}/tasks"): reads.list_execution_tasks,
            ("PUT", "/tasks/{id}"): writes.rerun_task,
            ("GET", "/actions"): reads.list_actions,
            ("GET", "/actions/{id}"): reads.get_action,
            ("POST", "/workbooks"): writes.post_workbook,
            ("PUT", "/workbooks"): writes.put_workbook,
            ("POST", "/environments"): writes.post_environment,
            ("PUT", "/environments"): writes.put_environment,
            ("POST", "/cron_triggers"): writes.post_cron,
        })
        return api

    def route(self, method: str, path: str) -> tuple[str, Handler | None, dict[str, str]]:
        """(route template, its handler or None, the path's arguments) of a request path."""
        if not path.startswith("/v2/"):
            return path, None, {}
        rest = path[3:]
        for pattern, template in ROUTES:
            m = pattern.match(rest)
            if m is None:
                continue
            args = {k: unquote(v) for k, v in m.groupdict().items() if v is not None}
            kind = args.pop("kind", "")
            name = template.replace("{kind}", kind)
            if kind and kind not in KINDS:
                return name, None, {}
            return name, self.table.get((method, name)), args
        return rest, None, {}

    def handle(self, method: str, target: str, body: bytes = b"",
               headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
        """Serve one request; return (status, JSON body or None)."""
        headers = headers or {}
        split = urlsplit(target)
        route, handler, args = self.route(method, split.path)
        with self.store.lock:
            self.requests[(method, route)] += 1
        req = Request(
            params=dict(parse_qsl(split.query, keep_blank_values=True)), body=body,
            ident=args.get("id", ""), extra=args.get("extra", ""),
            project=headers.get("X-Project-Id") or self.project_id,
            host=headers.get("Host") or self.default_host(),
        )
        with self._slots or contextlib.nullcontext():
            self.service.pause(method, route, 0)
            with self.store.lock:
                self.scheduler.advance()
                try:
                    if handler is None:
                        known = any(r == route for _, r in self.table)
                        raise ApiError(405 if known else 404,
                                       "Method not allowed." if known
                                       else "The resource could not be found.")
                    status, payload = handler(req)
                except ApiError as exc:
                    status, payload = exc.status, {
                        "faultcode": "Client" if exc.status < 500 else "Server",
                        "faultstring": exc.message, "debuginfo": None,
                    }
            self.service.pause(method, "", req.items)
        return status, payload
