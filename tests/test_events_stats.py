"""The events receiver's counters (events by type, invalidations, rejects,
missed_events) reach ``mistral-cache stats`` and the Prometheus collector.

Against a real Redis: the receiver is built as ``mistral-cache events serve``
builds it (:func:`~mistral_cache.mistral.events.serve.build`) and served by
waitress on loopback; events are POSTed over HTTP; ``mistral-cache stats --json``
runs as its own process, reading what the receiver's publisher wrote to Redis.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

pytest.importorskip("waitress")
prometheus_client = pytest.importorskip("prometheus_client")
requests = pytest.importorskip("requests")

from mistral_cache.mistral.events.mapping import parse_event, tags_for  # noqa: E402
from mistral_cache.mistral.events.reconcile import Reconciler  # noqa: E402
from mistral_cache.mistral.events.serve import Running, Settings, build  # noqa: E402
from mistral_cache.observability.metrics import register  # noqa: E402

MISTRAL = "http://mistral.invalid:8989/v2"
TOKEN = b"t0ken-for-the-events-stats-test"
EX, TASK = "6f1e0c3a-0000-4000-8000-000000000001", "6f1e0c3a-0000-4000-8000-000000000002"


@dataclass
class Served:
    running: Running
    url: str
    namespace: str


@pytest.fixture
def served(redis_url: str, namespace: str) -> Iterator[Served]:
    import waitress

    settings = Settings(redis_url=redis_url, mistral_url=MISTRAL, token=TOKEN, namespace=namespace,
                        reconcile=0, definitions=False, stats_interval=0.1)
    running = build(settings)
    server: Any = waitress.create_server(running.receiver, listen="127.0.0.1:0", threads=2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield Served(running, f"http://127.0.0.1:{server.effective_port}", namespace)
    finally:
        server.close()
        thread.join(5)
        running.stop()
        running.receiver.cache.close()


def _post(s: Served, body: Any, token: bytes = TOKEN) -> int:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = requests.post(s.url + "/events", data=data, timeout=5,
                      headers={"Authorization": "Bearer " + token.decode(), "Content-Type": "application/json"})
    return int(r.status_code)


def _workflow(kind: str, state: str) -> dict[str, Any]:
    return {"event": kind, "id": EX, "state": state, "project_id": "<default-project>",
            "root_execution_id": None, "task_execution_id": None, "updated_at": "2026-11-30 19:00:00"}


def _task(kind: str, state: str) -> dict[str, Any]:
    return {"event": kind, "id": TASK, "state": state, "project_id": "<default-project>",
            "workflow_execution_id": EX, "updated_at": "2026-11-30 19:00:00"}


class _Item:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def to_dict(self) -> dict[str, Any]:
        return self.data


class _Listing:
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def list(self, **kwargs: Any) -> list[_Item]:
        return [_Item(i) for i in self.items]


class _Mistral:
    """What reconciliation reads of python-mistralclient: executions/tasks.list(updated_at=...)."""

    def __init__(self, executions: list[dict[str, Any]], tasks: list[dict[str, Any]]) -> None:
        self.executions, self.tasks = _Listing(executions), _Listing(tasks)


def _stats_json(redis_url: str, namespace: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    done = subprocess.run([sys.executable, "-m", "mistral_cache.admin.cli", "stats", "--redis-url", redis_url,
                           "--namespace", namespace, "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode in (0, 1), done.stderr
    return dict(json.loads(done.stdout))


def test_receiver_counters_reach_stats_and_prometheus(served: Served, redis_url: str) -> None:
    accepted = (_workflow("WORKFLOW_LAUNCHED", "RUNNING"), _task("TASK_LAUNCHED", "RUNNING"),
                _task("TASK_SUCCEEDED", "SUCCESS"), _task("TASK_LAUNCHED", "RUNNING"))
    for body in accepted:
        assert _post(served, body) == 200
    assert _post(served, _workflow("WORKFLOW_LAUNCHED", "RUNNING"), token=b"x" * 31) == 401
    assert _post(served, b"{not json") == 400
    assert _post(served, {**_workflow("WORKFLOW_LAUNCHED", "RUNNING"), "event": "WORKFLOW_EXPLODED"}) == 422
    # Reconciliation: the execution ended without its WORKFLOW_SUCCEEDED reaching us.
    missed = Reconciler(_Mistral([{**_workflow("x", "SUCCESS"), "event": None}], []), served.running.receiver, 60)
    assert missed.tick() == 1

    tags = [len(tags_for(parse_event(body), MISTRAL)) for body in accepted]
    tags.append(len(tags_for(parse_event(_workflow("WORKFLOW_RERUN", "SUCCESS")), MISTRAL)))  # the missed one
    expected = {
        "receivers": 1, "events": 4, "by_type": {"TASK_LAUNCHED": 2, "TASK_SUCCEEDED": 1, "WORKFLOW_LAUNCHED": 1},
        "rejected": 3, "rejected_by_reason": {"auth": 1, "event": 1, "json": 1},
        "invalidations": sum(tags), "missed_events": 1, "unacknowledged": 0, "discarded": 0, "kept_executions": 0,
        "reconcile_requests": 2, "definition_requests": 0,
    }
    deadline = time.monotonic() + 10
    while True:  # the receiver publishes every 0.1 s
        data = _stats_json(redis_url, served.namespace)
        if data.get("events") == expected or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert data["events"] == expected
    assert any(p["sections"] == ["events"] for p in data["processes"])

    registry = prometheus_client.CollectorRegistry()
    register(served.running.receiver.cache, registry=registry)
    text = prometheus_client.generate_latest(registry).decode()
    ns = served.namespace
    for line in (
        f'mistral_cache_events_received_total{{namespace="{ns}",type="TASK_LAUNCHED"}} 2.0',
        f'mistral_cache_events_received_total{{namespace="{ns}",type="WORKFLOW_LAUNCHED"}} 1.0',
        f'mistral_cache_events_rejected_total{{namespace="{ns}",reason="auth"}} 1.0',
        f'mistral_cache_events_rejected_total{{namespace="{ns}",reason="json"}} 1.0',
        f'mistral_cache_events_invalidations_total{{namespace="{ns}"}} {float(expected["invalidations"])}',
        f'mistral_cache_events_missed_events_total{{namespace="{ns}"}} 1.0',
    ):
        assert line in text.splitlines(), line


def test_stats_ignores_a_forged_events_section(redis_url: str, namespace: str, rclient: Any) -> None:
    """Anyone who can write Redis can write the stats hash: a bad section drops that
    snapshot (logged), the command still answers."""
    from mistral_cache.observability.publisher import stats_key
    from mistral_cache.tiers.redis import Keyspace

    key = stats_key(Keyspace(namespace))
    good = {"counters": {"misses": 1}, "ts": time.time(), "sections": {"events": {"events.TASK_LAUNCHED": 2}}}
    bad = {"counters": {"misses": 5}, "ts": time.time(), "sections": {"events": {"events.TASK_LAUNCHED": -3}}}
    rclient.hset(key, mapping={"good": json.dumps(good), "bad": json.dumps(bad), "worse": json.dumps({**good, "sections": [1]})})
    data = _stats_json(redis_url, namespace)
    assert data["misses"] == 1
    assert data["events"]["by_type"] == {"TASK_LAUNCHED": 2} and data["events"]["receivers"] == 1


def test_a_process_first_read_already_knows_the_lease(redis_url: str, namespace: str) -> None:
    """The read that starts a process's lease watch decides its TTL knowing the lease:
    else what a process fetches first takes the state rules' TTLs while events flow
    (seen as refetches of unchanged executions in benchmarks/events_freshness.py)."""
    from mistral_cache import Cache
    from mistral_cache.mistral.events.lease import LeaseKeeper, LeaseWatch

    keeper_cache = Cache(redis_url, namespace=namespace, local=None, lock=None, refresh=None)
    client_cache = Cache(redis_url, namespace=namespace)
    keeper = LeaseKeeper(keeper_cache, MISTRAL).start()
    try:
        watch = LeaseWatch(client_cache, MISTRAL, interval=60.0)
        watch.ensure()
        assert watch.live() and watch.epoch == keeper.epoch
    finally:
        keeper.stop()
        keeper_cache.close()
        client_cache.close()


def test_a_stopped_lease_watch_ends_its_thread_and_restarts_on_demand(redis_url: str, namespace: str) -> None:
    """``CachedMistralClient.close()`` stops the watch: its thread ends (so it does not
    read a Redis that is going away, as the bench's did), and a later read starts it."""
    from mistral_cache import Cache
    from mistral_cache.mistral.events.lease import LeaseKeeper, LeaseWatch

    keeper_cache = Cache(redis_url, namespace=namespace, local=None, lock=None, refresh=None)
    client_cache = Cache(redis_url, namespace=namespace)
    keeper = LeaseKeeper(keeper_cache, MISTRAL).start()

    def watching() -> int:
        return sum(t.name == "mistral-cache-lease-watch" and t.is_alive() for t in threading.enumerate())

    try:
        before = watching()
        watch = LeaseWatch(client_cache, MISTRAL, interval=0.02)
        watch.ensure()
        assert watch.live() and watching() == before + 1
        watch.stop()
        deadline = time.monotonic() + 2
        while watching() > before:
            assert time.monotonic() < deadline, "the stopped watch's thread kept running"
            time.sleep(0.01)
        assert not watch.live() and not watch.started
        watch.ensure()
        assert watch.live() and watching() == before + 1
        watch.stop()
    finally:
        keeper.stop()
        keeper_cache.close()
        client_cache.close()


def test_plugin_instances_of_one_engine_share_one_publisher(redis_url: str, namespace: str, rclient: Any,
                                                            tmp_path: Any) -> None:
    """Mistral's engine loads the plugin once per racing first event: those instances
    share one cache, one set of counters, one lease keeper and one stats snapshot
    (before, each kept its own lease and counted as a receiver in ``mistral-cache
    stats``); the lease lives until the last of them closes."""
    from mistral_cache.mistral.events.lease import lease_keys
    from mistral_cache.mistral.events.publisher import Publisher

    conf = tmp_path / "mistral-cache.conf"
    conf.write_text(f"[publisher]\nredis_url = {redis_url}\nnamespace = {namespace}\nmistral_url = {MISTRAL}\n")
    barrier, made = threading.Barrier(4), []

    def load() -> None:
        barrier.wait()
        made.append(Publisher(str(conf)))
        made[-1].publish(None, EX, _task("TASK_SUCCEEDED", "SUCCESS"), "TASK_SUCCEEDED", None)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(made) == 4 and len({id(p.core) for p in made}) == 1
    assert made[0].counts["events.TASK_SUCCEEDED"] == 4
    lease, _, _ = lease_keys(f"mc:{namespace}:", MISTRAL)
    members = lease.rsplit(":", 1)[0] + ":members"
    assert rclient.scard(members) == 1  # one keeper
    for p in made[:3]:
        p.close()
    time.sleep(1.5)  # past the lease's 1 s: still beating, the last handle is open
    assert rclient.exists(lease)
    made[3].close()  # publishes the last counts
    assert not rclient.exists(lease)  # the last keeper's stop ends the epoch
    data = _stats_json(redis_url, namespace)
    assert data["events"]["receivers"] == 1 and data["events"]["by_type"] == {"TASK_SUCCEEDED": 4}
    with pytest.raises(RuntimeError, match="closed"):
        made[3].publish(None, EX, _task("TASK_SUCCEEDED", "SUCCESS"), "TASK_SUCCEEDED", None)
