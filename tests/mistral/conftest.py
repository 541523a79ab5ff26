"""Fixtures for the integration tests against a REAL Mistral server.

``mistral_url``: ``$MISTRAL_URL`` when set (a server someone already runs);
otherwise ``scripts/mistral-server install`` and ``start`` on a free loopback
port, back end from ``$MISTRAL_BACKEND`` (auto, postgres or sqlite; default
auto = PostgreSQL + RabbitMQ when both answer, else SQLite in one process),
stopped (and its database dropped) at the end of the session.

A server that cannot be installed or started fails the tests that need it,
with the script's output and the server log's tail: nothing is skipped.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "mistral-server"
INSTALL_TIMEOUT = 1800  # a cold pip install of Mistral takes a few minutes
START_TIMEOUT = 300  # the script itself gives up on the API after 180 s


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_script(*args: str, timeout: float) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), *args]
    try:
        return subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=str(REPO),
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(
            "`{}` did not finish in {}s\n{}{}".format(
                " ".join(cmd), timeout, e.stdout or "", e.stderr or ""
            ),
            pytrace=False,
        )


def _fail(what: str, result: subprocess.CompletedProcess) -> None:
    pytest.fail(
        f"{what} failed (exit {result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-12000:]}",
        pytrace=False,
    )


def _bypass_proxy_for_loopback() -> None:
    # requests (under mistralclient) honours http_proxy; a local server must
    # not be reached through one.
    for name in ("no_proxy", "NO_PROXY"):
        hosts = [h for h in os.environ.get(name, "").split(",") if h]
        for host in ("127.0.0.1", "localhost"):
            if host not in hosts:
                hosts.append(host)
        os.environ[name] = ",".join(hosts)


@pytest.fixture(scope="session")
def mistral_url(tmp_path_factory):
    _bypass_proxy_for_loopback()
    url = os.environ.get("MISTRAL_URL")
    if url:
        yield url.rstrip("/")
        return

    backend = os.environ.get("MISTRAL_BACKEND", "auto")
    installed = _run_script("install", timeout=INSTALL_TIMEOUT)
    if installed.returncode != 0:
        _fail("scripts/mistral-server install", installed)

    port = _free_port()
    workdir = tmp_path_factory.mktemp("mistral-server")
    location = ["--port", str(port), "--workdir", str(workdir)]
    started = _run_script(
        "start", "--backend", backend, *location, timeout=START_TIMEOUT
    )
    if started.returncode != 0:
        _run_script("stop", *location, timeout=60)
        _fail(f"scripts/mistral-server start --backend {backend}", started)
    lines = started.stdout.strip().splitlines()
    try:
        yield lines[-1]
    finally:
        stopped = _run_script("stop", *location, timeout=120)
        if stopped.returncode != 0:
            sys.stderr.write(stopped.stdout + stopped.stderr)


@pytest.fixture(scope="session")
def mistral_client(mistral_url):
    from mistralclient.api import client

    return client.client(mistral_url=mistral_url)
