"""The real Mistral server the integration suite runs against answers as
Mistral does: a workflow runs to SUCCESS, an unknown name is a 404; and
``scripts/mistral-server`` (a shim over mistral_cache.testing.openstack) reports it."""

import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from mistralclient.api.base import APIException

DEADLINE = 60.0


def _wait_final(client, execution_id):
    deadline = time.monotonic() + DEADLINE
    seen = []
    while True:
        execution = client.executions.get(execution_id)
        if not seen or seen[-1] != execution.state:
            seen.append(execution.state)
        if execution.state in ("SUCCESS", "ERROR", "CANCELLED"):
            return execution, seen
        if time.monotonic() > deadline:
            pytest.fail(f"execution {execution_id} still {seen} after {DEADLINE}s")
        time.sleep(0.1)


@pytest.fixture
def workflow_name(mistral_client):
    name = f"smoke_{uuid.uuid4().hex[:10]}"
    definition = f"""---
version: '2.0'
{name}:
  type: direct
  input:
    - msg
  output:
    echoed: <% $.echoed %>
  tasks:
    echo:
      action: std.echo output=<% $.msg %>
      publish:
        echoed: <% task().result %>
      on-success: [nap]
    nap:
      action: std.sleep seconds=1
"""
    created = mistral_client.workflows.create(definition)
    assert [w.name for w in created] == [name]
    yield name
    mistral_client.workflows.delete(name)


def test_execution_runs_to_success(mistral_client, workflow_name):
    execution = mistral_client.executions.create(
        workflow_name, workflow_input={"msg": "hi"}
    )
    assert execution.state == "RUNNING"

    execution, seen = _wait_final(mistral_client, execution.id)

    assert execution.state == "SUCCESS", execution.state_info
    assert seen[0] == "RUNNING"
    assert execution.to_dict()["output"] == '{"echoed": "hi"}'
    tasks = mistral_client.tasks.list(workflow_execution_id=execution.id)
    assert sorted((t.name, t.state) for t in tasks) == [
        ("echo", "SUCCESS"),
        ("nap", "SUCCESS"),
    ]
    mistral_client.executions.delete(execution.id)


def test_unknown_workflow_is_a_404(mistral_client):
    with pytest.raises(APIException) as caught:
        mistral_client.workflows.get(f"no_such_workflow_{uuid.uuid4().hex}")
    assert caught.value.error_code == 404


def test_standard_actions_are_loaded(mistral_client):
    names = {a.name for a in mistral_client.actions.list(limit=1000)}
    assert {"std.echo", "std.noop", "std.sleep", "std.http", "std.fail"} <= names


@pytest.mark.parametrize("python", ["project", "python3"])
def test_the_script_reports_the_running_server(mistral_url, started_servers, python):
    """The shim runs as before, also under a python3 without the project's dependencies
    (the launcher is standard library only), and prints the status line callers read."""
    if mistral_url not in started_servers:
        pytest.skip("$MISTRAL_URL: a server these tests did not start")
    interpreter = sys.executable if python == "project" else shutil.which("python3")
    if interpreter is None:
        pytest.skip("no python3 on PATH")
    port, workdir = started_servers[mistral_url]
    script = Path(__file__).resolve().parents[2] / "scripts" / "mistral-server"
    result = subprocess.run([interpreter, str(script), "status", "--port", str(port), "--workdir", str(workdir)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("running: pid "), result.stdout
    assert f", {mistral_url}, API answers 200, workdir {workdir}" in result.stdout


def test_the_database_password_stays_off_command_lines_and_state(monkeypatch, tmp_path):
    """The PostgreSQL password reaches the create/drop helper on stdin (argv is public
    in ``ps``) and is not kept in the state file: stop takes it from the environment."""
    from mistral_cache.testing.openstack import postgres

    calls = []
    monkeypatch.setattr(postgres.subprocess, "run", lambda cmd, **kw: calls.append((cmd, kw)) or subprocess.CompletedProcess(cmd, 0, ""))
    params = postgres.PgParams("127.0.0.1", 5432, "postgres", "s3cret-pw")
    assert postgres.create_database(tmp_path / "python", "db_1", params) == (True, "")
    (cmd, kw), = calls
    assert not any("s3cret-pw" in arg for arg in cmd)
    assert "s3cret-pw" in kw["input"]
    assert "s3cret-pw" not in repr(params) and "password" not in params.public()
    monkeypatch.setenv("MISTRAL_PG_PASSWORD", "s3cret-pw")
    assert postgres.PgParams.from_state(params.public()) == params
