"""The facade: :class:`SimulatedMistral` wires the store, the scheduler, the engine,
the API and the HTTP server together, and adds what benchmarks need besides HTTP:
seeding, request counters, and the ground truth to count stale reads against."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .api import Api, ServiceTime
from .definitions import Definitions
from .dsl import workflow_definition
from .model import Executions
from .notifier import Notifier, PostDelay
from .reads import Reads
from .schema import DEFAULT_PROJECT, SYSTEM_ACTIONS, Version, ts
from .server import HttpServer
from .store import Scheduler, Store
from .writes import Writes

if TYPE_CHECKING:
    from typing import Self

__all__ = ["SimulatedMistral"]


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
        self._clock = clock
        self.store = Store()
        self.scheduler = Scheduler(clock)
        self.executions = Executions(self.store, self.scheduler, seed=seed, mean_duration=mean_duration,
                                     error_rate=error_rate)
        self.definitions = Definitions(self.store, self.scheduler, self.executions)
        self.reads = Reads(self.store, max_limit)
        self.http = HttpServer(self.handle, host, port)
        self.api = Api(
            self.store, self.scheduler, self.reads,
            Writes(self.store, self.scheduler, self.executions, self.definitions),
            service=ServiceTime(latency_scale, seed + 1, sleep), project_id=project_id,
            default_host=lambda: f"{self.http.host}:{self.http.port}", max_concurrency=max_concurrency,
        )
        now = clock()
        for name, params in SYSTEM_ACTIONS.items():
            self.store.put("actions", name, {
                "id": name, "name": name, "is_system": False, "input": params,
                "description": "", "tags": None, "definition": "", "scope": "public",
                "project_id": None, "created_at": "", "updated_at": "", "namespace": "",
            }, now)

    # -- settings (the collaborators own them) -------------------------------------------

    @property
    def host(self) -> str:
        """The address served on."""
        return self.http.host

    @property
    def port(self) -> int:
        """The port served on (the one chosen, once started with port 0)."""
        return self.http.port

    @property
    def requests(self) -> Counter[tuple[str, str]]:
        """Requests counted per (method, route template)."""
        return self.api.requests

    @property
    def latency_scale(self) -> float:
        return self.api.service.scale

    @latency_scale.setter
    def latency_scale(self, value: float) -> None:
        self.api.service.scale = value

    @property
    def mean_duration(self) -> float:
        return self.executions.mean_duration

    @mean_duration.setter
    def mean_duration(self, value: float) -> None:
        self.executions.mean_duration = value

    @property
    def error_rate(self) -> float:
        return self.executions.error_rate

    @error_rate.setter
    def error_rate(self, value: float) -> None:
        self.executions.error_rate = value

    @property
    def max_limit(self) -> int:
        return self.reads.max_limit

    @max_limit.setter
    def max_limit(self, value: int) -> None:
        self.reads.max_limit = value

    @property
    def project_id(self) -> str:
        return self.api.project_id

    @project_id.setter
    def project_id(self, value: str) -> None:
        self.api.project_id = value

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> str:
        """Serve in a daemon thread; return the base URL (``http://HOST:PORT/v2``)."""
        return self.http.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.http.stop()

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
        return self.http.url

    def now(self) -> float:
        """The simulator's clock."""
        return self._clock()

    def handle(self, method: str, target: str, body: bytes = b"",
               headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
        """Serve one request (as the HTTP layer does); return (status, JSON body or None)."""
        return self.api.handle(method, target, body, headers)

    def notify(self, url: str, headers: Mapping[str, str] | None = None, *, delay: PostDelay | None = None,
               seed: int = 0) -> Notifier:
        """Start Mistral's webhook notifier (``[notifier] notify`` with one webhook):
        every execution started from now on names it in ``params.notify``, and every
        workflow and task state change is POSTed to ``url`` ``delay`` after it
        commits. ``Notifier.stop()`` ends it."""
        return Notifier(self.store, self.scheduler, self.executions, url, headers, delay=delay, seed=seed,
                        clock=self._clock).start()

    # -- counters --------------------------------------------------------------------

    @property
    def requests_total(self) -> int:
        """Requests served since the last :meth:`reset_counters`."""
        with self.store.lock:
            return sum(self.api.requests.values())

    def request_counts(self) -> dict[tuple[str, str], int]:
        """A snapshot of ``requests``: counts per (method, route template)."""
        with self.store.lock:
            return dict(self.api.requests)

    def reset_counters(self) -> None:
        """Zero the per-(method, route) request counters."""
        with self.store.lock:
            self.api.requests.clear()

    # -- seeding -----------------------------------------------------------------------

    def seed_workflows(self, n: int, *, namespace: str = "", tasks: int = 3,
                       prefix: str = "wf") -> list[str]:
        """Create ``n`` workflows (``{prefix}_0000``...); return their names."""
        with self.store.lock:
            now = self.scheduler.advance()
            start = len(self.store.records["workflows"])
            names = [f"{prefix}_{i:04d}" for i in range(start, start + n)]
            for name in names:
                definition = workflow_definition(name, tasks)
                self.definitions.create_workflows(definition, namespace, "private", self.project_id, now)
            return names

    def seed_executions(self, n: int, *, running_fraction: float = 0.2,
                        workflow: str | None = None, spread: float = 3600.0) -> list[str]:
        """Create ``n`` executions; return their ids.

        ``round(n * running_fraction)`` are still RUNNING now (each finishes after
        its drawn duration); the rest started up to ``spread`` seconds ago and
        finished, in SUCCESS or (``error_rate``) ERROR. Their histories are complete.
        """
        with self.store.lock:
            now = self.scheduler.advance()
            records = self.store.records
            wfs = [w for w in records["workflows"].values()
                   if workflow is None or workflow in (w["name"], w["id"])]
            if not wfs:
                if workflow is not None:
                    raise KeyError(workflow)
                self.seed_workflows(1)
                wfs = list(records["workflows"].values())
            running = round(n * running_fraction)
            engine, rng = self.executions, self.executions.rng
            ids = []
            for i in range(n):
                wf = wfs[i % len(wfs)]
                steps = engine.plan(engine.wf_tasks(wf))
                total = engine.planned_duration(steps)
                if i < running:
                    started = now - rng.uniform(0.0, 0.9) * total
                else:
                    started = now - total - rng.uniform(0.0, spread)
                ids.append(engine.start(wf, started, "{}", {}, "", self.project_id, steps=steps))
            self.scheduler.advance()
            return ids

    def seed_environments(self, n: int, *, prefix: str = "env") -> list[str]:
        """Create ``n`` environments; return their names."""
        with self.store.lock:
            now = self.scheduler.advance()
            start = len(self.store.records["environments"])
            names = [f"{prefix}_{i:04d}" for i in range(start, start + n)]
            for name in names:
                self.store.put("environments", str(uuid.uuid4()), {
                    "id": None, "name": name, "description": f"seeded {name}",
                    "variables": json.dumps({"region": "RegionOne", "index": start}),
                    "scope": "private", "project_id": self.project_id,
                    "created_at": ts(now), "updated_at": None,
                }, now)
            return names

    def seed_cron_triggers(self, n: int, *, pattern: str = "*/5 * * * *",
                           workflow: str | None = None) -> list[str]:
        """Create ``n`` cron triggers that fire on ``pattern``; return their names."""
        with self.store.lock:
            records = self.store.records
            if not records["workflows"]:
                self.seed_workflows(1)
            wf = next(w for w in records["workflows"].values()
                      if workflow in (None, w["name"], w["id"]))
            start = len(records["cron_triggers"])
            names = [f"cron_{i:04d}" for i in range(start, start + n)]
            for name in names:
                self.definitions.create_cron({"name": name, "pattern": pattern, "workflow_id": wf["id"]},
                                             self.project_id, self.scheduler.advance())
            return names

    def ids(self, kind: str) -> list[str]:
        """Ids of the live resources of ``kind`` (e.g. ``"executions"``)."""
        with self.store.lock:
            self.scheduler.advance()
            return list(self.store.records[kind])

    # -- ground truth ------------------------------------------------------------------

    def history(self, kind: str, ident: str) -> list[Version]:
        """Every version of a resource (by id, or name in namespace ''), oldest first."""
        with self.store.lock:
            self.scheduler.advance()
            return list(self.store.versions(kind, ident))

    def state_at(self, kind: str, ident: str, at: float | None = None) -> Version:
        """The true version at ``at`` (default: now); number 0 if not yet created."""
        with self.store.lock:
            now = self.scheduler.advance()
            when = now if at is None else at
            current = Version(0, float("-inf"), None)
            for version in self.store.versions(kind, ident):
                if version.started_at > when:
                    break
                current = version
            return current

    def version_of(self, kind: str, ident: str, data: Mapping[str, Any]) -> int:
        """The newest version whose value agrees with ``data`` (a read, e.g. ``to_dict()``).

        Only keys present in both are compared, so ``fields=`` probes and list rows
        work; 0 when no version matches.
        """
        with self.store.lock:
            return self.store.version_of(kind, ident, data)

    def staleness(self, kind: str, ident: str, version: int, at: float | None = None) -> float:
        """Seconds a read of ``version`` at ``at`` lagged the truth; 0.0 if it was current."""
        with self.store.lock:
            now = self.scheduler.advance()
            when = now if at is None else at
            truth = self.state_at(kind, ident, when)
            if version >= truth.number:
                return 0.0
            newer = self.store.versions(kind, ident)[version]
            return max(0.0, when - newer.started_at)

    def staleness_of(self, kind: str, ident: str, data: Mapping[str, Any],
                     at: float | None = None) -> float:
        """:meth:`staleness` of a read given by its value rather than its version."""
        with self.store.lock:
            return self.staleness(kind, ident, self.version_of(kind, ident, data), at)
