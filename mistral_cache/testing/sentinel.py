"""Redis Sentinel on loopback ports: a primary, a replica and three sentinels.

Every process is a :class:`~.servers.RedisServer`, so a test can kill the
primary and wait for the sentinels to promote the replica.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

import redis

from .servers import RedisServer
from .support import Managed, stop_all, wait_until

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs 3.11; type-checking only

__all__ = ["RedisSentinelServer"]


class _SentinelNode(RedisServer):
    """A sentinel: redis-server needs a writable config file as its first argument."""

    def __init__(self, config: str, **kw: Any) -> None:
        super().__init__(**kw)
        self._config = config

    def command_line(self, binary: str, workdir: str) -> list[str]:
        path = os.path.join(workdir, "sentinel.conf")
        if not os.path.exists(path):  # on restart keep what sentinel rewrote
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(self._config)
        argv = super().command_line(binary, workdir)
        return [argv[0], path, "--sentinel", *argv[1:]]


class RedisSentinelServer(Managed):
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
            wait_until(self._ready, 30.0, lambda: "sentinels did not converge")
        except BaseException:
            stop_all(self._servers())
            raise
        return self

    def _ready(self) -> bool:
        info = self.replica.info("replication")
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
        raw = sentinel.command("SENTINEL", "MASTER", self.service_name)
        if isinstance(raw, dict):
            return {str(k): str(v) for k, v in raw.items()}
        items = [str(x) for x in raw]
        return dict(zip(items[::2], items[1::2], strict=False))

    def _reported_primary(self, sentinel: RedisServer) -> tuple[str, int] | None:
        addr = sentinel.command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service_name
        )
        if not addr:
            return None
        return str(addr[0]), int(addr[1])

    def stop(self) -> None:
        """Stop sentinels first (so they don't fail over), then the data nodes."""
        stop_all(self._servers())

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

        wait_until(
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
        return probe.info("replication").get("role") == "master"
