"""The Redis tier: the few commands the cache needs, each built once as an *operation* that runs on either
client.

An operation is a function of a redis-py client. redis-py's sync and asyncio
clients share method names, so ``op(client)`` returns the result on the first
and an awaitable on the second; :meth:`RedisTier.run` and :meth:`RedisTier.arun`
are the only two places that differ, and both go through the same retry policy
and circuit breaker.

(Over the 400-line aim on purpose: every command the cache sends is here, next to
the replay gate that must run before each of them; split, the gate's guarantee
would have to be re-checked in every module that sends one.)
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

import redis.exceptions as rex
import tenacity
from redis.lock import Lock

from ...exceptions import ConfigurationError, TierUnavailable
from ...pending import Owed, Pending
from ...resilience import CircuitBreaker, as_async, as_sync, default_redis_retry
from .connect import (
    CLUSTER_SCHEMES,
    SENTINEL_SCHEMES,
    async_client_from_url,
    client_kind,
    client_options,
    is_async,
    is_cluster,
    sync_client_from_url,
    topology,
)
from .direct import KeptConnections, plain
from .keyspace import COUNTER_TTL
from .scripts import ACQUIRE_LUA, BUMP_LUA, READ_OR_ACQUIRE_LUA, WRITE_LUA, counter_start, evalsha, sha1

__all__ = ["FAILED", "Op", "RedisTier", "sequence"]

log = logging.getLogger("mistral_cache.redis")


class _Failed:
    def __repr__(self) -> str:
        return "FAILED"

    def __bool__(self) -> bool:
        return False


#: Returned by run/arun when Redis failed or the breaker is open (fail open).
FAILED: Final = _Failed()

Op = Callable[[Any], Any]

def _in_order(steps: Sequence[Callable[[], Any]]) -> Any:
    """Call ``steps`` one after another (awaiting each on an asyncio client): their results."""
    out: list[Any] = []

    def step(i: int) -> Any:
        if i == len(steps):
            return out

        def then(result: Any) -> Any:
            out.append(result)
            return step(i + 1)

        return _then(steps[i](), then)

    return step(0)


def _cluster_mget(c: Any, keys: Sequence[str]) -> list[Any]:
    """``mget_nonatomic`` without its per-call pipeline machinery: one MGET per
    slot, written to every node involved before any reply is read (one round
    trip). Anything unusual (a redirect, a node error, an unmapped slot) falls
    back to redis-py's ``mget_nonatomic``, which follows redirects and refreshes
    the slot map."""
    groups: dict[str, tuple[Any, list[list[int]]]] = {}
    try:
        by_slot: dict[int, list[int]] = {}
        for i, k in enumerate(keys):
            by_slot.setdefault(c.keyslot(k), []).append(i)
        for slot, idx in by_slot.items():
            node = c.nodes_manager.get_node_from_slot(slot)
            entry = groups.get(node.name)
            if entry is None:
                groups[node.name] = (node, [idx])
            else:
                entry[1].append(idx)
    except (rex.RedisError, LookupError):
        return list(c.mget_nonatomic(keys))
    taken: list[tuple[Any, Any]] = []
    out: list[Any] = [None] * len(keys)
    try:
        for node, idxs in groups.values():
            pool = (node.redis_connection or c.get_redis_connection(node)).connection_pool
            conn = pool.get_connection()
            taken.append((pool, conn))
            conn.send_packed_command(conn.pack_commands([("MGET", *(keys[i] for i in idx)) for idx in idxs]))
        for (_pool, conn), (_node, idxs) in zip(taken, groups.values()):
            for idx in idxs:
                reply = conn.read_response()
                for i, value in zip(idx, reply):
                    out[i] = value
    except (rex.RedisError, OSError):
        for _pool, conn in taken:
            conn.disconnect()  # unread replies may be pending
        for pool, conn in taken:
            pool.release(conn)
        taken = []
        return list(c.mget_nonatomic(keys))
    finally:
        for pool, conn in taken:
            pool.release(conn)
    return out


def _then(first: Any, then: Callable[[Any], Any]) -> Any:
    """``then(first)`` for a sync result; a coroutine for an awaitable one."""
    if not inspect.isawaitable(first):
        return then(first)

    async def chain() -> Any:
        out = then(await first)
        return await out if inspect.isawaitable(out) else out

    return chain()


def sequence(ops: Sequence[Op]) -> Op:
    """One operation running ``ops`` in order, on either client: a replay of what is owed."""

    def op(c: Any) -> Any:
        if not is_async(c):
            return [o(c) for o in ops]

        async def run() -> list[Any]:
            out = []
            for o in ops:
                r = o(c)
                out.append(await r if inspect.isawaitable(r) else r)
            return out

        return run()

    return op


def _replay(first: BaseException, op: Op) -> Op:
    """``op`` for a retry policy whose first attempt already happened and raised ``first``."""
    pending = [first]

    def again(client: Any) -> Any:
        if pending:
            raise pending.pop()
        return op(client)

    return again


def _areplay(first: BaseException, op: Callable[[Any], Any]) -> Callable[[Any], Any]:
    pending = [first]

    async def again(client: Any) -> Any:
        if pending:
            raise pending.pop()
        return await op(client)

    return again


_SHAS: dict[str, str] = {}  # script source -> its id


class RedisTier:
    """Fail-open access to one Redis deployment, shared by every wrapper of a Cache."""

    name = "redis"

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Any = None,
        async_client: Any = None,
        breaker: CircuitBreaker | None = None,
        retry: tenacity.BaseRetrying | None = None,
        socket_timeout: float = 0.25,
        connect_timeout: float = 0.25,
        strict: bool = False,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        if url is None and client is None and async_client is None:
            raise ConfigurationError("RedisTier needs a URL or a client")
        self.url = url
        self._options = client_options(socket_timeout, connect_timeout)
        self._client = client
        self._given_async = async_client
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._pid = os.getpid()
        self.breaker = breaker or CircuitBreaker()
        policy = retry or default_redis_retry()
        self._retry = as_sync(policy)
        self._aretry = as_async(policy)
        self.strict = strict
        self._on_error = on_error
        self._scripts: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
        #: Scripts run on this tier's Redis already (EVALSHA from then on; see :meth:`eval`).
        self._loaded: set[str] = set()
        #: Pool connections kept between hits (:mod:`.direct`).
        self.kept = KeptConnections()
        self._pending: Pending | None = None
        self._settle_op: Callable[[Owed], Op] = lambda owed: sequence(())

    def owe(self, pending: Pending, settle: Callable[[Owed], Op]) -> None:
        """Before every command, send ``settle(owed)`` for what ``pending`` records, and
        send nothing else until Redis acknowledged it: a replayed invalidation must
        land before this process reads or writes anything it covers."""
        self._pending, self._settle_op = pending, settle

    @property
    def can_probe(self) -> bool:
        """A background probe needs a sync client (a URL or one given)."""
        return self.url is not None or self._client is not None

    # -- clients ---------------------------------------------------------
    @functools.cached_property
    def topology(self) -> str:
        """``cluster``, ``sentinel`` or ``standalone``, without opening a connection."""
        given = self._client if self._client is not None else self._given_async
        if given is not None:
            return topology(given)
        scheme = urlsplit(self.url or "").scheme
        return "cluster" if scheme in CLUSTER_SCHEMES else "sentinel" if scheme in SENTINEL_SCHEMES else "standalone"

    def client(self) -> Any:
        """The sync client, created on first use (and again in a forked child)."""
        if self._client is None or (self.url is not None and self._pid != os.getpid()):
            if self.url is None:
                raise ConfigurationError("this cache was given only an asyncio Redis client; call it from async code")
            self._client = sync_client_from_url(self.url, **self._options)
            self._pid = os.getpid()
        return self._client

    def async_client(self) -> Any:
        """One asyncio client per event loop: redis-py's async connections belong to the loop that made them."""
        if self._given_async is not None:
            return self._given_async
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            if self.url is None:
                raise ConfigurationError(
                    "this cache was given only a sync Redis client; pass async_redis= or a URL for async code"
                )
            client = async_client_from_url(self.url, **self._options)
            self._async_clients[loop] = client
        return client

    def script(self, client: Any, source: str) -> Any:
        per_client = self._scripts.get(client)
        if per_client is None:
            per_client = self._scripts[client] = {}
        script = per_client.get(source)
        if script is None:
            script = per_client[source] = client.register_script(source)
        return script

    def eval(self, client: Any, source: str, keys: list[str], args: list[Any]) -> Any:
        """Run one of our scripts in one round trip (:func:`.scripts.evalsha`): whole the
        first time this tier runs it, by id after that."""
        sha = _SHAS.get(source)
        if sha is None:
            sha = _SHAS[source] = sha1(source)
        return evalsha(client, sha, source, keys, args, self._loaded)

    # -- running operations ---------------------------------------------
    def _failed(self, exc: BaseException, what: str) -> Any:
        self.breaker.failure()
        log.warning("redis %s failed: %s: %s", what, type(exc).__name__, exc)
        if self._on_error is not None:
            self._on_error(exc)
        if self.strict:
            raise TierUnavailable(f"redis {what} failed: {exc}", tier="redis") from exc
        return FAILED

    def _closed(self) -> Any:
        if self.strict:
            raise TierUnavailable("redis circuit breaker is open", tier="redis")
        return FAILED

    def _settle(self, client: Any) -> None:
        pending = self._pending
        owed = pending.snapshot() if pending is not None else None
        if owed is not None and pending is not None:
            self._retry(self._settle_op(owed), client)
            pending.settle(owed)

    async def _asettle(self, client: Any) -> None:
        pending = self._pending
        owed = pending.snapshot() if pending is not None else None
        if owed is not None and pending is not None:
            op = self._settle_op(owed)

            async def attempt(c: Any) -> Any:
                result = op(c)
                return await result if inspect.isawaitable(result) else result

            await self._aretry(attempt, client)
            pending.settle(owed)

    def probe(self) -> bool:
        """PING past the breaker and settle what is owed; close the breaker if both
        succeed. A background thread calls this while Redis is sick, so recovery
        follows Redis answering, not the breaker's reset timer."""
        try:
            client = self.client()
            client.ping()
            self._settle(client)
        except (rex.RedisError, OSError, ConfigurationError):
            return False
        self.breaker.success()
        return True

    def run(self, op: Op, what: str = "command") -> Any:
        if not self.breaker.allow():
            return self._closed()
        pending = self._pending
        try:
            client = self.client()
            if pending is not None and pending.owed:
                self._settle(client)
            try:
                result = op(client)  # the common case, without tenacity's per-call bookkeeping
            except (rex.RedisError, OSError) as first:
                result = self._retry(_replay(first, op), client)  # the policy sees `first` as attempt 1
        except (rex.RedisError, OSError) as exc:
            return self._failed(exc, what)
        self.breaker.success()
        return result

    async def arun(self, op: Op, what: str = "command") -> Any:
        if not self.breaker.allow():
            return self._closed()
        pending = self._pending

        async def attempt(c: Any) -> Any:
            result = op(c)
            return await result if inspect.isawaitable(result) else result

        try:
            client = self.async_client()
            if pending is not None and pending.owed:
                await self._asettle(client)
            try:
                result: Any = await attempt(client)
            except (rex.RedisError, OSError) as first:
                result = await self._aretry(_areplay(first, attempt), client)
        except (rex.RedisError, OSError) as exc:
            return self._failed(exc, what)
        self.breaker.success()
        return result

    # -- operations ------------------------------------------------------
    def read(self, keys: Sequence[str]) -> Op:
        """One round trip: the entry, the generations it depends on, the lock.

        On a cluster the entry and its lock share a slot and the generations
        live elsewhere: redis-py's ``mget_nonatomic`` sends one MGET per slot,
        pipelined per node."""

        def op(c: Any) -> Any:
            if plain(c):
                return self.kept.run(c, "MGET", *keys)
            sync_cluster, cluster, _ = client_kind(c)
            if sync_cluster:
                return _cluster_mget(c, keys)
            return c.mget_nonatomic(keys) if cluster else c.mget(keys)

        return op

    def get(self, key: str) -> Op:
        """One entry, nothing else: the Redis hit when the generations are held locally."""
        return lambda c: self.kept.run(c, "GET", key) if plain(c) else c.get(key)

    def read_or_acquire(self, lock_key: str, token: bytes, timeout_ms: int, now: float, keys: Sequence[str]) -> Op:
        """:meth:`read`, taking the lock in the same round trip when the entry is
        absent or expired at ``now``: ``[got, entry, *generations]``. On a cluster
        (the generations live in other slots) it is a plain read with ``got`` 0."""

        def op(c: Any) -> Any:
            if is_cluster(c):
                return _then(self.read(keys)(c), lambda res: [0, *res])
            return self.eval(c, READ_OR_ACQUIRE_LUA, [lock_key, *keys], [token, timeout_ms, repr(float(now))])

        return op

    def acquire(self, lock_key: str, token: bytes, timeout_ms: int, keys: Sequence[str]) -> Op:
        """Take the lock and re-read ``keys`` (the entry first, then generations):
        ``[got, entry, *generations]``. On a cluster the script touches only the
        lock and the entry (one slot); the generations are read right after it."""

        def op(c: Any) -> Any:
            if not is_cluster(c):
                return self.eval(c, ACQUIRE_LUA, [lock_key, *keys], [token, timeout_ms])
            got = self.eval(c, ACQUIRE_LUA, [lock_key, keys[0]], [token, timeout_ms])
            # redis-py refuses EVAL in a cluster pipeline: the generations follow in a second round trip
            # (read after the lock is taken: the newest a computation can depend on).
            return _then(got, lambda g: _then(c.mget_nonatomic(keys[1:]) if len(keys) > 1 else [], lambda gens: [*g, *gens]))

        return op

    def write(
        self,
        entry_key: str,
        lock_key: str,
        data: bytes,
        px: int,
        *,
        expected: bytes | None,
        token: bytes | None,
        announce: tuple[str, str] | None,
    ) -> Op:
        """Conditional (``expected`` write id) or forced (``expected=None``) write,
        lock release and announcement in one round trip. Returns 1 if written."""
        channel, message = announce or ("", "")
        args = [expected or b"", data, px, token or b"", channel, message, "1" if expected is None else "0"]
        return lambda c: self.eval(c, WRITE_LUA, [entry_key, lock_key], args)

    @staticmethod
    def put_and_announce(entry_key: str, data: bytes, px: int, channel: str, message: str, wait_ms: int = 0) -> Op:
        """SET and PUBLISH in one round trip; with ``wait_ms``, a Redis WAIT for one
        replica last in the same pipeline (WAIT only covers its own connection's
        writes). The last element of the result is then the replicas that acked."""

        def op(c: Any) -> Any:
            if is_cluster(c):
                return _then(c.set(entry_key, data, px=px), lambda _: c.publish(channel, message))
            pipe = c.pipeline(transaction=False)
            pipe.set(entry_key, data, px=px)
            pipe.publish(channel, message)
            if wait_ms:
                pipe.wait(1, wait_ms)
            return pipe.execute()

        return op

    @staticmethod
    def bump_and_announce(counters: Sequence[str], channel: str, message: str, wait_ms: int = 0) -> Op:
        """Bump the counters (:data:`BUMP_LUA`) and PUBLISH; ``wait_ms`` as in
        :meth:`put_and_announce`. Returns the counters' new values, then PUBLISH's
        (and WAIT's) replies."""

        def op(c: Any) -> Any:
            ttl_ms = int(COUNTER_TTL * 1000)
            starts = [counter_start() for _ in counters]
            if is_cluster(c):  # one slot per counter, and no EVAL or PUBLISH in a cluster pipeline
                steps = [functools.partial(c.eval, BUMP_LUA, 1, k, ttl_ms, s) for k, s in zip(counters, starts)]
                return _then(_in_order(steps), lambda res: _then(
                    c.publish(channel, message), lambda n: [*(v for r in res for v in r), n]))
            pipe = c.pipeline(transaction=False)
            if counters:
                pipe.eval(BUMP_LUA, len(counters), *counters, ttl_ms, *starts)
            pipe.publish(channel, message)
            if wait_ms:
                pipe.wait(1, wait_ms)
            return _then(pipe.execute(), lambda res: [*res[0], *res[1:]] if counters else res)

        return op

    def release(self, lock_key: str, token: bytes) -> Op:
        """Token-checked release, with redis-py's own Lock script (0 if the lock was lost)."""
        return lambda c: self.eval(c, Lock.LUA_RELEASE_SCRIPT, [lock_key], [token])

    def reacquire(self, lock_key: str, token: bytes, timeout_ms: int) -> Op:
        """Reset a held lock's expiry (redis-py's Lock script); 0 if it was lost meanwhile."""
        return lambda c: self.eval(c, Lock.LUA_REACQUIRE_SCRIPT, [lock_key], [token, timeout_ms])
