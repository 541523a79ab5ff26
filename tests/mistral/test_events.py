"""Event-driven invalidation against a REAL Mistral whose notifier posts to a REAL
receiver (``mistral-cache events serve``, started by the fixtures on a free port),
with real Redis and real poller processes (README, "Mistral events")."""

import json
import os
import subprocess
import sys
import time

import pytest
import redis
import requests

from mistral_cache import Cache
from mistral_cache.admin.stats import collect_stats
from mistral_cache.mistral import CachedMistralClient, scope_for
from mistral_cache.mistral.events.mapping import parse_event, tags_for
from tests.mistral.helpers import (
    POLLER,
    WF_GLOBAL,
    Truth,
    check_pollers_saw_every_change,
    check_published_global_seen,
    ensure_workflow,
)
from tests.mistral.helpers import WF_STEPS as WF
from tests.mistral.helpers import entry_pttl as _entry_pttl


def _post(setup, body, token=None, data=None, path="/events", method="POST"):
    headers = {} if token is False else {"Authorization": f"Bearer {token or setup.token}"}
    return requests.request(method, f"http://127.0.0.1:{setup.port}{path}", json=body if data is None else None,
                            data=data, headers=headers, timeout=5)


def _tag_counters(r, ns):
    return {k: r.get(k) for k in r.scan_iter(f"mc:{ns}:t:*", count=1000)}


def _client(setup, **kw):
    return CachedMistralClient(mistral_url=setup.url, cache=Cache(setup.redis_url, namespace=setup.namespace), **kw)


def _count_upstream(client):
    session = client.http_client.session
    calls, original = [], session.request

    def counting(method, url, **kw):
        calls.append(time.time())
        return original(method, url, **kw)

    session.request = counting
    return calls


def _wait_state(client, ex_id, states=("SUCCESS", "ERROR"), timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.executions.get(ex_id).state
        if state in states:
            return state
        time.sleep(0.05)
    pytest.fail(f"execution {ex_id} still not in {states} after {timeout}s")


@pytest.fixture(scope="module")
def wf(mistral_client_events):
    try:
        mistral_client_events.workflows.create(WF)
    except Exception:
        mistral_client_events.workflows.update(WF)
    return "ev_steps"


@pytest.fixture(scope="module")
def rcli(events_setup):
    return redis.Redis.from_url(events_setup.redis_url)


def test_bad_requests_get_4xx_and_change_nothing(events_setup, receiver, rcli):
    s = events_setup
    valid = {"event": "WORKFLOW_SUCCEEDED", "id": "e" * 8, "project_id": "<default-project>", "state": "SUCCESS"}
    before = _tag_counters(rcli, s.namespace)
    cases = [
        (_post(s, valid, token=False), 401),
        (_post(s, valid, token="x" * 43), 401),
        (_post(s, valid, token=s.token + "x"), 401),
        (_post(s, None, data=b"{not json"), 400),
        (_post(s, None, data=b"\xff\xfe garbage"), 400),
        (_post(s, None, data=json.dumps({**valid, "pad": "x" * (300 * 1024)}).encode()), 413),
        (_post(s, None, data=b"x" * (4 << 20)), 413),  # refused by the server before the app
        (_post(s, {**valid, "event": "WORKFLOW_EXPLODED"}), 422),
        (_post(s, {k: v for k, v in valid.items() if k != "id"}), 422),
        (_post(s, {k: v for k, v in valid.items() if k != "project_id"}), 422),
        (_post(s, {**valid, "event": "TASK_SUCCEEDED"}), 422),  # a task event without its execution
        (_post(s, {**valid, "id": "a|b"}), 422),
        (_post(s, [valid]), 422),
        (_post(s, valid, method="GET"), 405),
        (_post(s, valid, path="/other"), 404),
    ]
    for resp, status in cases:
        assert resp.status_code == status, (resp.status_code, resp.text)
        assert "error" in resp.text.lower() or "too large" in resp.text.lower()  # a clear message
    assert _tag_counters(rcli, s.namespace) == before  # nothing invalidated
    counts = receiver.health()["counts"]
    assert counts["rejected.auth"] >= 3 and counts["rejected.size"] >= 1 and counts["rejected.event"] >= 6
    # The right token and a well-formed event: tags bumped, and never a value written.
    entries = sorted(rcli.scan_iter(f"mc:{s.namespace}:k:*", count=1000))
    assert _post(s, valid).status_code == 200
    assert _tag_counters(rcli, s.namespace) != before
    assert sorted(rcli.scan_iter(f"mc:{s.namespace}:k:*", count=1000)) == entries


def test_pollers_see_every_change_without_polling_upstream(events_setup, receiver, wf, mistral_client_events, rcli):
    s, plain = events_setup, mistral_client_events
    engine_log = s.workdir / "mistral" / "mistral.log"
    logged = engine_log.stat().st_size
    ex = plain.executions.create(wf)
    pollers = [subprocess.Popen([sys.executable, "-c", POLLER, s.url, s.redis_url, s.namespace, ex.id, "30"],
                                stdout=subprocess.PIPE, text=True) for _ in range(2)]
    sampler = Truth(plain, ex.id).start()  # the ground truth: the plain client every 20 ms
    # A RUNNING execution read through the facade is cached with the event-backed TTL.
    client = _client(s)
    time.sleep(0.5)
    assert client.executions.get(ex.id).state == "RUNNING"
    assert _entry_pttl(rcli, client, "executions", "get", ex.id) > 60_000
    results = [json.loads(p.communicate(timeout=60)[0]) for p in pollers]
    check_pollers_saw_every_change(sampler.stop(), results)
    # Mistral's webhook publisher took every answer as a success (it logs an error for
    # anything but 200/201, as it did for this receiver's former 202).
    with open(engine_log, "rb") as f:
        f.seek(logged)
        assert b"Unable to process event" not in f.read()


def test_receiver_keeps_the_execution_of_a_task_that_publishes_no_global(events_setup, receiver, mistral_client_events):
    """The receiver looks a launched execution's workflow up in Mistral: t1 and t3 (no
    global variable) leave the cached execution alone, t2 (publish global) invalidates
    it. A poller fetches the execution three times (first read, t2, the end) where it
    did five before, and sees t2's global variable within 0.5 s: the plugin's result
    (tests/mistral/test_events_plugin.py), over the webhook."""
    receiver.stop()  # without reconciliation: a sweep between Mistral's commit and its event also clears the execution
    receiver.start("--reconcile", "0")
    try:
        _quiet_tasks_keep_the_execution(events_setup, receiver, mistral_client_events)
    finally:
        receiver.stop()
        receiver.start("--reconcile", "2")


def _quiet_tasks_keep_the_execution(events_setup, receiver, mistral_client_events):
    s, plain = events_setup, mistral_client_events
    workflow = ensure_workflow(plain, WF_GLOBAL, "ev_global")
    assert not getattr(workflow, "updated_at", None), "an updated definition is never trusted"
    before = receiver.health()["counts"]
    ex = plain.executions.create("ev_global")
    deadline = time.monotonic() + 30
    while receiver.health()["counts"]["definition_lookups"] < before["definition_lookups"] + 1:
        assert time.monotonic() < deadline, "the receiver never looked the launch up"
        time.sleep(0.05)
    check_published_global_seen(plain, _client(s), ex.id, fetches=3)
    after = receiver.health()["counts"]
    assert after["kept_executions"] - before["kept_executions"] == 2  # t1 and t3
    assert after.get("definition_failures", 0) == before.get("definition_failures", 0)


def test_two_projects_invalidate_only_their_own_scope(events_setup, receiver, wf, mistral_client_events, rcli):
    s = events_setup
    ex = mistral_client_events.executions.create(wf)
    _wait_state(mistral_client_events, ex.id)
    a, b = _client(s, scope="proj-a"), _client(s, scope="proj-b")
    calls_a, calls_b = _count_upstream(a), _count_upstream(b)
    a.executions.get(ex.id), b.executions.get(ex.id)
    a.executions.get(ex.id), b.executions.get(ex.id)
    assert (len(calls_a), len(calls_b)) == (1, 1)
    admin_tag = f"mc:{s.namespace}:t:{scope_for('proj-a', s.url, admin=True)}|executions|id:{ex.id}"
    before_admin = rcli.get(admin_tag)
    resp = _post(s, {"event": "WORKFLOW_SUCCEEDED", "id": ex.id, "project_id": "proj-a", "state": "SUCCESS"})
    assert resp.status_code == 200
    assert set(resp.json()) == {"event", "id", "acknowledged"}  # nothing of anyone's data in the answer
    time.sleep(0.05)
    a.executions.get(ex.id), b.executions.get(ex.id)
    assert (len(calls_a), len(calls_b)) == (2, 1)  # A refetched, B still served from its scope
    assert rcli.get(admin_tag) != before_admin  # and the admins' scope was invalidated too


def test_a_launch_keeps_the_execution_and_a_live_stream_keeps_a_404_briefly(events_setup, receiver, wf,
                                                                           mistral_client_events):
    """WORKFLOW_LAUNCHED clears no read of its own execution (whoever found it found it
    launched: no refetch for a client that creates, then polls), so a 404 read while
    events are live is kept only NOT_FOUND_EVENT_TTL (not the state rules' 5 s)."""
    from mistralclient.api.base import APIException

    from mistral_cache.mistral.policies import NOT_FOUND_EVENT_TTL

    s = events_setup
    ex = mistral_client_events.executions.create(wf)
    _wait_state(mistral_client_events, ex.id)
    client = _client(s, scope="proj-l")
    calls = _count_upstream(client)
    client.executions.get(ex.id)
    assert client.events is not None and client.events.live()
    assert _post(s, {"event": "WORKFLOW_LAUNCHED", "id": ex.id, "project_id": "proj-l", "state": "RUNNING"}).status_code == 200
    time.sleep(0.05)
    client.executions.get(ex.id)
    assert len(calls) == 1, "the launch event made the client refetch its execution"
    assert _post(s, {"event": "WORKFLOW_FAILED", "id": ex.id, "project_id": "proj-l", "state": "ERROR"}).status_code == 200
    time.sleep(0.05)
    client.executions.get(ex.id)
    assert len(calls) == 2  # any other workflow event does clear it

    missing = "0" * 8 + "-0000-4000-8000-" + os.urandom(6).hex()
    for expected in (3, 3):  # fetched once, then remembered
        with pytest.raises(APIException) as caught:
            client.executions.get(missing)
        assert caught.value.error_code == 404 and len(calls) == expected
    time.sleep(NOT_FOUND_EVENT_TTL + 0.1)
    with pytest.raises(APIException):
        client.executions.get(missing)
    assert len(calls) == 4, "a 404 outlived NOT_FOUND_EVENT_TTL while events are live"
    client.close()


def test_receiver_killed_lease_lapses_then_new_epoch(events_setup, receiver, wf, mistral_client_events, rcli):
    s, plain = events_setup, mistral_client_events
    epoch = receiver.health()["lease"]["epoch"]
    client = _client(s)
    calls = _count_upstream(client)
    ex = plain.executions.create(wf)
    time.sleep(0.5)
    assert client.executions.get(ex.id).state == "RUNNING"
    assert _entry_pttl(rcli, client, "executions", "get", ex.id) > 60_000
    n = len(calls)
    receiver.kill()
    killed = time.monotonic()
    try:
        # Within the state rule's 2 s, the entry written under the dead epoch is gone...
        time.sleep(max(0.0, killed + 1.9 - time.monotonic()))
        assert client.executions.get(ex.id).state == "RUNNING"
        assert len(calls) == n + 1
        # ...and entries written now keep the state rules.
        assert 0 < _entry_pttl(rcli, client, "executions", "get", ex.id) <= 2_000
    finally:
        receiver.start("--reconcile", "2")
    assert receiver.health()["lease"]["epoch"] != epoch
    # A new epoch: events flow again, long TTLs come back, the end is seen at once.
    deadline = time.monotonic() + 3
    while client.events is not None and not client.events.live() and time.monotonic() < deadline:
        time.sleep(0.05)
    client.invalidate(f"executions|id:{ex.id}")
    assert client.executions.get(ex.id).state == "RUNNING"
    assert _entry_pttl(rcli, client, "executions", "get", ex.id) > 60_000
    done = _wait_state(plain, ex.id)
    t_done = time.monotonic()
    while client.executions.get(ex.id).state != done:
        assert time.monotonic() - t_done < 0.5, "the final state was not pushed after the restart"
        time.sleep(0.02)


def test_lost_events_are_reconciled_and_counted(events_setup, receiver, wf, mistral_client_events):
    s, plain = events_setup, mistral_client_events
    receiver.stop()
    receiver.start("--reconcile", "1", "--discard", "1")
    try:
        client = _client(s)
        ex = plain.executions.create(wf)
        time.sleep(0.3)
        assert client.executions.get(ex.id).state == "RUNNING"
        done = _wait_state(plain, ex.id)
        t_done = time.monotonic()
        while client.executions.get(ex.id).state != done:
            assert time.monotonic() - t_done < 1 + 1.5, "a lost event was not reconciled within the interval"
            time.sleep(0.05)
        counts = receiver.health()["counts"]
        assert counts.get("discarded", 0) >= 1 and counts.get("missed_events", 0) >= 1
    finally:
        receiver.stop()
        receiver.start("--reconcile", "2")


def test_publisher_plugin_through_stevedore(events_setup, tmp_path, rcli):
    from stevedore import driver

    s = events_setup
    conf = tmp_path / "mistral-cache.conf"
    conf.write_text(f"[publisher]\nredis_url = {s.redis_url}\nnamespace = {s.namespace}\nmistral_url = {s.url}\n")
    os.environ["MISTRAL_CACHE_PUBLISHER_CONFIG"] = str(conf)
    try:
        publisher = driver.DriverManager("mistral.notification.publishers", "mistral_cache", invoke_on_load=True).driver
    finally:
        del os.environ["MISTRAL_CACHE_PUBLISHER_CONFIG"]
    tag = f"mc:{s.namespace}:t:{scope_for('proj-p', s.url)}|tasks|list|wx:wx1"
    before = rcli.get(tag)
    publisher.publish(None, "wx1", {"id": "t1", "project_id": "proj-p", "workflow_execution_id": "wx1"},
                      "TASK_SUCCEEDED", None)
    assert rcli.get(tag) != before
    publisher.publish(None, "wx1", {"id": "t1"}, "TASK_SUCCEEDED", None)  # malformed: ignored, counted
    tags = len(tags_for(parse_event({"id": "t1", "project_id": "proj-p", "workflow_execution_id": "wx1"},
                                    "TASK_SUCCEEDED"), s.url))
    assert publisher.counts == {"events.TASK_SUCCEEDED": 1, "rejected.event": 1, "invalidations": tags}
    publisher.close()  # and its last counts are published, as the receiver's are, for `mistral-cache stats`
    stats = collect_stats(rcli, s.namespace)
    assert any(f":{os.getpid()}:" in p["process"] and p["sections"] == ["events"] for p in stats["processes"])
    assert stats["events"]["by_type"]["TASK_SUCCEEDED"] >= 1 and stats["events"]["rejected_by_reason"]["event"] >= 1
