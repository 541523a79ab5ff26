"""The simulated Mistral's webhook notifier posts what real Mistral 23 posts, when it does.

A real HTTP receiver on loopback records every POST (its time, headers, body);
the simulator runs in real time with short executions.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from mistralclient.api import client as mistral_client

from benchmarks.sim_mistral import PostDelay, SimulatedMistral
from benchmarks.sim_mistral.notifier import task_event, workflow_event

TOKEN = "sim-notifier-test-token"


class _Posts(ThreadingHTTPServer):
    daemon_threads = True
    got: list[tuple[float, dict[str, str], dict[str, Any]]]


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server: Any = self.server
        server.got.append((time.time(), dict(self.headers.items()), body))
        self.send_response(200)  # Mistral counts only 200/201 as delivered
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[_Posts]:
    server = _Posts(("127.0.0.1", 0), _Handler)
    server.got = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_events_as_mistral_names_them() -> None:
    assert workflow_event(None, "RUNNING") == "WORKFLOW_LAUNCHED"
    assert workflow_event("PAUSED", "RUNNING") == "WORKFLOW_RESUMED"
    assert workflow_event("ERROR", "RUNNING") == "WORKFLOW_RERUN"
    assert workflow_event("RUNNING", "SUCCESS") == "WORKFLOW_SUCCEEDED"
    assert task_event("IDLE", "RUNNING") == "TASK_RESUMED"  # Mistral's own map, odd as it is
    assert task_event(None, "RUNNING") == "TASK_LAUNCHED"
    assert task_event("RUNNING", "ERROR") == "TASK_FAILED"
    assert task_event(None, "IDLE") is None  # no event for a task waiting to start


def test_notifier_posts_each_change_after_it_commits(receiver: _Posts) -> None:
    url = f"http://127.0.0.1:{receiver.server_address[1]}/events"
    delay = PostDelay(median=0.02, sigma=0.3, cap=0.05)
    with SimulatedMistral(latency_scale=0, seed=3, mean_duration=0.6, error_rate=0.0) as sim:
        sim.seed_workflows(2, tasks=2)
        sim.seed_executions(3, running_fraction=1.0, spread=0.0)  # started without the notifier: never posted
        notifier = sim.notify(url, {"Authorization": f"Bearer {TOKEN}"}, delay=delay, seed=1)
        try:
            client = mistral_client.client(mistral_url=sim.url)
            ex = client.executions.create("wf_0000")
            params = ex.params if isinstance(ex.params, str) else json.dumps(ex.params)
            assert url in params  # the engine adds [notifier] notify to the execution's params
            deadline = time.time() + 10
            while time.time() < deadline and not any(b["event"] == "WORKFLOW_SUCCEEDED" for _, _, b in receiver.got):
                time.sleep(0.05)
        finally:
            notifier.stop()
        got = list(receiver.got)
        kinds = [b["event"] for _, _, b in got]
        assert kinds == ["WORKFLOW_LAUNCHED", "TASK_LAUNCHED", "TASK_SUCCEEDED", "TASK_LAUNCHED", "TASK_SUCCEEDED",
                         "WORKFLOW_SUCCEEDED"]  # in order, as real Mistral posted a two-task run; nothing else
        assert all(h["Authorization"] == f"Bearer {TOKEN}" for _, h, _ in got)
        wf_body, task_body = got[0][2], got[1][2]
        assert wf_body["id"] == ex.id and wf_body["state"] == "RUNNING" and wf_body["project_id"] == "<default-project>"
        assert {"root_execution_id", "task_execution_id", "updated_at", "workflow_name"} <= set(wf_body)
        assert task_body["workflow_execution_id"] == ex.id and task_body["state"] == "RUNNING"
        assert {"name", "type", "updated_at", "started_at", "finished_at"} <= set(task_body)
        # Each POST left after its change was true (the ground truth), at most cap + a few ticks later.
        for (t, _, body), lag in zip(got, notifier.delays, strict=True):
            kind = "tasks" if body["event"].startswith("TASK") else "executions"
            changed = next(v.started_at for v in sim.history(kind, body["id"]) if v.value and v.value["state"] == body["state"])
            assert changed <= t and 0.0 <= lag < delay.cap + 0.1
        assert notifier.stats()["posted"] == notifier.stats()["changes"] == 6 and notifier.stats()["failed"] == 0
