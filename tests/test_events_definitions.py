"""The receiver's definition checks (``mistral_cache.mistral.events.definitions``), pure:
a recorded stand-in for python-mistralclient, no I/O. The real server's side is in
tests/mistral/test_events.py (test_receiver_keeps_the_execution_of_a_task_that_publishes_no_global)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from mistral_cache.mistral.events.definitions import Definitions, quiet_tasks
from mistral_cache.mistral.events.mapping import parse_event, tags_for
from mistral_cache.mistral.events.receiver import Receiver

NO_GLOBAL = """
version: '2.0'
wf:
  task-defaults:
    retry: {count: 1, delay: 1}
  tasks:
    t1:
      action: std.noop
      publish: {a: 1}
      publish-on-error: {b: 2}
      on-success:
        publish:
          branch: {c: 3}
        next: t2
    t2:
      action: std.noop
      on-complete: [t3]
    t3:
      action: std.noop
"""

ADVANCED_GLOBAL = """
version: '2.0'
wf:
  tasks:
    t1:
      action: std.noop
      on-error:
        publish:
          global: {g: 1}
    t2:
      action: std.noop
"""

DEFAULTS_GLOBAL = """
version: '2.0'
wf:
  task-defaults:
    on-complete:
      publish:
        global: {g: 1}
  tasks:
    t1:
      action: std.noop
"""

#: A branch variable named "global": not a global variable, counted as one (the check errs towards invalidating).
NAMED_GLOBAL = """
wf:
  tasks:
    t1:
      action: std.noop
      publish: {global: 1}
    t2:
      action: std.noop
"""

TWO_WORKFLOWS = """
version: '2.0'
first:
  tasks:
    a: {action: std.noop, on-success: {publish: {global: {g: 1}}}}
second:
  tasks:
    a: {action: std.noop}
    b: {action: std.noop}
"""


@pytest.mark.parametrize(("text", "workflow", "expected"), [
    (NO_GLOBAL, "wf", {"t1", "t2", "t3"}),
    (NO_GLOBAL, "another name", {"t1", "t2", "t3"}),  # the only workflow of the text
    (ADVANCED_GLOBAL, "wf", {"t2"}),  # t1 publishes one on error: in no state is it quiet
    (DEFAULTS_GLOBAL, "wf", set()),  # the defaults apply to every task
    (NAMED_GLOBAL, "wf", {"t2"}),
    (TWO_WORKFLOWS, "second", {"a", "b"}), (TWO_WORKFLOWS, "first", set()),
    (TWO_WORKFLOWS, "third", set()),  # which one? none
    ("wf: [unclosed", "wf", set()), ("- a list", "wf", set()), ("wf: {tasks: [a]}", "wf", set()),
    ("", "wf", set()), (None, "wf", set()), ("x" * (2 << 20), "wf", set()),
])
def test_quiet_tasks(text: Any, workflow: str, expected: set[str]) -> None:
    assert quiet_tasks(text, workflow) == expected


def test_an_alias_bomb_is_read_once_per_node() -> None:
    """Aliases share nodes: nine levels of ten references each are 10^9 paths, visited as ten nodes."""
    lines = ['a0: &a0 {publish: {x: 1}}'] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    text = "wf:\n  tasks:\n    t: {action: std.noop}\n  vars:\n" + "\n".join("    " + line for line in lines)
    started = time.process_time()
    assert quiet_tasks(text, "wf") == {"t"}
    assert time.process_time() - started < 5  # not a timing claim: a full walk would not end at all


class _Item:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def to_dict(self) -> dict[str, Any]:
        return dict(self.data)


class _Mistral:
    """Answers like python-mistralclient's managers, and records what was asked."""

    def __init__(self, executions: list[dict[str, Any]], workflows: dict[str, dict[str, Any]]) -> None:
        self.calls: list[tuple[str, Any]] = []
        outer = self

        class Executions:
            def list(self, **kw: Any) -> list[_Item]:
                outer.calls.append(("executions.list", kw))
                return [_Item(e) for e in executions]

        class Workflows:
            def get(self, ident: str) -> _Item:
                outer.calls.append(("workflows.get", ident))
                return _Item(workflows[ident])

        self.executions, self.workflows = Executions(), Workflows()


def _ex(ident: str, workflow: str, created: str) -> dict[str, Any]:
    return {"id": ident, "workflow_id": workflow, "created_at": created}


def _wf(definition: str, created: str, updated: str | None = None) -> dict[str, Any]:
    return {"name": "wf", "definition": definition, "created_at": created, "updated_at": updated}


def test_a_batch_costs_one_list_and_one_get_per_workflow() -> None:
    mistral = _Mistral(
        [_ex("e1", "w1", "2026-12-01 10:00:10"), _ex("e2", "w1", "2026-12-01 10:00:11"),
         _ex("e3", "w2", "2026-12-01 10:00:11"), _ex("other", "w1", "2026-12-01 10:00:11")],
        {"w1": _wf(NO_GLOBAL, "2026-12-01 09:00:00"), "w2": _wf(ADVANCED_GLOBAL, "2026-12-01 09:00:00")},
    )
    d = Definitions(mistral)
    d.resolve([("e1", 0.0), ("e2", 0.0), ("e3", 0.0), ("unknown", 0.0)])
    assert [c[0] for c in mistral.calls] == ["executions.list", "workflows.get", "workflows.get"]
    assert mistral.calls[0][1]["fields"] == ["id", "workflow_id"]
    assert d.requests == 3
    assert d.keeps_execution("e1", "t1") and d.keeps_execution("e2", "t3")
    assert not d.keeps_execution("e1", "t9") and not d.keeps_execution("e1", None)  # no such task, no name
    assert d.keeps_execution("e3", "t2") and not d.keeps_execution("e3", "t1")  # t1 publishes a global variable
    assert not d.keeps_execution("other", "t1")  # listed, but no launch of ours asked for it
    assert not d.keeps_execution("unknown", "t1") and not d.keeps_execution(None, "t1")


def test_a_failed_definition_spares_the_others() -> None:
    mistral = _Mistral([_ex("e1", "gone", "2026-12-01 10:00:10"), _ex("e2", "w1", "2026-12-01 10:00:10")],
                       {"w1": _wf(NO_GLOBAL, "2026-12-01 09:00:00")})
    d = Definitions(mistral)
    d.resolve([("e1", 0.0), ("e2", 0.0)])
    assert d.failures == 1 and not d.keeps_execution("e1", "t1") and d.keeps_execution("e2", "t1")


@pytest.mark.parametrize(("updated", "kept"), [
    (None, True), ("", True),  # never updated: the definition every execution of it runs
    # updated, even long before the execution: after two updates within one second the
    # engine may run the first under the timestamp the API shows with the second
    ("2026-12-01 09:30:00", False),
])
def test_only_a_never_updated_definition_counts(updated: str | None, kept: bool) -> None:
    mistral = _Mistral([_ex("e1", "w1", "2026-12-01 10:00:02")], {"w1": _wf(NO_GLOBAL, "2026-12-01 09:00:00", updated)})
    d = Definitions(mistral)
    d.resolve([("e1", 0.0)])
    assert d.keeps_execution("e1", "t1") is kept
    assert d.lookups == 1


def test_a_flood_of_launches_costs_few_lookups(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forged launches (the token is low-trust): an id is looked up once, and lookups
    start at least ``interval`` apart, however many launches come in between."""
    mistral = _Mistral([_ex("e1", "w1", "2026-12-01 10:00:02")], {"w1": _wf(NO_GLOBAL, "2026-12-01 09:00:00")})
    d = Definitions(mistral, wait=0.0, interval=0.3).start()
    started = time.monotonic()
    while time.monotonic() - started < 1.0:
        d.launched("e1")  # the same id again and again: one lookup
        d.launched(f"forged-{time.monotonic()}")
        time.sleep(0.001)
    d.stop()
    lists = [c for c in mistral.calls if c[0] == "executions.list"]
    assert 1 <= len(lists) <= 5  # 1 s at one lookup per 0.3 s at most (not a timing claim: a bound)
    assert lists[0][1]["sort_dirs"] == "desc"  # the newest executions first: they are the ones asked about
    assert d.keeps_execution("e1", "t1") and d.lookups == len(lists)


def test_unreadable_answers_keep_nothing() -> None:
    mistral = _Mistral([_ex("e1", "w1", "garbage"), _ex("e2", None, "2026-12-01 10:00:10"),  # type: ignore[arg-type]
                        _ex("e3", "w3", "2026-12-01 10:00:10")],
                       {"w3": _wf("wf: [unclosed", "2026-12-01 09:00:00")})
    d = Definitions(mistral)
    d.resolve([("e1", 0.0), ("e2", 0.0), ("e3", 0.0)])
    assert not any(d.keeps_execution(e, "t1") for e in ("e1", "e2", "e3"))


class _Cache:
    """What the receiver needs of a Cache when no I/O is wanted: records the tags."""

    def __init__(self) -> None:
        self.redis = None
        self.invalidated: list[tuple[str, ...]] = []

    def invalidate_tags(self, *tags: str) -> bool:
        self.invalidated.append(tags)
        return True


def test_the_receiver_keeps_the_execution_only_for_a_known_workflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished quiet task of a known execution leaves the execution's tag alone;
    anything unknown invalidates it. A launch's payload claiming some other workflow
    is not read: Mistral's own list says which workflow."""
    import mistral_cache.observability.publisher as publisher

    monkeypatch.setattr(publisher, "add_section", lambda *a, **k: None)
    mistral = _Mistral([_ex("e1", "w1", "2026-12-01 10:00:10")],
                       {"w1": _wf(NO_GLOBAL, "2026-12-01 09:00:00"), "w2": _wf(NO_GLOBAL, "2026-12-01 09:00:00")})
    d = Definitions(mistral, wait=0).start()
    cache = _Cache()
    receiver = Receiver(cache, "http://m/v2", b"t" * 32, definitions=d)
    launch = {"event": "WORKFLOW_LAUNCHED", "id": "e1", "project_id": "p", "state": "RUNNING", "workflow_id": "w2"}
    receiver.apply(parse_event(launch))
    deadline = time.monotonic() + 30
    while not d.keeps_execution("e1", "t1"):
        assert time.monotonic() < deadline, "the lookup never answered"
        time.sleep(0.01)
    d.stop()
    assert ("workflows.get", "w1") in mistral.calls and ("workflows.get", "w2") not in mistral.calls
    execution_tag = "|executions|id:e1"
    for wx, kept in (("e1", True), ("e9", False)):
        done = parse_event({"event": "TASK_SUCCEEDED", "id": "x1", "name": "t1", "project_id": "p", "state": "SUCCESS",
                            "workflow_execution_id": wx})
        receiver.apply(done)
        tags = cache.invalidated[-1]
        assert any(t.endswith(f"|executions|id:{wx}") for t in tags) is not kept
        assert len(tags) == len(tags_for(done, "http://m/v2")) - (2 if kept else 0)  # both scopes' execution tag
    launched_task = parse_event({"event": "TASK_LAUNCHED", "id": "t2", "project_id": "p", "workflow_execution_id": "e1"})
    receiver.apply(launched_task)
    assert receiver.counters()["kept_executions"] == 1
    assert not any(t.endswith(execution_tag) for t in cache.invalidated[-1])  # a launch never touched it
