"""Fixtures for the integration tests against a REAL Mistral server.

``mistral_url``: ``$MISTRAL_URL`` when set (a server someone already runs);
otherwise ``mistral-server install`` and ``start`` (the CLI of
:mod:`mistral_cache.testing.openstack`, which ``scripts/mistral-server`` runs) on
a free loopback port, back end from ``$MISTRAL_BACKEND`` (auto, postgres or
sqlite; default auto = PostgreSQL + RabbitMQ when both answer, else SQLite in one
process), stopped (and its database dropped) at the end of the session.

A server that cannot be installed or started fails the tests that need it,
with the command's output and the server log's tail: nothing is skipped.
"""

import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.mistral.helpers import admin_receiver

REPO = Path(__file__).resolve().parents[2]
MISTRAL_CLI = "mistral_cache.testing.openstack.mistral_cli"  # scripts/mistral-server
KEYSTONE_CLI = "mistral_cache.testing.openstack.keystone_cli"  # scripts/keystone-server
INSTALL_TIMEOUT = 1800  # a cold pip install of Mistral takes a few minutes
START_TIMEOUT = 300  # the launcher itself gives up on the API after 180 s
SETUP_SECONDS: dict[str, float] = {}
# URL -> (port, workdir) of each server these fixtures started (test_server_smoke.py
# asks scripts/mistral-server for its status).
STARTED: dict[str, tuple[int, Path]] = {}
_INSTALLED: set[str] = set()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cli: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", cli, *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(REPO), check=False)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"`{' '.join(cmd)}` did not finish in {timeout}s\n{e.stdout or ''}{e.stderr or ''}", pytrace=False)


def _fail(what: str, result: subprocess.CompletedProcess) -> None:
    pytest.fail(
        f"{what} failed (exit {result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-12000:]}",
        pytrace=False,
    )


def _install(cli: str, timing: str | None = None) -> None:
    """``install`` once per session (idempotent, but its import check takes seconds)."""
    if cli in _INSTALLED:
        return
    t0 = time.monotonic()
    installed = _run(cli, "install", timeout=INSTALL_TIMEOUT)
    if installed.returncode != 0:
        _fail(f"python -m {cli} install", installed)
    _INSTALLED.add(cli)
    if timing:
        SETUP_SECONDS[timing] = time.monotonic() - t0


@contextmanager
def _server(cli: str, workdir: Path, *options: str, timing: str | None = None) -> Iterator[str]:
    """Start a server on a free port in ``workdir``, yield the URL it prints, stop it
    afterwards (a failed start is stopped too, then fails the test with its output).
    ``options`` hold paths, never secrets: they are shown when the start fails."""
    t0 = time.monotonic()
    port = _free_port()
    location = ["--port", str(port), "--workdir", str(workdir)]
    started = _run(cli, "start", *location, *options, timeout=START_TIMEOUT)
    if started.returncode != 0:
        _run(cli, "stop", *location, timeout=60)
        _fail(f"python -m {cli} start {' '.join(options)}", started)
    if timing:
        SETUP_SECONDS[timing] = time.monotonic() - t0
    url = started.stdout.strip().splitlines()[-1]
    STARTED[url] = (port, workdir)
    try:
        yield url
    finally:
        STARTED.pop(url, None)
        stopped = _run(cli, "stop", *location, timeout=120)
        if stopped.returncode != 0:
            sys.stderr.write(stopped.stdout + stopped.stderr)


@contextmanager
def _mistral(workdir: Path, *options: str, timing: str | None = None) -> Iterator[str]:
    """A Mistral server (back end from ``$MISTRAL_BACKEND``) with extra start options."""
    _install(MISTRAL_CLI)
    with _server(MISTRAL_CLI, workdir, "--backend", os.environ.get("MISTRAL_BACKEND", "auto"), *options, timing=timing) as url:
        yield url


def _private_file(path: Path, secret: str) -> Path:
    """A secret in a new 0600 file: secrets reach the servers in files, never in argv."""
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return path


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
def plain_mistral_url(tmp_path_factory):
    _bypass_proxy_for_loopback()
    url = os.environ.get("MISTRAL_URL")
    if url:
        yield url.rstrip("/")
        return
    with _mistral(tmp_path_factory.mktemp("mistral-server")) as url:
        yield url


@pytest.fixture(scope="session")
def started_servers() -> dict[str, tuple[int, Path]]:
    """URL -> (port, workdir) of the servers these fixtures started and still run."""
    return STARTED


@pytest.fixture(scope="session")
def mistral_url(plain_mistral_url):
    """The server without authentication (test_facade.py runs against both servers)."""
    return plain_mistral_url


@pytest.fixture(scope="session")
def mistral_client(mistral_url):
    from mistralclient.api import client

    return client.client(mistral_url=mistral_url)


# -- Keystone and an authenticated Mistral ---------------------------------------
# ``keystone``: ``$OS_AUTH_URL`` (admin password in ``$OS_PASSWORD``, user ``admin`` of
# project ``admin``, as keystone-manage bootstrap makes them) when set; otherwise
# ``keystone-server install`` and ``start`` on a free port (SQLite, fernet keys
# and a random admin password in a private workdir). ``auth_mistral_url``:
# ``$MISTRAL_AUTH_URL`` when set (or ``$MISTRAL_URL`` when ``$OS_AUTH_URL`` is set too:
# that server is the Keystone-backed one); otherwise ``mistral-server start
# --keystone-url ...``. Passwords travel in files and request bodies, never in argv.
class Keystone:
    """A Keystone v3 endpoint and an admin session on it."""

    def __init__(self, url: str, password_file: Path) -> None:
        from keystoneauth1 import session
        from keystoneauth1.identity import v3

        self.url = url.rstrip("/")
        self.password_file = password_file
        password = password_file.read_text().splitlines()[0].strip()
        self.admin = session.Session(auth=v3.Password(
            auth_url=self.url, username="admin", password=password, project_name="admin",
            user_domain_name="Default", project_domain_name="Default",
        ))
        self.admin_project_id = self.admin.get_project_id()
        self.roles = {r["name"]: r["id"] for r in self.get("/roles")["roles"]}

    def get(self, path: str) -> dict:
        resp = self.admin.get(self.url + path)
        return resp.json()

    def post(self, path: str, body: dict) -> dict:
        resp = self.admin.post(self.url + path, json=body)
        return resp.json()

    def put(self, path: str) -> None:
        self.admin.put(self.url + path)

    def revoke(self, token: str) -> None:
        self.admin.delete(self.url + "/auth/tokens", headers={"X-Subject-Token": token})


@pytest.fixture(scope="session")
def keystone(tmp_path_factory) -> Keystone:
    _bypass_proxy_for_loopback()
    url = os.environ.get("OS_AUTH_URL")
    if url:
        password = os.environ.get("OS_PASSWORD")
        if not password:
            pytest.fail("OS_AUTH_URL is set: OS_PASSWORD must hold the admin password", pytrace=False)
        yield Keystone(url, _private_file(tmp_path_factory.mktemp("keystone-admin") / "admin-password", password))
        return
    _install(KEYSTONE_CLI, timing="keystone install")
    workdir = tmp_path_factory.mktemp("keystone-server")
    with _server(KEYSTONE_CLI, workdir, timing="keystone start") as url:
        yield Keystone(url, workdir / "admin-password")


@pytest.fixture(scope="session")
def auth_mistral_url(keystone, tmp_path_factory):
    url = os.environ.get("MISTRAL_AUTH_URL") or (os.environ.get("OS_AUTH_URL") and os.environ.get("MISTRAL_URL"))
    if url:
        yield url.rstrip("/")
        return
    auth = ["--keystone-url", keystone.url, "--keystone-password-file", str(keystone.password_file)]
    with _mistral(tmp_path_factory.mktemp("mistral-auth-server"), *auth, timing="authenticated mistral start") as url:
        yield url


@dataclass
class User:
    name: str
    password: str = field(repr=False)
    project_id: str
    role: str
    keystone: Keystone = field(repr=False)

    def session(self):
        """A keystoneauth session logged in as this user, scoped to its project."""
        from keystoneauth1 import session
        from keystoneauth1.identity import v3

        return session.Session(auth=v3.Password(
            auth_url=self.keystone.url, username=self.name, password=self.password, project_id=self.project_id,
            user_domain_name="Default",
        ))

    def token(self) -> str:
        """A new token (a fresh login each call: what a token refresh gives)."""
        return self.session().get_token()


@dataclass
class Tenants:
    """Two projects A and B, each with a member and a reader, a member of the admin's
    own project, and the admin (role admin in project admin)."""

    a_member: User
    a_reader: User
    b_member: User
    b_reader: User
    admin_project_member: User
    admin: User


@pytest.fixture(scope="session")
def tenants(keystone) -> Tenants:
    suffix = uuid.uuid4().hex[:8]

    def project(name: str) -> str:
        return keystone.post("/projects", {"project": {"name": f"{name}-{suffix}", "domain_id": "default"}})["project"]["id"]

    def user(name: str, project_id: str, role: str) -> User:
        password = secrets.token_urlsafe(16)
        # A default project, else a token + auth_url re-authenticates to an unscoped token.
        created = keystone.post("/users", {"user": {
            "name": f"{name}-{suffix}", "domain_id": "default", "password": password, "default_project_id": project_id,
        }})["user"]
        keystone.put(f"/projects/{project_id}/users/{created['id']}/roles/{keystone.roles[role]}")
        return User(created["name"], password, project_id, role, keystone)

    a, b = project("tenant-a"), project("tenant-b")
    admin_password = keystone.password_file.read_text().splitlines()[0].strip()
    return Tenants(
        a_member=user("a-member", a, "member"), a_reader=user("a-reader", a, "reader"),
        b_member=user("b-member", b, "member"), b_reader=user("b-reader", b, "reader"),
        admin_project_member=user("admin-member", keystone.admin_project_id, "member"),
        admin=User("admin", admin_password, keystone.admin_project_id, "admin", keystone),
    )


def pytest_terminal_summary(terminalreporter) -> None:
    if SETUP_SECONDS:
        terminalreporter.write_line(
            "authenticated Mistral set-up: " + ", ".join(f"{k} {v:.1f}s" for k, v in SETUP_SECONDS.items())
        )


# -- Mistral's notifier and the events receiver (tests/mistral/test_events.py) ----------
# ``events_mistral``: a server started with ``--notify-url`` (its own, since the notifier
# is configured at start), posting every state change to a receiver port chosen up
# front; ``receiver``: ``mistral-cache events serve`` on that port, restartable by tests.
# The bearer token lives in a 0600 file, never on a command line.
@dataclass
class EventsSetup:
    url: str  # the Mistral API
    port: int  # where the receiver listens
    token_file: Path
    redis_url: str
    namespace: str
    workdir: Path

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()


@pytest.fixture(scope="session")
def events_setup(tmp_path_factory, redis_url):
    _bypass_proxy_for_loopback()
    workdir = tmp_path_factory.mktemp("events")
    token_file = _private_file(workdir / "token", secrets.token_urlsafe(32))
    receiver_port = _free_port()
    notify = ["--notify-url", f"http://127.0.0.1:{receiver_port}/events", "--notify-token-file", str(token_file)]
    with _mistral(workdir / "mistral", *notify) as url:
        yield EventsSetup(url, receiver_port, token_file, redis_url, "ev" + uuid.uuid4().hex[:8], workdir)


class ReceiverProcess:
    """``mistral-cache events serve`` as a real process (kill -9 and restart included)."""

    def __init__(self, setup: EventsSetup) -> None:
        self.setup = setup
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, *extra: str) -> None:
        import requests

        s = self.setup
        self.starts += 1
        log = s.workdir / f"receiver-{self.starts}.log"
        cmd = [sys.executable, "-m", "mistral_cache.admin.cli", "events", "serve", "--listen", f"127.0.0.1:{s.port}",
               "--redis-url", s.redis_url, "--mistral-url", s.url, "--namespace", s.namespace,
               "--token-file", str(s.token_file), *extra]
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=str(REPO))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"receiver exited {self.proc.returncode}:\n{log.read_text()[-3000:]}", pytrace=False)
            try:
                r = requests.get(f"http://127.0.0.1:{s.port}/health",
                                 headers={"Authorization": f"Bearer {s.token}"}, timeout=1)
                if r.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        pytest.fail(f"receiver not ready in 30 s:\n{log.read_text()[-3000:]}", pytrace=False)

    def health(self) -> dict:
        import requests

        s = self.setup
        return requests.get(f"http://127.0.0.1:{s.port}/health", headers={"Authorization": f"Bearer {s.token}"},
                            timeout=2).json()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None


@pytest.fixture(scope="session")
def receiver(events_setup):
    proc = ReceiverProcess(events_setup)
    proc.start("--reconcile", "2")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def mistral_client_events(events_setup):
    from mistralclient.api import client

    return client.client(mistral_url=events_setup.url)


# -- Keystone, Mistral's notifier and the receiver together (test_events_tenants.py) ------
# ``auth_events_setup``: one more Mistral, started with both ``--keystone-url`` (auth on,
# against the session's ``keystone``) and ``--notify-url``, so every event carries the
# real project id of the execution's owner; ``auth_receiver``: ``mistral-cache events
# serve`` for it with the admin's credentials (its definition checks and reconciliation
# list every project), reconciliation off so only events invalidate.
@pytest.fixture(scope="session")
def auth_events_setup(keystone: Keystone, tmp_path_factory, redis_url: str):
    _bypass_proxy_for_loopback()
    workdir = tmp_path_factory.mktemp("auth-events")
    token_file = _private_file(workdir / "token", secrets.token_urlsafe(32))
    receiver_port = _free_port()
    auth = ["--keystone-url", keystone.url, "--keystone-password-file", str(keystone.password_file)]
    notify = ["--notify-url", f"http://127.0.0.1:{receiver_port}/events", "--notify-token-file", str(token_file)]
    with _mistral(workdir / "mistral", *auth, *notify, timing="authenticated notifying mistral start") as url:
        yield EventsSetup(url, receiver_port, token_file, redis_url, "aev" + uuid.uuid4().hex[:8], workdir)


@pytest.fixture(scope="session")
def auth_receiver(auth_events_setup: EventsSetup, keystone: Keystone):
    proc = ReceiverProcess(auth_events_setup)
    proc.start("--reconcile", "0", *admin_receiver(keystone))
    try:
        yield proc
    finally:
        proc.stop()


# -- Mistral's notifier running this project's publisher plugin (test_events_plugin.py) ----
# ``plugin_setup``: one more Mistral, started with ``--notify-plugin`` (this project
# installed into its virtualenv, ``notify = [{"type": "mistral_cache"}]``), so the
# engine invalidates straight into the session's Redis, under its own namespace.
@dataclass
class PluginSetup:
    url: str  # the Mistral API
    redis_url: str
    namespace: str
    workdir: Path  # the server's


@pytest.fixture(scope="session")
def plugin_setup(tmp_path_factory, redis_url: str):
    _bypass_proxy_for_loopback()
    workdir = tmp_path_factory.mktemp("events-plugin") / "mistral"
    namespace = "pl" + uuid.uuid4().hex[:8]
    plugin = ["--notify-plugin", redis_url, "--notify-plugin-namespace", namespace]
    with _mistral(workdir, *plugin, timing="mistral with the publisher plugin start") as url:
        yield PluginSetup(url, redis_url, namespace, workdir)
