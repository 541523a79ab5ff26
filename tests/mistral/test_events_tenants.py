"""Events from both projects invalidate only their own project's entries (issue 18),
against a REAL Keystone and a Mistral with authentication on whose notifier posts to a
REAL receiver (``mistral-cache events serve``): fixtures ``auth_events_setup``,
``auth_receiver`` and ``tenants``, and a real Redis.

Each project's member reads through a ``CachedMistralClient`` built from its own
keystoneauth session. While an execution of one project runs, its member's cached
reads must follow every state within a fraction of a second (they are cached for the
event-backed 300 s, so only its events, carrying that project's real ``project_id``,
can refresh them), and the other project's cached reads of the same kinds must not
send a single request to Mistral. Then the roles swap.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from mistralclient.api import client as mistral_client_module

from mistral_cache import Cache
from mistral_cache.mistral import CachedMistralClient, scope_for
from tests.mistral.helpers import Requests, admin_receiver

pytestmark = pytest.mark.mistral

WF = """---
version: '2.0'
{name}:
  tasks:
    t1:
      action: std.sleep seconds=1
      on-success: t2
    t2:
      action: std.sleep seconds=2
      on-success: t3
    t3:
      action: std.noop
"""

# Lists of executions and tasks are capped at 5 s by default; raised here so that an
# idle project's lists, too, can only be refetched because something invalidated them.
POLICIES = {"stateful_list": 3600.0}
FINAL = ("SUCCESS", "ERROR", "CANCELLED")
LAG = 1.0  # how long after Mistral a cached reader may see a change


@dataclass
class Project:
    name: str
    project_id: str
    plain: Any  # the member's uncached client: the ground truth
    cached: CachedMistralClient  # the member's cached client
    requests: Requests  # what ``cached`` sends upstream
    done: str = ""  # a finished execution of this project

    def reads(self, ex_id: str) -> tuple[str, list[list[str]]]:
        """What a poller reads of one execution: its state and its tasks' states."""
        ex = self.cached.executions.get(ex_id)
        tasks = sorted([t.name, t.state] for t in self.cached.tasks.list(workflow_execution_id=ex_id))
        return ex.state, tasks

    def idle_reads(self) -> list[Any]:
        """Everything the idle project keeps cached: the same kinds, and unfiltered lists."""
        ex_state, tasks = self.reads(self.done)
        return [ex_state, tasks, sorted(e.id for e in self.cached.executions.list()),
                sorted(t.id for t in self.cached.tasks.list())]


def _truth(p: Project, ex_id: str) -> tuple[str, list[list[str]]]:
    ex = p.plain.executions.get(ex_id)
    return ex.state, sorted([t.name, t.state] for t in p.plain.tasks.list(workflow_execution_id=ex_id))


def _wait_final(p: Project, ex_id: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = p.plain.executions.get(ex_id).state
        if state in FINAL:
            return state
        time.sleep(0.05)
    pytest.fail(f"execution {ex_id} of {p.name} still not final after {timeout}s")


def _wait_live(client: CachedMistralClient, timeout: float = 5.0) -> None:
    assert client.events is not None, "no lease watch: the cache has no Redis tier"
    client.events.ensure()  # its thread starts with the first read otherwise
    deadline = time.monotonic() + timeout
    while not client.events.live():
        assert time.monotonic() < deadline, "the client never saw the receiver's lease"
        time.sleep(0.05)


@dataclass
class Projects:
    a: Project
    b: Project
    workflow: str  # the same name in both projects


@pytest.fixture(scope="module")
def projects(auth_events_setup, auth_receiver, tenants) -> Iterator[Projects]:
    s = auth_events_setup
    wf = f"ev_tenants_{uuid.uuid4().hex[:8]}"
    out: dict[str, Project] = {}
    for label, user in (("A", tenants.a_member), ("B", tenants.b_member)):
        plain = mistral_client_module.client(mistral_url=s.url, session=user.session())
        member = mistral_client_module.client(mistral_url=s.url, session=user.session())
        cached = CachedMistralClient(member, cache=Cache(s.redis_url, namespace=s.namespace), policies=POLICIES)
        plain.workflows.create(WF.format(name=wf))  # the same workflow name in both projects
        out[label] = Project(label, user.project_id, plain, cached, Requests(member))
    for p in out.values():
        p.done = p.plain.executions.create(wf).id
    for p in out.values():
        assert _wait_final(p, p.done) == "SUCCESS"
    yield Projects(out["A"], out["B"], wf)
    for p in out.values():
        p.cached.cache.close()


def _one_project_runs(s: Any, rcli: redis.Redis, wf: str, mover: Project, idle: Project) -> None:
    assert mover.cached.scope == scope_for(mover.project_id, s.url) != idle.cached.scope
    _wait_live(mover.cached)
    _wait_live(idle.cached)
    # The idle project caches its reads; from now on they must never go upstream.
    warm = idle.idle_reads()
    idle_before = idle.requests.total
    assert idle.idle_reads() == warm and idle.requests.total == idle_before

    ex_id = mover.plain.executions.create(wf).id
    # Mistral's engine creates it RUNNING; read it through the facade while it runs
    assert mover.reads(ex_id)[0] == "RUNNING"
    key = mover.cached.cache.keyspace.entry(mover.cached.executions.cache_key("get", ex_id))
    assert rcli.pttl(key) > 60_000, "a running execution is cached for the event-backed TTL"

    truth: list[tuple[float, tuple[str, Any]]] = []
    seen: list[tuple[float, tuple[str, Any]]] = []
    deadline = time.monotonic() + 60
    final_at = None
    while time.monotonic() < deadline:
        t = time.monotonic()
        now = _truth(mover, ex_id)
        if not truth or truth[-1][1] != now:
            truth.append((t, now))
        got = mover.reads(ex_id)
        if not seen or seen[-1][1] != got:
            seen.append((time.monotonic(), got))
        assert idle.idle_reads() == warm
        assert idle.requests.total == idle_before, f"project {idle.name} sent a request for {mover.name}'s events"
        if now[0] in FINAL:
            final_at = final_at or t
            if got == now or t - final_at > LAG + 1:
                break
        time.sleep(0.02)
    final = truth[-1]
    assert final[1][0] == "SUCCESS", truth
    assert seen[-1][1] == final[1], f"{mover.name}'s cached reads never reached {final[1]}: {seen}"
    lag = seen[-1][0] - final[0]
    assert lag < LAG, f"{mover.name} saw the final state {lag:.2f}s after Mistral"
    # Every state that lasted was followed too (t2 sleeps 2 s: a long wait, no expiry in it).
    for (t_true, value), (t_next, _) in zip(truth, truth[1:]):
        if t_next - t_true > LAG:
            assert any(v == value for _, v in seen), f"{mover.name} never saw {value}: {seen}"
    # The events carried the mover's real project: its scope's tags were bumped, the idle one's not.
    tag = f"mc:{s.namespace}:t:{scope_for(mover.project_id, s.url)}|executions|id:{ex_id}"
    assert rcli.get(tag) is not None
    assert rcli.get(tag.replace(mover.project_id, idle.project_id)) is None
    assert idle.requests.total == idle_before


def test_events_from_both_projects_invalidate_only_their_own_entries(auth_events_setup, projects):
    s = auth_events_setup
    rcli = redis.Redis.from_url(s.redis_url)
    try:
        _one_project_runs(s, rcli, projects.workflow, mover=projects.a, idle=projects.b)
        _one_project_runs(s, rcli, projects.workflow, mover=projects.b, idle=projects.a)
    finally:
        rcli.close()


def test_an_admin_receiver_keeps_executions_of_every_project(auth_receiver, projects):
    """The receiver's definition checks, authenticated as Keystone's admin (whose
    lists and reads span every project): a member's execution of a workflow private to
    the member's project that publishes no global variable has each of its finished
    tasks leave it cached."""
    b = projects.b
    before = auth_receiver.health()["counts"]
    ex_id = b.plain.executions.create(projects.workflow).id
    deadline = time.monotonic() + 10
    while auth_receiver.health()["counts"]["definition_lookups"] < before["definition_lookups"] + 1:
        assert time.monotonic() < deadline, "the receiver never looked the launch up"
        time.sleep(0.05)
    assert _wait_final(b, ex_id) == "SUCCESS"
    deadline = time.monotonic() + 10  # the last event may reach the receiver after the state
    while auth_receiver.health()["counts"]["kept_executions"] < before["kept_executions"] + 3:
        assert time.monotonic() < deadline, (before, auth_receiver.health()["counts"])
        time.sleep(0.1)
    after = auth_receiver.health()["counts"]
    assert after["kept_executions"] == before["kept_executions"] + 3  # t1, t2, t3
    assert after.get("definition_failures", 0) == before.get("definition_failures", 0)


def test_lost_events_of_another_project_are_reconciled(auth_receiver, keystone, projects):
    """Every event lost: the reconciliation, authenticated as Keystone's admin, lists
    every project's executions, so a member's cached RUNNING execution (kept 300 s
    under the lease) reaches its final state within the interval. (The receiver's
    Keystone client used to pass the password where python-mistralclient ignores it:
    every reconciliation was refused, and the member read RUNNING for 300 s.)"""
    b = projects.b
    auth_receiver.stop()
    auth_receiver.start("--reconcile", "1", "--discard", "1", *admin_receiver(keystone))
    try:
        _wait_live(b.cached)
        ex_id = b.plain.executions.create(projects.workflow).id
        assert b.reads(ex_id)[0] == "RUNNING"
        done = _wait_final(b, ex_id)
        t_done = time.monotonic()
        while b.reads(ex_id)[0] != done:
            assert time.monotonic() - t_done < 1 + 1.5, "a lost event of another project was not reconciled"
            time.sleep(0.05)
        counts = auth_receiver.health()["counts"]
        assert counts["discarded"] >= 1 and counts["missed_events"] >= 1
    finally:
        auth_receiver.stop()
        auth_receiver.start("--reconcile", "0", *admin_receiver(keystone))
