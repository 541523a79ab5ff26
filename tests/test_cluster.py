"""The contract on a real Redis Cluster (3 masters, 1 replica each), and a master failover.

The cluster is the session's ``cluster`` fixture (``tests/conftest.py``); the
failover test runs last in this module because it kills a master, and restarts
it as a replica before it returns.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis.cluster

from mistral_cache import Cache, Local, Timeouts
from mistral_cache.testing import RedisClusterServer
from mistral_cache.testing.contract import CacheContract, CacheFactory, cache_factory
from mistral_cache.tiers.redis import Keyspace, sync_client_from_url
from tests.stampede_helpers import collect

pytestmark = pytest.mark.cluster


class TestClusterContract(CacheContract):
    """Redis Cluster alone, and behind a local tier."""

    @pytest.fixture(params=[None, Local()], ids=["redis", "local+redis"])
    def make_cache(self, request: pytest.FixtureRequest, cluster: RedisClusterServer, namespace: str) -> Iterator[CacheFactory]:
        with cache_factory(redis_url=cluster.url, local=request.param, timeouts=Timeouts(socket=1.0), namespace=namespace) as make:
            yield make


def test_entry_and_lock_share_a_slot_and_keys_spread(cluster: RedisClusterServer) -> None:
    from redis.crc import key_slot

    ks = Keyspace("spread")
    slots = set()
    for key in ["a", "}x", "", "x}y", "{z}", "workflow:wf1:ns"] + [f"k{i}" for i in range(200)]:
        assert key_slot(ks.entry(key).encode()) == key_slot(ks.lock(key).encode())
        slots.add(key_slot(ks.entry(key).encode()))
    assert len(slots) > 150  # a namespace is not piled onto one slot (so not onto one node)


def test_redis_instance_and_coherence_across_caches(cluster: RedisClusterServer, namespace: str) -> None:
    client = cluster.client()
    a = Cache(redis=client, namespace=namespace, refresh=None)
    b = Cache(cluster.url, namespace=namespace, refresh=None)
    source = {"v": 1}

    def make(cache: Cache) -> Callable[[str], int]:
        @cache.cached(ttl=60, key="item:{name}", tags=["t:{name}"])
        def get(name: str) -> int:
            return source["v"]

        return get

    ga, gb = make(a), make(b)
    try:
        assert ga("x") == 1
        assert gb("x") == 1  # from Redis
        a.ensure_listener()
        b.ensure_listener()
        assert a.listener is not None and b.listener is not None
        assert a.listener.connected.wait(5) and b.listener.connected.wait(5)
        assert gb("x") == 1
        source["v"] = 2
        a.invalidate_tags("t:x")
        deadline = time.monotonic() + 3
        while gb("x") != 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gb("x") == 2  # b's local copy was dropped by a's announcement
        source["v"] = 3
        ga.invalidate("x")
        deadline = time.monotonic() + 3
        while gb("x") != 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gb("x") == 3
    finally:
        a.close()
        b.close()
        client.close()


def test_async_cluster_client(cluster: RedisClusterServer, namespace: str) -> None:
    cache = Cache(cluster.url, namespace=namespace, local=None, refresh=None)
    calls: list[int] = []

    @cache.cached(ttl=60, tags=["all"])
    async def f(i: int) -> int:
        calls.append(i)
        await asyncio.sleep(0.01)
        return i * 2

    async def main() -> None:
        assert await asyncio.gather(*(f(i % 3) for i in range(12))) == [(i % 3) * 2 for i in range(12)]
        await cache.ainvalidate_tags("all")
        assert await f(1) == 2

    asyncio.run(main())
    assert sorted(calls) == [0, 1, 1, 2]
    assert cache.stats()["breaker"]["state"] == "closed"


# -- stampede on the cluster: test_stampede's workers, their call counter on the cluster too ----------
def _cluster_worker(kind: str, url: str, *args: Any) -> None:
    import test_stampede as st

    st.CLIENTS[url] = sync_client_from_url(url)  # _counter() finds this instead of redis.Redis.from_url
    {"threads": st.thread_worker, "tasks": st.task_worker}[kind](url, *args)


@pytest.mark.parametrize("kind,per_process", [("threads", 16), ("tasks", 64)])
def test_stampede_four_processes_one_call(cluster: RedisClusterServer, namespace: str, kind: str, per_process: int) -> None:
    import test_stampede as st

    nproc = 4
    barrier = st.CTX.Barrier(nproc * per_process if kind == "threads" else nproc)
    out = st.CTX.Queue()
    procs = [st.CTX.Process(target=_cluster_worker, args=(kind, cluster.url, namespace, per_process, barrier, out)) for _ in range(nproc)]
    for p in procs:
        p.start()
    got = collect(out, nproc, procs, st.JOIN)
    assert [e for _, _, errs, _ in got for e in errs] == []
    values = [v for _, vals, _, _ in got for v in vals]
    assert len(values) == nproc * per_process and all(v == st.expected(7) for v in values)
    client = cluster.client()
    assert int(client.get(f"{namespace}:calls") or 0) == 1
    client.close()
    assert sum(c for *_, c in got) == 1


def test_doctor_reports_the_cluster(cluster: RedisClusterServer) -> None:
    from mistral_cache.admin.doctor import doctor

    report = doctor(cluster.url, pings=5)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["topology"] == "cluster"
    assert checks["topology"]["status"] == "ok" and checks["topology"]["masters"] == 3 and checks["topology"]["replicas"] == 3
    assert len(checks["version"]["versions"]) == 6 and checks["connect"]["status"] == "ok"


def test_zz_master_failover_callers_keep_getting_correct_values(cluster: RedisClusterServer) -> None:
    """Kill a master while 4 threads keep calling; every value returned is correct."""
    namespace = "fo-" + uuid.uuid4().hex[:8]
    cache = Cache(cluster.url, namespace=namespace, local=Local(ttl=0.2), refresh=None, timeouts=Timeouts(socket=0.5))
    version = {"v": 0}

    @cache.cached(ttl=30, key="item:{i}")
    def get(i: int) -> tuple[int, int]:
        return i, version["v"]

    stop = threading.Event()
    errors: list[BaseException] = []
    wrong: list[object] = []

    def caller() -> None:
        n = 0
        while not stop.is_set():
            i = n % 50
            n += 1
            try:
                value = get(i)
            except BaseException as exc:  # a caller must never see one
                errors.append(exc)
                continue
            if list(value) != [i, 0]:
                wrong.append(value)

    for i in range(50):
        get(i)
    threads = [threading.Thread(target=caller) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        victim = cluster.kill_master(0)
        try:
            cluster.wait_for_failover(timeout=20)
            time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not errors and not wrong, f"errors={errors[:3]} wrong={wrong[:3]} stats={cache.stats()}"
        # The cluster serves again through the same cache: a changed value after invalidation shows up.
        version["v"] = 1
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            cache.clear()
            if cache.stats()["breaker"]["state"] == "closed" and list(get(7)) == [7, 1]:
                break
            time.sleep(0.2)
        assert list(get(7)) == [7, 1]
        listener = cache.listener
        assert listener is not None
        deadline = time.monotonic() + 10
        while not listener.connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert listener.connected.is_set(), "the invalidation listener resubscribed on the healed cluster"
        fresh = redis.cluster.RedisCluster(startup_nodes=[redis.cluster.ClusterNode(h, p) for h, p in cluster.startup_nodes if p != victim.port])
        assert fresh.ping()
        fresh.close()
    finally:
        stop.set()
        for t in threads:
            t.join()
        cache.close()
        # The cluster is the session's: the killed master rejoins, as a replica.
        for node in cluster.nodes:
            if node.pid is None:
                node.restart()
        cluster.wait_ready(timeout=30)
