"""The simulated Mistral endpoint, driven by the real python-mistralclient."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from mistralclient.api import client as mistral_client
from mistralclient.api.base import APIException

from benchmarks.sim_mistral import (
    SERVICE_TIME_MS,
    ManualClock,
    SimulatedMistral,
    workflow_definition,
)

T0 = 1_700_000_000.0
TS = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def sim(clock: ManualClock) -> Iterator[SimulatedMistral]:
    with SimulatedMistral(latency_scale=0, clock=clock, seed=7, error_rate=0.0) as server:
        yield server


@pytest.fixture
def client(sim: SimulatedMistral) -> Any:
    return mistral_client.client(mistral_url=sim.url)


def _error_code(call: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    with pytest.raises(APIException) as info:
        call(*args, **kwargs)
    return int(info.value.error_code)


# -- reads ------------------------------------------------------------------------------


def test_workflow_get_has_the_real_shape(sim: SimulatedMistral, client: Any) -> None:
    (name,) = sim.seed_workflows(1)
    wf = client.workflows.get(name)
    data = wf.to_dict()
    assert set(data) == {
        "id", "name", "namespace", "input", "interface", "definition", "checksum", "tags",
        "scope", "project_id", "created_at", "updated_at",
    }
    assert wf.name == name and wf.namespace == "" and wf.scope == "private"
    assert wf.checksum == hashlib.md5(wf.definition.encode(), usedforsecurity=False).hexdigest()
    assert wf.input == 'x, y="1"'
    assert TS.match(wf.created_at) and wf.updated_at is None  # never updated, as Mistral
    assert client.workflows.get(wf.id).name == name  # by id too


def test_pagination_with_marker_and_limit_walks_everything_once(sim: SimulatedMistral, client: Any) -> None:
    names = sim.seed_workflows(25)
    seen: list[str] = []
    marker = ""
    while True:
        page = client.workflows.list(limit=10, marker=marker)
        seen += [w.name for w in page]
        if len(page) < 10:
            break
        marker = page[-1].id
    assert sorted(seen) == sorted(names) and len(seen) == 25
    status, body = sim.handle("GET", "/v2/workflows?limit=10")
    assert status == 200 and "limit=10&marker=" in body["next"]
    assert "next" not in sim.handle("GET", "/v2/workflows?limit=100")[1]


def test_list_sorting_fields_and_filters(sim: SimulatedMistral, client: Any, clock: ManualClock) -> None:
    names = sim.seed_workflows(2)
    sim.seed_executions(10, running_fraction=0.3)
    clock.advance(1)
    running = client.executions.list(state="RUNNING")
    assert len(running) == 3 and {e.state for e in running} == {"RUNNING"}
    assert len(client.executions.list(state="in:RUNNING,SUCCESS")) == 10
    assert len(client.executions.list(workflow_name=names[0])) == 5
    newest_first = client.executions.list(sort_keys="created_at", sort_dirs="desc")
    created = [e.created_at for e in newest_first]
    assert created == sorted(created, reverse=True)
    probe = client.executions.list(limit=2, fields=["state", "updated_at"])
    assert [set(e.to_dict()) for e in probe] == [{"id", "state", "updated_at"}] * 2
    assert "output" not in client.executions.list()[0].to_dict()
    assert "output" in client.executions.list(include_output=True)[0].to_dict()
    ex = client.executions.create(names[0])
    recent = client.executions.list(updated_at=f"gte:{ex.updated_at}")
    assert ex.id in {e.id for e in recent}
    assert _error_code(client.executions.list, bogus="1") == 400
    assert sim.handle("GET", "/v2/workflows?limit=0")[0] == 400


def test_tasks_actions_workbooks_environments_cron_triggers(sim: SimulatedMistral, client: Any, clock: ManualClock) -> None:
    (name,) = sim.seed_workflows(1)
    ex = client.executions.create(name)
    (task,) = client.tasks.list(ex.id)
    assert task.state == "RUNNING" and task.workflow_execution_id == ex.id
    assert client.tasks.get(task.id).name == "task1"
    assert {t.id for t in client.tasks.list(workflow_execution_id=ex.id)} == {task.id}
    assert client.actions.get("std.echo").input == "output, delay=0"
    first, second = client.actions.list(limit=2)
    assert [first.name, second.name] == sorted([first.name, second.name])
    wb = client.workbooks.create(
        "version: '2.0'\nname: wb\nworkflows:\n  w1:\n    tasks:\n      t1:\n"
        "        action: std.noop\n"
    )
    assert client.workbooks.get("wb").id == wb.id
    assert [w.name for w in client.workbooks.list()] == ["wb"]
    assert client.workflows.get("wb.w1").name == "wb.w1"
    env = client.environments.create(name="env1", variables={"a": 1}, description="d")
    assert env.variables == {"a": 1} and client.environments.get("env1").id == env.id
    client.environments.update(name="env1", variables={"a": 2})
    assert client.environments.get("env1").variables == {"a": 2}
    assert [e.name for e in client.environments.list()] == ["env1"]
    client.environments.delete("env1")
    assert _error_code(client.environments.get, "env1") == 404
    trigger = client.cron_triggers.create("every-minute", name, pattern="* * * * *")
    first_fire = trigger.next_execution_time
    clock.advance(61)
    fired = client.cron_triggers.get("every-minute")
    assert fired.next_execution_time > first_fire
    assert [c.name for c in client.cron_triggers.list()] == ["every-minute"]
    assert len(client.executions.list(workflow_name=name)) == 2  # ours and the trigger's


def test_not_found_raises_api_exception_404(sim: SimulatedMistral, client: Any) -> None:
    missing = str(uuid.uuid4())
    for call, arg in [
        (client.workflows.get, "nope"), (client.executions.get, missing),
        (client.tasks.get, missing), (client.actions.get, "std.nope"),
        (client.workbooks.get, "nope"), (client.environments.get, "nope"),
        (client.cron_triggers.get, "nope"), (client.workflows.delete, "nope"),
    ]:
        assert _error_code(call, arg) == 404
    with pytest.raises(APIException) as info:
        client.workflows.get("nope")
    assert "Workflow not found" in info.value.error_message


# -- writes -----------------------------------------------------------------------------


def test_workflow_create_update_delete(sim: SimulatedMistral, client: Any, clock: ManualClock) -> None:
    (created,) = client.workflows.create(workflow_definition("flow", tasks=2))
    assert created.name == "flow" and created.updated_at is None
    assert _error_code(client.workflows.create, workflow_definition("flow")) == 409
    assert _error_code(client.workflows.create, "not: [a workflow") == 400
    clock.advance(5)
    (updated,) = client.workflows.update(workflow_definition("flow", tasks=4))
    assert updated.id == created.id and updated.checksum != created.checksum
    assert TS.match(updated.updated_at)
    by_id = client.workflows.update(workflow_definition("flow", tasks=1), id=created.id)
    assert by_id.id == created.id
    client.workflows.delete("flow")
    assert _error_code(client.workflows.get, "flow") == 404
    assert [v.number for v in sim.history("workflows", created.id)] == [1, 2, 3, 4]
    assert sim.history("workflows", created.id)[-1].value is None


def test_execution_create_update_delete(sim: SimulatedMistral, client: Any) -> None:
    (name,) = sim.seed_workflows(1)
    ex = client.executions.create(name, workflow_input={"x": 1}, description="first")
    assert ex.state == "RUNNING" and ex.input == '{"x": 1}' and ex.workflow_name == name
    assert client.executions.update(ex.id, None, description="renamed").description == "renamed"
    assert _error_code(client.executions.delete, ex.id) == 403  # still running
    client.executions.delete(ex.id, force=True)
    assert _error_code(client.executions.get, ex.id) == 404
    assert _error_code(client.executions.create, "no-such-workflow") == 404


def test_execution_reaches_success_as_time_advances(sim: SimulatedMistral, client: Any, clock: ManualClock) -> None:
    (name,) = sim.seed_workflows(1)
    ex = client.executions.create(name)
    assert client.executions.get(ex.id).state == "RUNNING"
    clock.advance(60)
    done = client.executions.get(ex.id)
    assert done.state == "SUCCESS" and json.loads(done.output) == {"result": f"{name} done"}
    assert done.updated_at > ex.updated_at
    tasks = client.tasks.list(ex.id)
    assert [t.name for t in tasks] == ["task1", "task2", "task3"]
    assert {t.state for t in tasks} == {"SUCCESS"}


def test_error_rerun_and_pause_resume(clock: ManualClock) -> None:
    with SimulatedMistral(latency_scale=0, clock=clock, error_rate=1.0) as sim:
        client = mistral_client.client(mistral_url=sim.url)
        (name,) = sim.seed_workflows(1)
        ex = client.executions.create(name)
        clock.advance(60)
        assert client.executions.get(ex.id).state == "ERROR"  # ERROR is not final...
        failed = [t for t in client.tasks.list(ex.id) if t.state == "ERROR"]
        sim.error_rate = 0.0
        assert client.tasks.rerun(failed[0].id).state == "RUNNING"
        assert client.executions.get(ex.id).state == "RUNNING"  # ...it went back to RUNNING
        assert client.executions.update(ex.id, "PAUSED").state == "PAUSED"
        clock.advance(600)
        assert client.executions.get(ex.id).state == "PAUSED"
        client.executions.update(ex.id, "RUNNING")
        clock.advance(600)
        assert client.executions.get(ex.id).state == "SUCCESS"


# -- ground truth, counters, latency, seeding, tenancy ----------------------------------------


def test_ground_truth_versions_and_staleness(sim: SimulatedMistral, client: Any, clock: ManualClock) -> None:
    (name,) = sim.seed_workflows(1)
    ex = client.executions.create(name)
    assert sim.state_at("executions", ex.id).number == 1
    cached = client.executions.get(ex.id).to_dict()
    assert sim.version_of("executions", ex.id, cached) == 1
    clock.advance(60)
    history = sim.history("executions", ex.id)
    assert [v.number for v in history] == [1, 2]
    assert history[1].value is not None and history[1].value["state"] == "SUCCESS"
    assert T0 < history[1].started_at < T0 + 60
    assert sim.state_at("executions", ex.id, at=T0).number == 1
    assert sim.state_at("executions", ex.id, at=T0 - 1).number == 0
    now = clock()
    assert sim.staleness_of("executions", ex.id, cached, at=now) == pytest.approx(
        now - history[1].started_at
    )
    fresh = client.executions.get(ex.id).to_dict()
    assert sim.version_of("executions", ex.id, fresh) == 2
    assert sim.staleness_of("executions", ex.id, fresh) == 0.0
    assert sim.staleness("executions", ex.id, 1, at=T0) == 0.0  # it was current then
    client.executions.update(ex.id, None, description="touched")
    assert sim.state_at("executions", ex.id).number == 3
    first = sim.history("workflows", name)[0].value  # by name too
    assert first is not None and first["name"] == name


def test_request_counting(sim: SimulatedMistral, client: Any) -> None:
    (name,) = sim.seed_workflows(1)
    assert sim.requests_total == 0  # seeding is not traffic
    client.workflows.get(name)
    client.workflows.get(name)
    client.workflows.list()
    _error_code(client.workflows.get, "nope")
    assert sim.requests[("GET", "/workflows/{id}")] == 3
    assert sim.requests[("GET", "/workflows")] == 1
    assert sim.requests_total == 4
    sim.reset_counters()
    assert sim.requests_total == 0


def test_service_time_follows_the_table(clock: ManualClock) -> None:
    slept: list[float] = []
    with SimulatedMistral(latency_scale=1.0, clock=clock, sleep=slept.append) as sim:
        client = mistral_client.client(mistral_url=sim.url)
        (name,) = sim.seed_workflows(1)
        for _ in range(50):
            client.workflows.get(name)
    slept.sort()
    median_ms = slept[len(slept) // 2] * 1000
    expected = SERVICE_TIME_MS[("GET", "/workflows/{id}")]
    assert 0.8 * expected < median_ms < 1.25 * expected
    assert slept[0] != slept[-1]  # jittered


def test_seed_executions_running_fraction(sim: SimulatedMistral, client: Any) -> None:
    ids = sim.seed_executions(20, running_fraction=0.25)
    states = [client.executions.get(i).state for i in ids]
    assert states.count("RUNNING") == 5 and states.count("SUCCESS") == 15
    finished = sim.history("executions", ids[-1])
    assert [v.value["state"] for v in finished if v.value] == ["RUNNING", "SUCCESS"]


def test_private_resources_are_scoped_by_project(sim: SimulatedMistral) -> None:
    (name,) = sim.seed_workflows(1)
    other = mistral_client.client(mistral_url=sim.url, project_id="other-project")
    assert _error_code(other.workflows.get, name) == 404
    assert other.workflows.list() == []
    assert other.actions.get("std.noop").name == "std.noop"  # system actions are public
