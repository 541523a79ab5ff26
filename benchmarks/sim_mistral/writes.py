"""The write side of the API: POST, PUT and DELETE of workflows, workbooks,
executions (start, pause, resume, stop, delete), task reruns, environments and cron
triggers, with Mistral's validation and error messages."""

from __future__ import annotations

import json
import uuid
from typing import Any

from .definitions import Definitions
from .dsl import parse_dsl, workflow_specs
from .model import Executions
from .reads import render
from .request import Request
from .schema import FINAL, ApiError, Record, json_obj, not_found, ts
from .store import Scheduler, Store

__all__ = ["Writes"]


class Writes:
    """The POST/PUT/DELETE handlers."""

    def __init__(self, store: Store, scheduler: Scheduler, executions: Executions,
                 definitions: Definitions) -> None:
        self.store, self.scheduler = store, scheduler
        self.executions, self.definitions = executions, definitions

    @staticmethod
    def scope(req: Request) -> str:
        scope = req.params.get("scope") or "private"
        if scope not in ("private", "public"):
            raise ApiError(400, "Scope must be one of the following: ['private', 'public']; "
                                f"actual: {scope}")
        return scope

    # -- workflows and workbooks -------------------------------------------------------

    def post_workflows(self, req: Request) -> tuple[int, Any]:
        req.allow({"namespace", "scope", "skip_validation"})
        t = self.scheduler.advance()
        made = self.definitions.create_workflows(req.text(), req.params.get("namespace", ""),
                                                 self.scope(req), req.project, t)
        return 201, {"workflows": [render("workflows", w, []) for w in made]}

    def put_workflows(self, req: Request) -> tuple[int, Any]:
        req.allow({"namespace", "scope", "skip_validation"})
        t, namespace, scope = self.scheduler.advance(), req.params.get("namespace", ""), self.scope(req)
        definition = req.text()
        specs = workflow_specs(parse_dsl(definition))
        if req.ident and len(specs) != 1:
            raise ApiError(400, "More than one workflows are not supported for update with "
                                "identifier.")
        updated = []
        for spec in specs:
            ident = req.ident or spec.name
            rec = self.store.find("workflows", ident, None if req.ident else namespace, req.project)
            if rec is None or rec["project_id"] != req.project:
                raise not_found("workflows", workflow_identifier=ident, namespace=namespace)
            new = self.definitions.wf_record(spec, spec.name, definition, str(rec["namespace"]), scope,
                                             req.project)
            updated.append(self.store.update("workflows", str(rec["id"]), t,
                                             **{k: v for k, v in new.items() if k != "id"}))
        rendered = [render("workflows", w, []) for w in updated]
        return 200, rendered[0] if req.ident else {"workflows": rendered}

    def delete_named_ns(self, kind: str, req: Request) -> tuple[int, Any]:
        req.allow({"namespace"})
        namespace = req.params.get("namespace", "")
        rec = self.store.find(kind, req.ident, namespace, req.project)
        if rec is None or rec["project_id"] != req.project:
            key = "workflow_identifier" if kind == "workflows" else "name"
            raise not_found(kind, **{key: req.ident, "namespace": namespace})
        t = self.scheduler.advance()
        if kind == "workbooks":
            for wf in self.definitions.workbook_workflows(rec):
                self.store.put("workflows", str(wf["id"]), None, t)
        self.store.put(kind, str(rec["id"]), None, t)
        return 204, None

    def post_workbook(self, req: Request) -> tuple[int, Any]:
        req.allow({"namespace", "scope", "skip_validation"})
        definition, t = req.text(), self.scheduler.advance()
        name, workflows = self.definitions.workbook_doc(definition)
        namespace, scope = req.params.get("namespace", ""), self.scope(req)
        if any(w["name"] == name and w["namespace"] == namespace and w["project_id"] == req.project
               for w in self.store.records["workbooks"].values()):
            raise ApiError(409, "Duplicate entry for WorkbookDefinition ['name', 'namespace', "
                                f"'project_id']: {name}, {namespace}, {req.project}")
        rec = self.store.put("workbooks", str(uuid.uuid4()), {
            "id": None, "name": name, "namespace": namespace, "definition": definition,
            "tags": [], "scope": scope, "project_id": req.project, "created_at": ts(t),
            "updated_at": None,
        }, t)
        assert rec is not None
        for spec in workflow_specs(workflows, f"{name}."):
            self.store.put("workflows", str(uuid.uuid4()), {
                **self.definitions.wf_record(spec, spec.name, definition, namespace, scope, req.project),
                "created_at": ts(t), "updated_at": None,
            }, t)
        return 201, render("workbooks", rec, [])

    def put_workbook(self, req: Request) -> tuple[int, Any]:
        req.allow({"namespace", "scope", "skip_validation"})
        definition, t = req.text(), self.scheduler.advance()
        name, workflows = self.definitions.workbook_doc(definition)
        namespace, scope = req.params.get("namespace", ""), self.scope(req)
        wb = self.store.find("workbooks", name, namespace, req.project, by_id=False)
        if wb is None:
            raise not_found("workbooks", workbook_name=name, namespace=namespace)
        specs = {s.name: s for s in workflow_specs(workflows, f"{name}.")}
        for wf in self.definitions.workbook_workflows(wb):
            spec = specs.pop(str(wf["name"]), None)
            if spec is None:
                self.store.put("workflows", str(wf["id"]), None, t)
            else:
                new = self.definitions.wf_record(spec, spec.name, definition, namespace, scope, req.project)
                self.store.update("workflows", str(wf["id"]), t,
                                  **{k: v for k, v in new.items() if k != "id"})
        for spec in specs.values():
            self.store.put("workflows", str(uuid.uuid4()), {
                **self.definitions.wf_record(spec, spec.name, definition, namespace, scope, req.project),
                "created_at": ts(t), "updated_at": None,
            }, t)
        rec = self.store.update("workbooks", str(wb["id"]), t, definition=definition, scope=scope)
        return 200, render("workbooks", rec, [])

    # -- executions and tasks ------------------------------------------------------------

    def post_execution(self, req: Request) -> tuple[int, Any]:
        req.allow(set())
        body = req.json()
        t = self.scheduler.advance()
        executions = self.store.records["executions"]
        if body.get("id") and body["id"] in executions:
            return 201, render("executions", executions[body["id"]], [])
        description = str(body.get("description") or "")
        source = body.get("source_execution_id")
        if source:
            src = executions.get(source)
            if src is None or not self.store.visible(src, req.project):
                raise not_found("executions", id=source)
            body = {"workflow_id": src["workflow_id"], "input": src["input"], **body}
            description = f"{description} Based on the execution '{source}'".strip()
        ident = body.get("workflow_id") or body.get("workflow_name")
        if not ident:
            raise ApiError(400, "Workflow ID or workflow name must be provided. Workflow ID "
                                "is recommended.")
        namespace = str(body.get("workflow_namespace") or "")
        wf = self.store.find("workflows", ident, None if body.get("workflow_id") else namespace,
                             req.project)
        if wf is None:
            raise not_found("workflows", workflow_identifier=ident, namespace=namespace)
        input_json = json.dumps(json_obj(body.get("input"), "input"))
        params = json_obj(body.get("params"), "params")
        rid = self.executions.start(wf, t, input_json, params, description, req.project,
                                    ex_id=body.get("id"))
        self.scheduler.advance()
        rec = executions[rid]
        return 201, {k: v for k, v in render("executions", rec, []).items()
                     if k != "published_global"}

    def execution(self, req: Request) -> Record:
        """The execution the path names, if the caller sees it."""
        rec = self.store.records["executions"].get(req.ident)
        if rec is None or not self.store.visible(rec, req.project):
            raise not_found("executions", id=req.ident)
        return rec

    def put_execution(self, req: Request) -> tuple[int, Any]:
        req.allow(set())
        t = self.scheduler.advance()
        body, ex = req.json(), self.execution(req)
        state, description = body.get("state"), body.get("description")
        env = (json_obj(body.get("params"), "params") or {}).get("env")
        if not (state or description or env):
            raise ApiError(400, "The property state, description, or env is not provided "
                                "for update.")
        if description and state:
            raise ApiError(400, "The property description must be updated separately from "
                                "state.")
        if env and state and state != "RUNNING":
            raise ApiError(400, "The property env can only be updated when workflow execution "
                                "is not running or on resume from pause.")
        rid = str(ex["id"])
        if description:
            self.store.update("executions", rid, t, description=description)
        if env:
            params = json.loads(str(ex["params"]))
            params["env"] = {**params.get("env", {}), **env}
            self.store.update("executions", rid, t, params=json.dumps(params))
        if state:
            if state not in ("RUNNING", "PAUSED", *FINAL):
                raise ApiError(400, f"Cannot change state to {state}. Allowed states are: "
                                    "'RUNNING, PAUSED, SUCCESS, ERROR, CANCELLED")
            self.executions.set_state(rid, state, body.get("state_info"), t)
        return 200, render("executions", self.store.records["executions"][rid], [])

    def delete_execution(self, req: Request) -> tuple[int, Any]:
        req.allow({"force"})
        t = self.scheduler.advance()
        ex = self.execution(req)
        if not req.flag("force") and ex["state"] not in FINAL:
            raise ApiError(403, "Only completed executions can be deleted. Use --force to "
                                f"override this. Execution {ex['id']} is in {ex['state']} state")
        self.executions.delete(str(ex["id"]), t)
        return 204, None

    def rerun_task(self, req: Request) -> tuple[int, Any]:
        req.allow(set())
        body, t = req.json(), self.scheduler.advance()
        task = self.store.records["tasks"].get(req.ident)
        if task is None or not self.store.visible(task, req.project):
            raise not_found("tasks", id=req.ident)
        if body.get("state") != "RUNNING":
            raise ApiError(400, "Only rerun of a task (state RUNNING) is supported.")
        task_id = self.executions.rerun(task, t)
        self.scheduler.advance()
        return 200, render("tasks", self.store.records["tasks"][task_id], [])

    # -- environments and cron triggers --------------------------------------------------

    def post_environment(self, req: Request) -> tuple[int, Any]:
        req.allow(set())
        body, t = req.json(), self.scheduler.advance()
        if set(body) - {"name", "description", "variables", "scope"}:
            raise ApiError(400, "Please, check your environment definition. Only: "
                                "['name', 'description', 'variables', 'scope'] are allowed as "
                                "definition keys.")
        name = body.get("name")
        if not name:
            raise ApiError(400, "Name of the environment is not provided.")
        if self.store.find("environments", name, None, req.project, by_id=False):
            raise ApiError(409, f"Duplicate entry for Environment: ['name', 'project_id']: "
                                f"{name}, {req.project}")
        rec = self.store.put("environments", str(uuid.uuid4()), {
            "id": None, "name": name, "description": body.get("description"),
            "variables": json.dumps(json_obj(body.get("variables"), "variables")),
            "scope": body.get("scope") or "private", "project_id": req.project,
            "created_at": ts(t), "updated_at": None,
        }, t)
        assert rec is not None
        return 201, render("environments", rec, [])

    def put_environment(self, req: Request) -> tuple[int, Any]:
        req.allow(set())
        body, t = req.json(), self.scheduler.advance()
        name = body.pop("name", None)
        if not name:
            raise ApiError(400, "Name of the environment is not provided.")
        if set(body) - {"description", "variables", "scope"}:
            raise ApiError(400, "Please, check your environment definition. Only: "
                                "['description', 'variables', 'scope'] are allowed as "
                                "definition keys.")
        rec = self.store.find("environments", name, None, req.project, by_id=False)
        if rec is None:
            raise not_found("environments", name=name)
        changes = {k: v for k, v in body.items() if v is not None}
        if "variables" in changes:
            changes["variables"] = json.dumps(json_obj(changes["variables"], "variables"))
        new = self.store.update("environments", str(rec["id"]), t, **changes)
        return 200, render("environments", new, [])

    def delete_simple(self, kind: str, req: Request) -> tuple[int, Any]:
        req.allow(set())
        rec = self.store.records[kind].get(req.ident) or self.store.find(kind, req.ident, None, req.project,
                                                                         by_id=False)
        if rec is None or not self.store.visible(rec, req.project):
            raise not_found(kind, name=req.ident)
        self.store.put(kind, str(rec["id"]), None, self.scheduler.advance())
        return 204, None

    def post_cron(self, req: Request) -> tuple[int, Any]:
        req.allow(set())
        rec = self.definitions.create_cron(req.json(), req.project, self.scheduler.advance())
        return 201, render("cron_triggers", rec, [])
