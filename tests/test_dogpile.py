"""The dogpile.cache backend ``mistral_cache`` against a real Redis: dogpile's own
generic backend and mutex suites unchanged, then what the suites do not cover
(metadata through both tiers, one round trip per batch call, coherence and region
invalidation across processes, a cross-process stampede, Redis killed)."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.connection
from dogpile.cache import make_region
from dogpile.cache.api import NO_VALUE, CachedValue
from dogpile.cache.region import CacheRegion
from dogpile.testing.fixtures import _GenericBackendFixture, _GenericBackendTestSuite, _GenericMutexTestSuite

from mistral_cache.dogpile import MistralBackend, RegionInvalidator
from mistral_cache.dogpile.copies import live_value
from mistral_cache.testing import RedisServer

CTX = mp.get_context("spawn")


def make(url: str, namespace: str, **arguments: Any) -> CacheRegion:
    """A region as a service configures one: the entry point's name, an argument dict, the strategy."""
    region = make_region()
    region.configure("mistral_cache", expiration_time=arguments.pop("expiration_time", 300),
                     arguments={"redis_url": url, "namespace": namespace, **arguments},
                     region_invalidator=RegionInvalidator(region))
    return region


# -- dogpile's own suites, unchanged -------------------------------------------------------
class _Suite(_GenericBackendFixture):
    backend = "mistral_cache"

    @classmethod
    def setup_class(cls) -> None:  # dogpile's runs before pytest fixtures; ours below does its work
        pass

    @pytest.fixture(autouse=True, scope="class")
    def _configure(self, request: pytest.FixtureRequest, redis_url: str) -> None:
        request.cls.config_args = {"arguments": {"redis_url": redis_url, "namespace": "suite-" + uuid.uuid4().hex[:8]}}
        _GenericBackendFixture.setup_class.__func__(request.cls)  # type: ignore[attr-defined]


class TestGenericBackend(_Suite, _GenericBackendTestSuite):
    pass


class TestGenericMutex(_Suite, _GenericMutexTestSuite):
    pass


# -- semantics --------------------------------------------------------------------------
def test_entry_point_and_arguments_from_strings(redis_url: str, namespace: str) -> None:
    """configure_from_config hands strings: they are read as numbers and flags, and the dict is left alone."""
    region = make_region().configure_from_config({
        "cache.backend": "mistral_cache", "cache.expiration_time": "60",
        "cache.arguments.redis_url": redis_url, "cache.arguments.namespace": namespace,
        "cache.arguments.local_maxsize": "10", "cache.arguments.local_ttl": "5", "cache.arguments.lock_timeout": "2",
        "cache.arguments.distributed_lock": "true",
    }, "cache.")
    backend = region.backend
    assert isinstance(backend, MistralBackend)
    assert backend.local_ttl == 5.0 and backend.lock_policy.timeout == 2.0 and backend.has_lock_timeout()
    assert region.get_or_create("k", lambda: "v") == "v"


def test_cached_value_metadata_survives_both_tiers(redis_url: str, namespace: str) -> None:
    writer, reader = make(redis_url, namespace), make(redis_url, namespace)
    value = {"a": [1, 2.5, None], "b": "é"}
    writer.set("k", value)
    stored = writer.backend.get("k")  # the local tier
    assert isinstance(stored, CachedValue) and stored.payload == value
    from_redis = reader.backend.get("k")  # another backend: Redis, decoded
    assert isinstance(from_redis, CachedValue)
    assert from_redis.payload == value and from_redis.metadata == stored.metadata
    assert type(from_redis.metadata["ct"]) is float and from_redis.metadata["ct"] == stored.metadata["ct"]
    assert reader.backend.get("k").metadata == stored.metadata  # and again from the reader's local tier


def test_pickle_needs_secret_and_signs(redis_url: str, namespace: str, rclient: redis.Redis) -> None:
    with pytest.raises(Exception, match="secret"):
        make(redis_url, namespace, serializer="pickle")
    region = make(redis_url, namespace, serializer="pickle", secret="s3cret")
    region.set("k", {1, 2, (3, 4)})
    assert make(redis_url, namespace, serializer="pickle", secret="s3cret").get("k") == {1, 2, (3, 4)}
    # another secret cannot read (or be fooled by) the entry
    assert make(redis_url, namespace, serializer="pickle", secret="other").get("k") is NO_VALUE


class _Sends:
    """Counts what this thread writes to Redis sockets: one pipeline is one send."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        me = threading.get_ident()
        real = redis.connection.AbstractConnection.send_packed_command

        def counting(conn: Any, command: Any, check_health: bool = True) -> Any:
            if threading.get_ident() == me:
                self.count += 1
            return real(conn, command, check_health)

        monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)


def test_batch_calls_are_one_round_trip_each(redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    region = make(redis_url, namespace, local_maxsize=0)  # no local tier: every get goes to Redis
    region.set("warm", 1)  # connections made, scripts and listener up
    sends = _Sends(monkeypatch)
    region.set_multi({f"k{i}": i for i in range(50)})
    assert sends.count == 1
    sends.count = 0
    assert region.get_multi([f"k{i}" for i in range(50)] + ["absent"]) == [*range(50), NO_VALUE]
    assert sends.count == 1
    sends.count = 0
    region.delete_multi([f"k{i}" for i in range(50)])
    assert sends.count == 1
    assert region.get_multi(["k0", "k49"]) == [NO_VALUE, NO_VALUE]


#: Generous: a loaded machine can take seconds to schedule a thread or a process.
DEADLINE = 30.0


def _listening(region: CacheRegion) -> None:
    """Start the region's listener and wait until it is subscribed. Its subscription
    flushes the local tier (what was filled before may have missed invalidations), so a
    test about local copies fills them after this, not before."""
    cache = region.backend.cache
    cache.ensure_listener()
    assert cache.listener.connected.wait(DEADLINE), "the listener never subscribed"


def test_local_hit_does_no_io(redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    region = make(redis_url, namespace)
    _listening(region)  # or its subscription may flush the copy below, and the first get refill it
    region.get_or_create("k", lambda: "v")
    sends = _Sends(monkeypatch)
    for _ in range(100):
        assert region.get_or_create("k", lambda: "other") == "v"
    assert sends.count == 0


# -- across processes ----------------------------------------------------------------------
def _worker(url: str, namespace: str, conn: Any) -> None:
    """A service process: a region on the backend, a creator reading the "upstream" (a Redis key)."""
    region = make(url, namespace, local_ttl=600)  # only coherence can explain a fresh value in time
    region.backend.cache.ensure_listener()
    subscribed = region.backend.cache.listener.connected.wait(60)
    r = redis.Redis.from_url(url)

    def creator(key: str, delay: float) -> str:
        r.incr(f"{namespace}:computes")
        time.sleep(delay)
        return (r.get(f"{namespace}:src:{key}") or b"none").decode()

    conn.send("ready" if subscribed else "the listener never subscribed")
    while True:
        cmd, args = conn.recv()
        if cmd == "stop":
            return
        if cmd == "goc":
            key, delay = args
            started = time.monotonic()
            value = region.get_or_create(key, lambda: creator(key, delay))
            conn.send((value, time.monotonic() - started))
        elif cmd == "delete":
            region.delete(args)
            conn.send(None)
        elif cmd == "set":
            region.set(*args)
            conn.send(None)
        elif cmd == "invalidate":
            region.invalidate(hard=args)
            conn.send(None)
        elif cmd == "holds":  # whether the local tier still holds a live copy (no I/O)
            conn.send(live_value(region.backend.local, args) is not NO_VALUE)


class Proc:
    def __init__(self, url: str, namespace: str) -> None:
        self.conn, child = CTX.Pipe()
        self.proc = CTX.Process(target=_worker, args=(url, namespace, child), daemon=True)
        self.proc.start()
        assert self.conn.poll(90)
        assert self.conn.recv() == "ready"

    def call(self, cmd: str, args: Any = None, timeout: float = 30) -> Any:
        self.conn.send((cmd, args))
        assert self.conn.poll(timeout), f"{cmd} timed out"
        return self.conn.recv()

    def send(self, cmd: str, args: Any = None) -> None:
        self.conn.send((cmd, args))

    def stop(self) -> None:
        self.conn.send(("stop", None))
        self.proc.join(10)


@pytest.fixture
def procs(redis_url: str, namespace: str) -> Iterator[list[Proc]]:
    started = [Proc(redis_url, namespace) for _ in range(3)]
    yield started
    for p in started:
        p.stop()


def _src(rclient: redis.Redis, namespace: str, key: str, value: str) -> None:
    rclient.set(f"{namespace}:src:{key}", value)


def _poll(fn: Any, timeout: float = DEADLINE) -> Any:
    """``fn()`` until it is true or the deadline passes. An announcement is applied by the
    other processes' listener threads asynchronously: a test waits for it, generously
    (local_ttl is 600 s, so only coherence can explain the change)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = fn()
        if out:
            return out
        time.sleep(0.005)
    return fn()


def test_delete_and_set_reach_other_processes_local_tiers(procs: list[Proc], rclient: redis.Redis, namespace: str) -> None:
    a, b, _ = procs
    _src(rclient, namespace, "k", "v1")
    assert a.call("goc", ("k", 0))[0] == "v1"
    assert b.call("goc", ("k", 0))[0] == "v1"  # now in b's local tier (local_ttl 600 s)
    _src(rclient, namespace, "k", "v2")
    a.call("delete", "k")
    assert _poll(lambda: b.call("goc", ("k", 0))[0] == "v2"), "b kept serving its local copy after a's delete"
    a.call("set", ("k", "v3"))
    assert _poll(lambda: b.call("goc", ("k", 0))[0] == "v3"), "b kept serving its local copy after a's set"


def test_hard_invalidate_reaches_every_process(procs: list[Proc], rclient: redis.Redis, namespace: str) -> None:
    a, b, c = procs
    for key in ("x", "y"):
        _src(rclient, namespace, key, "old")
        assert a.call("goc", (key, 0))[0] == "old" and b.call("goc", (key, 0))[0] == "old"
        _src(rclient, namespace, key, "new")
    c.call("invalidate", True)
    # c's invalidate returned once Redis published it; b's and a's listener threads apply it
    # when they are scheduled, so the first read may still come before that (seen under load)
    assert _poll(lambda: b.call("goc", ("x", 0))[0] == "new"), "b kept serving its local copy after c's hard invalidate"
    assert _poll(lambda: a.call("goc", ("y", 0))[0] == "new"), "a kept serving its local copy after c's hard invalidate"


def test_soft_invalidate_one_regenerates_others_keep_old(procs: list[Proc], rclient: redis.Redis, namespace: str) -> None:
    a, b, c = procs
    _src(rclient, namespace, "k", "old")
    assert a.call("goc", ("k", 0))[0] == "old" and b.call("goc", ("k", 0))[0] == "old"
    _src(rclient, namespace, "k", "new")
    c.call("invalidate", False)
    # c's invalidate returned once Redis published it; a's and b's listener threads drop
    # their local copies when they are scheduled. Before that a would be served its copy
    # and never regenerate (seen in CI under load)
    assert _poll(lambda: not a.call("holds", "k") and not b.call("holds", "k")), "a local copy outlived c's invalidate"
    a.send("goc", ("k", 1.5))  # a regenerates, slowly, holding the mutex
    # wait until a's creator runs (it holds the mutex then), not a fixed time: a loaded
    # machine can take longer than any sleep to get there
    assert _poll(lambda: int(rclient.get(f"{namespace}:computes") or 0) == 2, 10), "a never started regenerating"
    value, _ = b.call("goc", ("k", 0))
    # "old", not "new": b did not wait for a's regeneration (it writes "new" when it ends)
    assert value == "old", "soft: b should get the old value while a regenerates"
    assert a.conn.poll(10) and a.conn.recv()[0] == "new"
    assert _poll(lambda: b.call("goc", ("k", 0))[0] == "new")
    assert int(rclient.get(f"{namespace}:computes") or 0) == 2  # one fill (b read it from Redis), one regeneration


def _stampede(url: str, namespace: str, threads: int, barrier: Any, out: Any) -> None:
    region = make(url, namespace)
    r = redis.Redis.from_url(url)

    def creator() -> str:
        r.incr(f"{namespace}:computes")
        time.sleep(0.3)
        return "v"

    results: list[str] = []

    def one() -> None:
        barrier.wait()
        results.append(region.get_or_create("cold", creator))

    ts = [threading.Thread(target=one) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.put(results)


def test_stampede_across_processes_computes_once(redis_url: str, namespace: str, rclient: redis.Redis) -> None:
    nproc, nthreads = 3, 4
    barrier, out = CTX.Barrier(nproc * nthreads), CTX.Queue()
    ps = [CTX.Process(target=_stampede, args=(redis_url, namespace, nthreads, barrier, out)) for _ in range(nproc)]
    for p in ps:
        p.start()
    results = [v for _ in ps for v in out.get(timeout=60)]
    for p in ps:
        p.join(10)
    assert results == ["v"] * nproc * nthreads
    assert int(rclient.get(f"{namespace}:computes") or 0) == 1


# -- faults ----------------------------------------------------------------------------------
def _failed_resubscribes(listener: Any, n: int) -> None:
    """Wait until the listener, cut off from Redis, has failed ``n`` more attempts to resubscribe."""
    target, deadline = listener.reconnects + n, time.monotonic() + DEADLINE
    while listener.reconnects < target:
        assert time.monotonic() < deadline, "the listener stopped trying to resubscribe"
        time.sleep(0.01)


def test_listener_flushes_before_it_reports_the_loss(namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever sees the listener disconnected (``connected`` clear, ``stats()``) finds the
    local tier flushed: the fault tests rely on it. The listener thread may be descheduled
    between the two steps on a loaded machine; a slow clear makes that window wide."""
    with RedisServer() as server:
        region = make(server.url, namespace, socket_timeout=0.2, connect_timeout=0.2)
        _listening(region)
        region.set("k", "v")
        local = region.backend.local
        assert local.peek("k") is not None
        real_clear = local.clear

        def slow_clear() -> None:
            time.sleep(0.3)
            real_clear()

        monkeypatch.setattr(local, "clear", slow_clear)
        server.kill()
        listener, deadline = region.backend.cache.listener, time.monotonic() + DEADLINE
        while listener.connected.is_set():
            assert time.monotonic() < deadline, "the listener never noticed Redis was killed"
            time.sleep(0.01)
        assert local.peek("k") is None, "the listener reported the loss before flushing the local tier"


def test_redis_killed_callers_keep_working(namespace: str) -> None:
    with RedisServer() as server:
        region = make(server.url, namespace, socket_timeout=0.2, connect_timeout=0.2)
        calls: list[str] = []

        def creator(key: str) -> Any:
            calls.append(key)
            return f"value-{key}"

        _listening(region)  # the loss below is a subscribed listener's (one that never subscribed flushes nothing)
        assert region.get_or_create("held", lambda: creator("held")) == "value-held"
        server.kill()
        started = time.monotonic()
        listener = region.backend.cache.listener
        while listener.connected.is_set():  # it flushes the local tier: it cannot know what it will miss
            assert time.monotonic() - started < 10
            time.sleep(0.01)
        assert region.get_or_create("held", lambda: creator("held")) == "value-held"  # the creator, no exception
        _failed_resubscribes(listener, 2)  # they do not flush again
        assert region.get_or_create("held", lambda: creator("held")) == "value-held"  # then the local tier
        assert calls == ["held", "held"]
        region.set("other", 1)
        assert region.get("other") == 1
        region.delete("held")
        region.invalidate()
        assert region.get("held") is NO_VALUE
        assert region.get_or_create("held", lambda: creator("held")) == "value-held"
        assert time.monotonic() - started < 10
        assert region.backend.cache.stats()["pending"]  # the delete and the invalidation are owed, to be replayed
