"""oslo.cache as an OpenStack service uses it, unpatched: an oslo.config ``[cache]``
section read from a file, ``oslo_cache.core.configure_cache_region``, a memoized
function from ``get_memoization_decorator`` — with ``proxies =
mistral_cache.oslo.LocalTierProxy`` in front of ``dogpile.cache.redis``, in
several processes against a real Redis."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import socket
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from oslo_cache import core
from oslo_config import cfg

from mistral_cache.oslo import LocalTierProxy
from mistral_cache.testing import RedisServer, free_port

CTX = mp.get_context("spawn")

#: Generous: a loaded machine can take seconds to schedule a thread or a process.
DEADLINE = 30.0

SECTION = """[cache]
enabled = true
backend = dogpile.cache.redis
redis_server = {host}:{port}
expiration_time = 600
socket_timeout = 0.5
proxies = mistral_cache.oslo.LocalTierProxy
"""


def write_conf(tmp: Path, url: str) -> str:
    parts = urlsplit(url)
    path = tmp / "service.conf"
    path.write_text(SECTION.format(host=parts.hostname, port=parts.port))
    return str(path)


def service(conf_file: str) -> tuple[Any, Any]:
    """What a service does at start-up: register oslo.cache's options, read its config file, configure its region."""
    conf = cfg.ConfigOpts()
    core.configure(conf)
    conf(["--config-file", conf_file], project="svc")
    region = core.create_region()
    core.configure_cache_region(conf, region)
    return region, core.get_memoization_decorator(conf, region, "cache")


def _memoized(memoize: Any, calls: list[int]) -> Any:
    """The same function (one name, one key) memoized on a given region."""

    @memoize
    def f(ns: str, x: int) -> dict[str, int]:
        calls.append(x)
        return {"x": x}

    return f


def test_the_section_configures_the_proxy(tmp_path: Path, redis_url: str, namespace: str) -> None:
    conf_file = write_conf(tmp_path, redis_url)
    region, memoize = service(conf_file)
    assert isinstance(region.backend, LocalTierProxy)
    assert type(region.actual_backend).__name__ == "RedisBackend"
    calls: list[int] = []
    f = _memoized(memoize, calls)
    assert f(namespace, 1) == {"x": 1} and f(namespace, 1) == {"x": 1} and calls == [1]
    # The value is where and as dogpile.cache.redis keeps it: a service without the proxy reads it.
    conf = cfg.ConfigOpts()
    core.configure(conf)
    conf(["--config-file", conf_file], project="svc")
    conf.set_override("proxies", [], "cache")
    plain = core.create_region()
    core.configure_cache_region(conf, plain)
    assert type(plain.backend).__name__ == "RedisBackend"
    other: list[int] = []
    assert _memoized(core.get_memoization_decorator(conf, plain, "cache"), other)(namespace, 1) == {"x": 1} and other == []


def _worker(conf_file: str, url: str, namespace: str, conn: Any) -> None:
    region, memoize = service(conf_file)
    region.backend.cache.ensure_listener()
    subscribed = region.backend.cache.listener.connected.wait(60)
    r = redis.Redis.from_url(url)

    @memoize
    def lookup(ns: str, name: str) -> str:
        r.incr(f"{ns}:computes")
        time.sleep(float(r.get(f"{ns}:delay") or 0))
        return (r.get(f"{ns}:src:{name}") or b"none").decode()

    conn.send("ready" if subscribed else "the listener never subscribed")
    while True:
        cmd, args = conn.recv()
        if cmd == "stop":
            return
        if cmd == "get":
            conn.send(lookup(namespace, args))
        elif cmd == "invalidate":
            lookup.invalidate(namespace, args)
            conn.send(None)
        elif cmd == "stampede":
            barrier_n, name = args
            out: list[str] = []
            ts = [threading.Thread(target=lambda: out.append(lookup(namespace, name))) for _ in range(barrier_n)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            conn.send(out)


class Proc:
    def __init__(self, conf_file: str, url: str, namespace: str) -> None:
        self.conn, child = CTX.Pipe()
        self.proc = CTX.Process(target=_worker, args=(conf_file, url, namespace, child), daemon=True)
        self.proc.start()
        assert self.conn.poll(90)
        assert self.conn.recv() == "ready"

    def call(self, cmd: str, args: Any = None) -> Any:
        self.conn.send((cmd, args))
        assert self.conn.poll(60), f"{cmd} timed out"
        return self.conn.recv()

    def stop(self) -> None:
        self.conn.send(("stop", None))
        self.proc.join(10)


@pytest.fixture
def two(tmp_path: Path, redis_url: str, namespace: str) -> Any:
    conf_file = write_conf(tmp_path, redis_url)
    procs = [Proc(conf_file, redis_url, namespace) for _ in range(2)]
    yield procs
    for p in procs:
        p.stop()


def test_invalidated_in_one_process_recomputed_in_the_other(two: list[Proc], rclient: redis.Redis, namespace: str) -> None:
    a, b = two
    rclient.set(f"{namespace}:src:wf", "v1")
    assert a.call("get", "wf") == "v1" and b.call("get", "wf") == "v1"  # both hold it locally (local_ttl 60 s)
    rclient.set(f"{namespace}:src:wf", "v2")
    a.call("invalidate", "wf")
    deadline = time.monotonic() + DEADLINE  # b's listener thread applies the announcement when it is scheduled
    while b.call("get", "wf") != "v2":
        assert time.monotonic() < deadline, "b kept its local copy after a invalidated it"
        time.sleep(0.01)
    assert int(rclient.get(f"{namespace}:computes") or 0) == 2  # a's first call, then b's recompute


def test_stampede_on_a_cold_key_computes_once(two: list[Proc], rclient: redis.Redis, namespace: str) -> None:
    rclient.set(f"{namespace}:src:cold", "v")
    rclient.set(f"{namespace}:delay", "0.3")
    for p in two:
        p.conn.send(("stampede", (8, "cold")))
    results = []
    for p in two:
        assert p.conn.poll(60)
        results += p.conn.recv()
    assert results == ["v"] * 16
    assert int(rclient.get(f"{namespace}:computes") or 0) == 1


def test_redis_down_callers_keep_working(tmp_path: Path, namespace: str) -> None:
    with RedisServer() as server:
        region, memoize = service(write_conf(tmp_path, server.url))
        calls: list[str] = []

        @memoize
        def f(ns: str, name: str) -> str:
            calls.append(name)
            return name.upper()

        # The loss below is a subscribed listener's: one that never subscribed flushes nothing
        # (seen under load: Redis killed before the subscription, the old copy served after).
        # And its subscription flushes what was filled before it: fill after.
        region.backend.cache.ensure_listener()
        listener = region.backend.cache.listener
        assert listener.connected.wait(DEADLINE), "the listener never subscribed"
        assert f(namespace, "held") == "HELD"
        server.kill()
        started = time.monotonic()
        while listener.connected.is_set():  # it flushes the local tier: it cannot know what it will miss
            assert time.monotonic() - started < 10
            time.sleep(0.01)
        assert f(namespace, "held") == "HELD"  # the creator; no ConnectionError reaches the caller
        target = listener.reconnects + 2
        while listener.reconnects < target:  # failed attempts to resubscribe do not flush again
            assert time.monotonic() - started < DEADLINE, "the listener stopped trying to resubscribe"
            time.sleep(0.01)
        assert f(namespace, "held") == "HELD" and calls == ["held", "held"]  # then the local tier
        assert f(namespace, "new") == "NEW" and f(namespace, "new") == "NEW" and calls[2:] == ["new"]
        f.invalidate(namespace, "held")
        assert f(namespace, "held") == "HELD" and calls[3:] == ["held"]
        assert time.monotonic() - started < 10



class Partition:
    """A TCP forwarder to a Redis that the test can cut (existing connections closed,
    new ones refused) and heal: one service loses Redis while the others keep it."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = free_port("127.0.0.1")
        self.conns: list[socket.socket] = []
        self.server: socket.socket | None = None
        self.heal()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def heal(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(16)
        self.server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def cut(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread (close alone would not)
            server.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()
        self.conns.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            if self.server is not server:  # cut meanwhile
                client.close()
                return
            upstream = socket.create_connection(self.target)
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def test_an_invalidation_redis_missed_is_replayed(tmp_path: Path, redis_url: str, namespace: str) -> None:
    """Two services on one Redis; one is cut off from it (a partition) and invalidates.
    The delete cannot reach Redis: it is kept and replayed as soon as Redis answers, so
    the other service (whose local copy and Redis entry are the old value) drops it;
    meanwhile the invalidating service never reads the old value back."""
    partition = Partition(int(urlsplit(redis_url).port or 0))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    source = {"v": 1}
    funcs = []
    for conf in (write_conf(tmp_path / "a", partition.url), write_conf(tmp_path / "b", redis_url)):
        region, memoize = service(conf)

        @memoize
        def f(ns: str, name: str) -> int:
            return source["v"]

        funcs.append((region, f))
    (ra, fa), (rb, fb) = funcs
    try:
        assert fa(namespace, "k") == 1 and fb(namespace, "k") == 1
        assert ra.backend.cache.listener.connected.wait(5) and rb.backend.cache.listener.connected.wait(5)
        assert fa(namespace, "k") == 1 and fb(namespace, "k") == 1  # both hold it locally now (local_ttl 60 s)
        source["v"] = 2
        partition.cut()
        fa.invalidate(namespace, "k")  # the DEL does not reach Redis
        assert fa(namespace, "k") == 2, "the invalidating service read the old value back"
        assert fb(namespace, "k") == 1  # the other service cannot know yet
        partition.heal()
        deadline = time.monotonic() + 5
        while fb(namespace, "k") != 2:
            assert time.monotonic() < deadline, "the invalidation made during the partition was lost"
            time.sleep(0.02)
        assert fa(namespace, "k") == 2
    finally:
        partition.cut()
