"""Executions and their tasks: the engine's plan for each run and the state machine
that moves it through time (RUNNING, PAUSED, SUCCESS, ERROR, CANCELLED), task by task,
as scheduled changes to the store."""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass

from .dsl import task_names
from .schema import FINAL, JSON, ApiError, Record, ts
from .store import Scheduler, Store

__all__ = ["Step", "Run", "Executions"]

Step = tuple[str, float, bool]
"""A planned task: its name, its duration, whether it succeeds."""


@dataclass
class Run:
    """The engine's plan for one workflow execution."""

    ex_id: str
    steps: list[Step]
    index: int = 0
    epoch: int = 0  # bumped to cancel what was scheduled for the run (pause, stop, rerun)
    task_id: str | None = None
    task_end: float | None = None
    remaining: float | None = None  # of the current task, while paused


class Executions:
    """Starts executions and moves them on: each task's start and end are events on
    the scheduler; ``error_rate`` of runs fail one task; ``mean_duration`` seconds per
    run, shared among its tasks."""

    def __init__(self, store: Store, scheduler: Scheduler, *, seed: int, mean_duration: float,
                 error_rate: float) -> None:
        self.store, self.scheduler = store, scheduler
        self.rng = random.Random(seed)
        self.mean_duration = mean_duration
        self.error_rate = error_rate
        self.runs: dict[str, Run] = {}
        #: Publishers every new execution gets in ``params.notify`` (as Mistral's engine
        #: adds ``[notifier] notify`` to each execution it starts).
        self.notify: list[JSON] = []

    @staticmethod
    def wf_tasks(wf: Record) -> list[str]:
        """The task names of a workflow's definition."""
        return list(task_names(str(wf["definition"]), str(wf["name"])))

    def plan(self, tasks: list[str]) -> list[Step]:
        """Draw durations and, with probability ``error_rate``, one failing task."""
        share = self.mean_duration / len(tasks)
        failing = self.rng.randrange(len(tasks)) if self.rng.random() < self.error_rate else -1
        return [(name, share * self.rng.uniform(0.5, 1.5), i != failing)
                for i, name in enumerate(tasks)]

    @staticmethod
    def planned_duration(steps: list[Step]) -> float:
        """Seconds from start to the end of the run (its first failing task included)."""
        total = 0.0
        for _, duration, ok in steps:
            total += duration
            if not ok:
                break
        return total

    def start(self, wf: Record, t: float, input_json: str, params: JSON,
              description: str, project: str, *, ex_id: str | None = None,
              steps: list[Step] | None = None) -> str:
        """Create a RUNNING execution of ``wf`` at ``t`` and schedule its first task."""
        rid = ex_id or str(uuid.uuid4())
        self.store.put("executions", rid, {
            "id": rid, "workflow_id": wf["id"], "workflow_name": wf["name"],
            "workflow_namespace": wf["namespace"], "description": description, "tags": None,
            "params": json.dumps({"namespace": wf["namespace"], **params,
                                  **({"notify": [*params.get("notify", []), *self.notify]} if self.notify else {})}),
            "task_execution_id": None, "root_execution_id": None, "state": "RUNNING",
            "state_info": None, "input": input_json, "output": "{}", "created_at": ts(t),
            "updated_at": ts(t), "project_id": project, "published_global": "{}",
        }, t)
        run = Run(rid, steps or self.plan(self.wf_tasks(wf)))
        self.runs[rid] = run
        epoch = run.epoch
        self.scheduler.at(t, lambda when: self.begin_task(run, epoch, when))
        return rid

    def begin_task(self, run: Run, epoch: int, t: float, duration: float | None = None) -> None:
        """Start (or resume) the run's current task and schedule its end."""
        records = self.store.records
        if run.epoch != epoch or run.ex_id not in records["executions"]:
            return
        name, planned, _ = run.steps[run.index]
        if run.task_id is None:
            ex = records["executions"][run.ex_id]
            run.task_id = str(uuid.uuid4())
            self.store.put("tasks", run.task_id, {
                "id": run.task_id, "name": name, "type": "ACTION",
                "workflow_name": ex["workflow_name"],
                "workflow_namespace": ex["workflow_namespace"],
                "workflow_id": ex["workflow_id"], "workflow_execution_id": run.ex_id,
                "tags": None, "state": "RUNNING", "state_info": None,
                "project_id": ex["project_id"],
                "runtime_context": json.dumps({"triggered_by": [], "retry_task_policy": {}}),
                "result": "null", "published": "{}", "published_global": "{}",
                "processed": False, "created_at": ts(t), "updated_at": ts(t),
                "started_at": ts(t), "finished_at": None,
            }, t)
        run.task_end = t + (planned if duration is None else duration)
        self.scheduler.at(run.task_end, lambda when: self.end_task(run, epoch, when))

    def end_task(self, run: Run, epoch: int, t: float) -> None:
        """Finish the current task; then the next one, or the execution's end."""
        records = self.store.records
        if run.epoch != epoch or run.task_id is None or run.ex_id not in records["executions"]:
            return
        name, _, ok = run.steps[run.index]
        task_id, run.task_id, run.task_end = run.task_id, None, None
        if task_id in records["tasks"]:
            self.store.update(
                "tasks", task_id, t, state="SUCCESS" if ok else "ERROR", processed=True,
                state_info=None if ok else f"Failed to run action [action_ex_id={uuid.uuid4()}]",
                result=json.dumps(f"{name} done") if ok else "null",
                published=json.dumps({f"{name}_done": True}) if ok else "{}",
                finished_at=ts(t),
            )
        if not ok:
            self.store.update("executions", run.ex_id, t, state="ERROR",
                              state_info=f"Failure caused by error in tasks: {name}")
        elif run.index + 1 < len(run.steps):
            run.index += 1
            self.begin_task(run, epoch, t)
        else:
            ex = records["executions"][run.ex_id]
            self.store.update("executions", run.ex_id, t, state="SUCCESS",
                              output=json.dumps({"result": f"{ex['workflow_name']} done"}))

    def set_state(self, rid: str, state: str, info: str | None, t: float) -> None:
        """A client's state change: pause, resume, or end the run (``ApiError`` 400 for
        a change Mistral refuses)."""
        records = self.store.records
        ex = records["executions"][rid]
        run = self.runs.get(rid)
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
                self.scheduler.at(t, lambda when: self.begin_task(run, epoch, when, run.remaining))
        elif state in FINAL and current not in FINAL:
            if run is not None:
                run.epoch += 1
                if run.task_id in records["tasks"]:
                    task_state = "SUCCESS" if state == "SUCCESS" else state
                    self.store.update("tasks", str(run.task_id), t, state=task_state,
                                      processed=True, finished_at=ts(t))
                run.task_id = None
        elif current in FINAL and state in FINAL:
            return
        else:
            raise ApiError(400, f"Cannot change state from {current} to {state}.")
        self.store.update("executions", rid, t, state=state, state_info=info)

    def delete(self, rid: str, t: float) -> None:
        """Stop the run and delete the execution with its tasks."""
        run = self.runs.pop(rid, None)
        if run is not None:
            run.epoch += 1
        for task in [r for r in self.store.records["tasks"].values() if r["workflow_execution_id"] == rid]:
            self.store.put("tasks", str(task["id"]), None, t)
        self.store.put("executions", rid, None, t)

    def rerun(self, task: Record, t: float) -> str:
        """Rerun a failed task of a failed execution (its outcome drawn afresh); return its id."""
        records = self.store.records
        run = self.runs.get(str(task["workflow_execution_id"]))
        ex = records["executions"].get(str(task["workflow_execution_id"]))
        if task["state"] != "ERROR" or run is None or ex is None or ex["state"] != "ERROR":
            raise ApiError(400, f"Failed to rerun the task because it is not in ERROR state "
                                f"[task_ex_id={task['id']}, state={task['state']}]")
        name = run.steps[run.index][0]
        duration = self.mean_duration / len(run.steps) * self.rng.uniform(0.5, 1.5)
        run.steps[run.index] = (name, duration, self.rng.random() >= self.error_rate)
        run.epoch += 1
        run.task_id = str(task["id"])
        self.store.update("tasks", run.task_id, t, state="RUNNING", state_info=None, processed=False,
                          finished_at=None)
        self.store.update("executions", str(ex["id"]), t, state="RUNNING", state_info=None)
        epoch = run.epoch
        self.scheduler.at(t, lambda when: self.begin_task(run, epoch, when))
        return run.task_id
