"""Definitions: workflows (alone or from a workbook) and cron triggers, which start
executions on their schedule."""

from __future__ import annotations

import hashlib
import json
import uuid

from .dsl import WorkflowSpec, parse_dsl, workflow_specs
from .model import Executions
from .schema import JSON, ApiError, Record, epoch, json_obj, norm_ts, not_found, ts
from .store import Scheduler, Store

__all__ = ["Definitions"]


class Definitions:
    """Creates workflows and cron triggers in the store; fires the triggers."""

    def __init__(self, store: Store, scheduler: Scheduler, executions: Executions) -> None:
        self.store, self.scheduler, self.executions = store, scheduler, executions

    def create_workflows(self, definition: str, namespace: str, scope: str, project: str,
                         t: float, workbook: str = "") -> list[Record]:
        """Every workflow of ``definition`` (409 if one exists already)."""
        doc = parse_dsl(definition)
        specs = workflow_specs(doc)
        created = []
        for spec in specs:
            name = f"{workbook}.{spec.name}" if workbook else spec.name
            if any(w["name"] == name and w["namespace"] == namespace and w["project_id"] == project
                   for w in self.store.records["workflows"].values()):
                raise ApiError(409, "Duplicate entry for WorkflowDefinition ['name', "
                                    f"'namespace', 'project_id']: {name}, {namespace}, {project}")
            rec = self.wf_record(spec, name, definition, namespace, scope, project)
            created.append(self.store.put("workflows", str(uuid.uuid4()),
                                          {**rec, "created_at": ts(t), "updated_at": None}, t))
        return [c for c in created if c is not None]

    @staticmethod
    def wf_record(spec: WorkflowSpec, name: str, definition: str, namespace: str, scope: str,
                  project: str) -> JSON:
        """A workflow's fields as the API shows them (no id or timestamps)."""
        return {
            "id": None, "name": name, "namespace": namespace, "input": spec.input,
            "interface": spec.interface, "definition": definition,
            "checksum": hashlib.md5(definition.encode(), usedforsecurity=False).hexdigest(),
            "tags": spec.tags, "scope": scope, "project_id": project,
        }

    def workbook_workflows(self, wb: Record) -> list[Record]:
        """The workflows a workbook defined."""
        prefix = f"{wb['name']}."
        return [w for w in self.store.records["workflows"].values()
                if str(w["name"]).startswith(prefix) and w["namespace"] == wb["namespace"]
                and w["project_id"] == wb["project_id"]]

    @staticmethod
    def workbook_doc(definition: str) -> tuple[str, JSON]:
        """A workbook definition's name and its ``workflows`` mapping."""
        doc = parse_dsl(definition)
        name = doc.get("name")
        if not name:
            raise ApiError(400, "Invalid DSL: a workbook must have a 'name'")
        workflows = doc.get("workflows") or {}
        if not isinstance(workflows, dict):
            raise ApiError(400, "Invalid DSL: 'workflows' must be a mapping")
        return str(name), workflows

    def create_cron(self, body: JSON, project: str, t: float) -> Record:
        """A cron trigger from a client's body, its first firing scheduled."""
        name = body.get("name")
        if not name:
            raise ApiError(400, "Cron trigger name must be provided.")
        pattern, first = body.get("pattern"), body.get("first_execution_time")
        if not pattern and not first:
            raise ApiError(400, "Pattern or first_execution_time must be specified.")
        if self.store.find("cron_triggers", name, None, project, by_id=False):
            raise ApiError(409, f"Duplicate entry for cron trigger ['name', 'project_id']: {name}")
        wf_ident = body.get("workflow_id") or body.get("workflow_name") or ""
        wf = self.store.find("workflows", wf_ident, None if body.get("workflow_id") else "", project)
        if wf is None:
            raise not_found("workflows", workflow_identifier=wf_ident, namespace="")
        period = self.cron_period(pattern)
        if first:
            next_t = epoch(norm_ts(first))
        else:
            next_t = (int(t) // period + 1) * period
        remaining = body.get("remaining_executions")
        rec = self.store.put("cron_triggers", str(uuid.uuid4()), {
            "id": None, "name": name, "workflow_name": wf["name"], "workflow_id": wf["id"],
            "workflow_input": json.dumps(json_obj(body.get("workflow_input"), "workflow_input")),
            "workflow_params": json.dumps(json_obj(body.get("workflow_params"), "workflow_params")),
            "project_id": project, "scope": "private", "pattern": pattern or "0 0 30 2 0",
            "remaining_executions": int(remaining) if remaining else None,
            "first_execution_time": ts(next_t) if first else None,
            "next_execution_time": ts(next_t), "created_at": ts(t), "updated_at": None,
        }, t)
        assert rec is not None
        rid = str(rec["id"])
        self.scheduler.at(next_t, lambda when: self.fire_cron(rid, period if pattern else 0, when))
        return rec

    @staticmethod
    def cron_period(pattern: str | None) -> int:
        """Seconds between firings: minute fields ``*`` and ``*/N`` exactly, others hourly."""
        minute = (pattern or "").split()[:1]
        if minute == ["*"]:
            return 60
        if minute and minute[0].startswith("*/") and minute[0][2:].isdigit():
            return 60 * max(1, int(minute[0][2:]))
        return 3600

    def fire_cron(self, rid: str, period: int, t: float) -> None:
        """Start the trigger's execution; schedule the next firing, or delete a spent trigger."""
        trig = self.store.records["cron_triggers"].get(rid)
        if trig is None:
            return
        wf = self.store.records["workflows"].get(str(trig["workflow_id"]))
        if wf is not None:
            self.executions.start(wf, t, str(trig["workflow_input"]),
                                  json.loads(str(trig["workflow_params"])), "", str(trig["project_id"]))
        remaining = trig["remaining_executions"]
        if (remaining is not None and remaining <= 1) or not period:
            self.store.put("cron_triggers", rid, None, t)
            return
        self.store.update("cron_triggers", rid, t, next_execution_time=ts(t + period),
                          remaining_executions=None if remaining is None else remaining - 1)
        self.scheduler.at(t + period, lambda when: self.fire_cron(rid, period, when))
