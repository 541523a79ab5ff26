"""Issue 4: coherent local tiers, across real processes and a real Redis.

Each worker process (``spawn``, so nothing is inherited) builds its own
:class:`Cache` over the same namespace and decorates the module-level functions
below; the "upstream" they cache is a version counter in Redis (the session
server, so it survives the fault tests killing the cache's own server). A
writer bumps the counter, then invalidates; readers must see the new version
within the listener's delivery delay.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from mistral_cache import Cache, Local
from mistral_cache.testing import seconds_until

BOUND = 0.2  # documented listener delivery delay we allow (it is ~1 ms on loopback)
DEADLINE = 5.0  # give up polling after this long: a failure, not a slow pass

# -- the worker side (module level, so spawn can find it) ------------------

_upstream: redis.Redis | None = None
_ns = ""


def _version(name: str) -> int:
    assert _upstream is not None
    return int(_upstream.get(f"upstream:{_ns}:{name}") or 0)


def plain(item: str) -> int:
    return _version(f"plain:{item}")


def grouped(group: str, item: str) -> int:
    return _version(f"grouped:{group}:{item}")


def _build(cache_url: str, upstream_url: str, ns: str) -> tuple[Cache, dict[str, Any]]:
    global _upstream, _ns
    _upstream, _ns = redis.Redis.from_url(upstream_url), ns
    cache = Cache(cache_url, namespace=ns, local=Local(ttl=60))
    fns = {
        "plain": cache.cached(ttl=300, key="plain:{item}")(plain),
        "grouped": cache.cached(ttl=300, key="grouped:{group}:{item}", tags=["group:{group}"])(grouped),
    }
    return cache, fns


def _call(fn: Any, args: tuple[Any, ...]) -> tuple[int, bool]:
    """(value, was it a local hit)."""
    before = fn.stats()["local_hits"]
    value = fn(*args)
    return value, fn.stats()["local_hits"] > before


def worker(conn: Any, cache_url: str, upstream_url: str, ns: str) -> None:
    cache, fns = _build(cache_url, upstream_url, ns)
    try:
        while True:
            cmd, *rest = conn.recv()
            try:
                if cmd == "stop":
                    conn.send(("ok", None))
                    return
                if cmd == "call":
                    name, args = rest
                    conn.send(("ok", _call(fns[name], args)))
                elif cmd == "poll":  # call until the value reaches `want`; report when we saw it
                    name, args, want = rest
                    deadline = time.monotonic() + DEADLINE
                    calls = 0
                    while True:
                        value, local = _call(fns[name], args)
                        calls += 1
                        if value >= want:
                            conn.send(("ok", (time.monotonic(), value, local, calls)))
                            break
                        if not local:  # before the invalidation lands, every call must stay local
                            conn.send(("ok", (time.monotonic(), value, local, calls)))
                            break
                        if time.monotonic() > deadline:
                            conn.send(("ok", (None, value, local, calls)))
                            break
                        time.sleep(0.0002)  # let the listener thread have the GIL
                elif cmd == "update":  # bump the upstream, then invalidate: returns (t0, t1) around the invalidation
                    bumps, action, arg = rest
                    for b in bumps:
                        _upstream.incr(f"upstream:{ns}:{b}")  # type: ignore[union-attr]
                    t0 = time.monotonic()
                    if action == "invalidate":
                        name, args = arg
                        fns[name].invalidate(*args)
                    elif action == "tags":
                        cache.invalidate_tags(*arg)
                    elif action == "clear":
                        cache.clear()
                    elif action != "none":
                        raise ValueError(action)
                    conn.send(("ok", (t0, time.monotonic())))
                elif cmd == "status":
                    lst = cache.listener
                    conn.send(("ok", {
                        "connected": bool(lst and lst.connected.is_set()),
                        "reconnects": lst.reconnects if lst else 0,
                        "local_size": len(cache.local) if cache.local is not None else 0,
                        "breaker": cache.stats()["breaker"]["state"],
                    }))
                else:
                    raise ValueError(cmd)
            except Exception as exc:  # report, keep serving
                conn.send(("error", repr(exc)))
    finally:
        cache.close()


class Proc:
    """The test's handle on one worker process."""

    def __init__(self, ctx: Any, cache_url: str, upstream_url: str, ns: str) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker, args=(child, cache_url, upstream_url, ns), daemon=True)
        self.proc.start()

    def send(self, *cmd: Any) -> None:
        self.conn.send(cmd)

    def recv(self, timeout: float = DEADLINE + 10) -> Any:
        if not self.conn.poll(timeout):
            raise AssertionError("worker did not answer in time")
        status, payload = self.conn.recv()
        assert status == "ok", payload
        return payload

    def ask(self, *cmd: Any) -> Any:
        self.send(*cmd)
        return self.recv()

    def close(self) -> None:
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


@pytest.fixture
def spawn(namespace: str) -> Iterator[Any]:
    ctx = mp.get_context("spawn")
    procs: list[Proc] = []

    def start(n: int, cache_url: str, upstream_url: str) -> list[Proc]:
        new = [Proc(ctx, cache_url, upstream_url, namespace) for _ in range(n)]
        procs.extend(new)
        return new

    yield start
    for p in procs:  # stop them all at once: each waits up to a second for its listener thread
        try:
            p.send("stop")
        except Exception:
            pass
    for p in procs:
        p.close()


def _hold(readers: list[Proc], name: str, args: tuple[Any, ...], want: int) -> None:
    """Each reader computes or reads the value, then proves the next call is a local hit."""
    for r in readers:
        value, _ = r.ask("call", name, args)
        assert value == want
        # the listener's first subscription flushes the local tier (it cannot know what it missed
        # before): wait for it, then fill again
        _wait(lambda r=r: r.ask("status")["connected"], what="the listener to subscribe")
        assert r.ask("call", name, args)[0] == want
        value, local = r.ask("call", name, args)
        assert (value, local) == (want, True), "second call should be a local hit"


def _propagate(readers: list[Proc], writer: Proc, name: str, args: tuple[Any, ...], want: int,
               bumps: list[str], action: str, arg: Any) -> list[float]:
    """Readers poll (local hits) while the writer updates and invalidates; returns each reader's delay."""
    for r in readers:
        r.send("poll", name, args, want)
    time.sleep(0.05)  # the readers are spinning on local hits
    t0, t1 = writer.ask("update", bumps, action, arg)
    delays = []
    for r in readers:
        seen, value, local, calls = r.recv()
        assert seen is not None, f"reader still served {value} {DEADLINE}s after the invalidation"
        assert value == want, f"a non-local call returned {value}, wanted {want}"
        assert not local, "the first call returning the new value cannot be a local hit"
        assert calls > 1, "the readers were polling local hits before the invalidation"
        delays.append(seen - t0)
        assert seen - t1 < BOUND, f"propagation took {seen - t1:.3f}s after invalidate returned"
    return delays


# -- 1. one key, three holders, one invalidator ---------------------------

def test_invalidate_reaches_every_process(spawn: Any, redis_url: str) -> None:
    *readers, writer = spawn(4, redis_url, redis_url)
    _hold(readers, "plain", ("x",), 0)
    delays = _propagate(readers, writer, "plain", ("x",), 1, ["plain:x"], "invalidate", ("plain", ("x",)))
    # and again: coherence is not a one-shot
    _hold(readers, "plain", ("x",), 1)
    delays += _propagate(readers, writer, "plain", ("x",), 2, ["plain:x"], "invalidate", ("plain", ("x",)))
    assert writer.ask("call", "plain", ("x",))[0] == 2


# -- 2. tags and clear across processes -----------------------------------

def test_invalidate_tags_across_processes(spawn: Any, redis_url: str) -> None:
    a, b, c, writer = spawn(4, redis_url, redis_url)
    holds = {a: ("g1", "i1"), b: ("g1", "i2"), c: ("g2", "i3")}
    for p, args in holds.items():
        _hold([p], "grouped", args, 0)
    # every item changes upstream, but only group g1 is invalidated
    bumps = ["grouped:g1:i1", "grouped:g1:i2", "grouped:g2:i3"]
    delays = []
    for p in (a, b):
        p.send("poll", "grouped", holds[p], 1)
    time.sleep(0.05)
    t0, t1 = writer.ask("update", bumps, "tags", ["group:g1"])
    for p in (a, b):
        seen, value, local, _ = p.recv()
        assert seen is not None and value == 1 and not local
        delays.append(seen - t1)
    assert max(delays) < BOUND
    # g2 was not invalidated: c still serves its local value (stale by design: nobody said so)
    assert c.ask("call", "grouped", ("g2", "i3")) == (0, True)
    # an entry of g1 that c never held: c computes it fresh (the tag generation is in the key's read)
    assert c.ask("call", "grouped", ("g1", "i1"))[0] == 1


def test_clear_across_processes(spawn: Any, redis_url: str) -> None:
    a, b, c, writer = spawn(4, redis_url, redis_url)
    _hold([a], "plain", ("p",), 0)
    _hold([b], "grouped", ("g", "q"), 0)
    _hold([c], "plain", ("p",), 0)
    _hold([c], "grouped", ("g", "q"), 0)
    for p, (name, args) in ((a, ("plain", ("p",))), (b, ("grouped", ("g", "q"))), (c, ("plain", ("p",)))):
        p.send("poll", name, args, 1)
    time.sleep(0.05)
    t0, t1 = writer.ask("update", ["plain:p", "grouped:g:q"], "clear", None)
    for p in (a, b, c):
        seen, value, local, _ = p.recv()
        assert seen is not None and value == 1 and not local
        assert seen - t1 < BOUND
    assert c.ask("call", "grouped", ("g", "q")) == (1, False)
    assert c.ask("call", "grouped", ("g", "q")) == (1, True)


# -- 3. faults: the listener's connection killed; Redis restarted ---------

def _close_all(caches: list[Cache]) -> None:
    """Close at once: each close waits up to a second for its listener thread."""
    threads = [threading.Thread(target=c.close) for c in caches]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)


def _wait(pred: Any, timeout: float = DEADLINE, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_listener_connection_killed(spawn: Any, own_redis: Any, redis_url: str) -> None:
    reader, writer = spawn(2, own_redis.url, redis_url)
    _hold([reader], "plain", ("k",), 0)
    assert reader.ask("status")["connected"]
    admin = own_redis.client()
    try:
        killed = admin.client_kill_filter(_type="pubsub")
        assert killed >= 1
        _wait(lambda: reader.ask("status")["reconnects"] >= 1 and reader.ask("status")["connected"], what="reconnect")
        assert reader.ask("status")["local_size"] == 0, "local tier must be flushed: invalidations may have been missed"
        # the flush is real: the next call is not a local hit (the value still comes from Redis)
        assert reader.ask("call", "plain", ("k",)) == (0, False)
        assert reader.ask("call", "plain", ("k",)) == (0, True)
        # coherence resumed: an invalidation after the reconnect reaches it
        _propagate([reader], writer, "plain", ("k",), 1, ["plain:k"], "invalidate", ("plain", ("k",)))
    finally:
        admin.close()


def test_redis_restart(spawn: Any, own_redis: Any, redis_url: str) -> None:
    reader, writer = spawn(2, own_redis.url, redis_url)
    _hold([reader], "plain", ("r",), 0)
    writer.ask("call", "plain", ("r",))  # the writer's listener starts too
    own_redis.kill()
    _wait(lambda: not reader.ask("status")["connected"], what="the listener to notice")
    assert reader.ask("status")["local_size"] == 0
    # upstream moves while Redis is down; the invalidation cannot be delivered (fails open)
    writer.ask("update", ["plain:r"], "invalidate", ("plain", ("r",)))
    value, local = reader.ask("call", "plain", ("r",))
    assert value == 1 and not local, "a reader cut off from invalidations must not serve its old local value"
    own_redis.restart()
    _wait(lambda: reader.ask("status")["connected"], what="the listener to resubscribe")
    _wait(lambda: writer.ask("status")["connected"], what="the writer's listener to resubscribe")
    # upstream moved again while the reader may have cached 1 locally during the outage:
    # after the reconnect flush that value is gone
    writer.ask("update", ["plain:r"], "none", None)
    t_end = time.monotonic() + DEADLINE
    while reader.ask("call", "plain", ("r",))[0] != 2:  # breaker may still be open for a moment
        assert time.monotonic() < t_end, "reader kept serving a value from before the restart"
        time.sleep(0.02)
    # the breaker closing flushes the local tier (invalidations may have been missed while
    # it was open): wait for it, or that flush would pass for the next propagation
    _wait(lambda: reader.ask("status")["breaker"] == "closed", what="the reader's breaker to close")
    _hold([reader], "plain", ("r",), 2)
    _propagate([reader], writer, "plain", ("r",), 3, ["plain:r"], "invalidate", ("plain", ("r",)))


# -- 4. random interleavings: never older than the last invalidation + bound

class _Upstream:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.version = 0

    def read(self) -> int:
        with self.lock:
            v = self.version
        time.sleep(random.random() * 0.003)  # a slow upstream: updates land while we compute
        return v


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_interleavings_never_stale_beyond_bound(redis_url: str, namespace: str, seed: int) -> None:
    """Threads, each with its own Cache (own listener, own local tier: a process in miniature)."""
    rng = random.Random(seed)
    up = _Upstream()
    caches = [Cache(redis_url, namespace=namespace, local=Local(ttl=60)) for _ in range(3)]
    fns = []
    for c in caches:
        def item(group: str) -> int:
            return up.read()
        fns.append(c.cached(ttl=300, key="item:{group}", tags=["grp:{group}"])(item))
    done: list[tuple[int, float]] = [(0, 0.0)]  # (version, monotonic time its invalidation returned)
    reads: list[list[tuple[float, int]]] = [[] for _ in caches]
    stop = threading.Event()
    errors: list[BaseException] = []
    write_lock = threading.Lock()

    def reader(i: int, seed: int) -> None:
        r = random.Random(seed)
        try:
            while not stop.is_set():
                t = time.monotonic()
                reads[i].append((t, fns[i]("g")))
                time.sleep(r.random() * 0.004)
        except BaseException as exc:
            errors.append(exc)

    def writer(seed: int) -> None:
        r = random.Random(seed)
        try:
            for _ in range(40):
                time.sleep(r.random() * 0.03)
                i = r.randrange(len(caches))
                with write_lock:
                    with up.lock:
                        up.version += 1
                        v = up.version
                    how = r.choice(["key", "tags", "clear"])
                    if how == "key":
                        fns[i].invalidate("g")
                    elif how == "tags":
                        caches[i].invalidate_tags("grp:g")
                    else:
                        caches[i].clear()
                    done.append((v, time.monotonic()))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(i, rng.random())) for i in range(len(caches))]
    threads.append(threading.Thread(target=writer, args=(rng.random(),)))
    try:
        for t in threads:
            t.start()
        threads[-1].join(30)
        time.sleep(BOUND + 0.05)
        stop.set()
        for t in threads:
            t.join(10)
        assert not errors, errors
        # after everything settled, every cache converges on the last version
        final = done[-1][0]
        for f in fns:
            assert f("g") == final
        lags = []
        for i, rs in enumerate(reads):
            assert len(rs) > 20
            for t, value in rs:
                # the newest version whose invalidation completed at least BOUND before this read began
                required = max(v for v, tc in done if tc <= t - BOUND)
                assert value >= required, f"cache {i} read {value} at {t:.3f}, but version {required} was invalidated before {t - BOUND:.3f}"
                newer = [tc for v, tc in done if v > value and tc <= t]
                if newer:
                    lags.append(t - min(newer))
    finally:
        stop.set()
        _close_all(caches)


# -- a computation in flight when the invalidation lands must not be joined --

@pytest.mark.parametrize("how", ["remote-key", "remote-tags", "remote-clear", "local-tags"])
def test_no_joining_a_flight_older_than_the_invalidation(redis_url: str, namespace: str, how: str) -> None:
    """Thread t1 in cache A computes (slowly) from the old upstream; the upstream changes and is
    invalidated; a call in A that starts BOUND later must not join t1's computation and get its
    old value (single-flight must forget flights an invalidation made obsolete, in every process)."""
    up = {"v": 0}

    def slow(item: str) -> int:
        v = up["v"]
        time.sleep(3 * BOUND)
        return v

    a, b = Cache(redis_url, namespace=namespace), Cache(redis_url, namespace=namespace)
    fa = a.cached(ttl=300, key="s:{item}", tags=["s"])(slow)
    fb = b.cached(ttl=300, key="s:{item}", tags=["s"])(slow)
    try:
        a.ensure_listener()
        b.ensure_listener()
        assert a.listener is not None and b.listener is not None
        assert a.listener.connected.wait(5) and b.listener.connected.wait(5)
        first: list[int] = []
        t1 = threading.Thread(target=lambda: first.append(fa("x")))
        t1.start()
        time.sleep(BOUND / 4)  # t1 is computing with version 0
        up["v"] = 1
        if how == "remote-key":
            fb.invalidate("x")
        elif how == "remote-tags":
            b.invalidate_tags("s")
        elif how == "remote-clear":
            b.clear()
        else:
            a.invalidate_tags("s")
        time.sleep(BOUND)
        assert fa("x") == 1, "joined a computation that began before the invalidation"
        t1.join(5)
        assert first == [0]  # t1 itself began before: its old value is allowed
    finally:
        _close_all([a, b])


# -- a forked child must not serve what it inherited without a listener -------

_forked_fn: Any = None


def _forked_child(q: Any) -> None:
    time.sleep(0.3)  # the parent's invalidation happens meanwhile
    q.put(_forked_fn("x"))


def test_forked_child_does_not_serve_inherited_local_entries(redis_url: str, namespace: str) -> None:
    """A child forked after the parent filled its local tier has no listener until its first call
    that reaches Redis; an invalidation sent in between must still not leave it the old value."""
    global _forked_fn
    up = redis.Redis.from_url(redis_url)
    cache = Cache(redis_url, namespace=namespace)
    _forked_fn = cache.cached(ttl=300, key="f:{item}")(lambda item: int(up.get(f"up:{namespace}") or 0))
    try:
        _forked_fn("x")
        assert cache.listener is not None and cache.listener.connected.wait(5)
        _forked_fn("x")
        assert _forked_fn("x") == 0 and len(cache.local or ()) == 1
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        p = ctx.Process(target=_forked_child, args=(q,))
        p.start()
        time.sleep(0.05)
        up.incr(f"up:{namespace}")
        _forked_fn.invalidate("x")
        assert q.get(timeout=10) == 1
        p.join(5)
    finally:
        cache.close()
        up.close()


def test_held_generations_follow_another_process_bumps(redis_url: str, namespace: str) -> None:
    """A Redis hit reads only the entry once the counters are held (one GET); a tag
    bump announced by another cache drops them, so the next read sees the bump."""
    source = {"v": 1}
    reader = Cache(redis_url, namespace=namespace)  # a coherent local tier: counters may be held
    writer = Cache(redis_url, namespace=namespace, local=Local(coherence=False))
    fr = reader.cached(ttl=60, key="hg:{x}", tags=["grp"], local=False)(lambda x: source["v"])
    fw = writer.cached(ttl=60, key="hg:{x}", tags=["grp"])(lambda x: source["v"])
    try:
        reader.ensure_listener()
        assert seconds_until(lambda: reader.stats()["coherence"]["connected"], 2.0) is not None
        assert fr(1) == 1 and fr(1) == 1  # the second read: a Redis hit that stores the counters
        assert reader.runtime.generations.lookup([reader.keyspace.generation, reader.keyspace.tag("grp")]) is not None
        for v in range(2, 7):
            source["v"] = v
            assert writer.invalidate_tags("grp")
            assert seconds_until(lambda v=v: fr(1) == v, 2.0) is not None, f"held counters outlived the bump to version {v}"
            assert fw(1) == v
    finally:
        reader.close()
        writer.close()


@pytest.mark.parametrize("how", ["tag", "namespace"])
def test_redis_only_cache_sees_a_bump_with_no_announcement(redis_url: str, namespace: str, how: str) -> None:
    """Without a local tier nothing is held: every read fetches the counters with the
    entry, so a bump made by another process is seen by the very next read, even when
    its announcement never arrives (here: a bare INCR, announced to no one)."""
    source = {"v": 1}
    cache = Cache(redis_url, namespace=namespace, local=None)
    f = cache.cached(ttl=60, key="ro:{x}", tags=["grp"])(lambda x: source["v"])
    raw = redis.Redis.from_url(redis_url)
    try:
        for _ in range(3):
            assert f(1) == 1  # Redis hits
        assert cache.listener is None
        source["v"] = 2
        raw.incr(cache.keyspace.tag("grp") if how == "tag" else cache.keyspace.generation)
        assert f(1) == 2
    finally:
        cache.close()
        raw.close()
