"""The call path, written once.

:meth:`Engine.flow` is a generator that decides what to do and *yields* the
I/O it needs (a Redis operation, the user's function, a sleep); two thin drivers
perform those yields, :meth:`Engine.run` with blocking calls and
:meth:`Engine.arun` with ``await``. So sync and async functions share every
decision (freshness, locks, early refresh, stale-if-error, conditional writes)
and differ only at the I/O edge.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import inspect
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any

import tenacity

from .api import NO_VALUE, TTLPolicy
from .coherence import check_tag
from .exceptions import ConfigurationError, KeyBuildError, LockTimeout, SerializationError
from .keys import KeyBuilder, format_template, template_fields
from .resilience import as_async, as_sync
from .serializers import WRITE_ID_OFFSET, WRITE_ID_SIZE, Envelope
from .stampede import Flight, soft_deadline, xfetch_due
from .stats import Stats
from .tiers.local import LocalEntry, approx_size
from .tiers.redis import FAILED, MAX_ENTRY_TTL, Op

if TYPE_CHECKING:
    from .cache import Cache

log = logging.getLogger("mistral_cache")




class _LeaderCancelled(Exception):
    """Handed to coroutines waiting on an in-process computation whose own caller was cancelled."""


# -- what the flow asks its driver to do ----------------------------------
class _Redis:
    __slots__ = ("op", "what")

    def __init__(self, op: Op, what: str) -> None:
        self.op, self.what = op, what


class _Call:
    __slots__ = ("lock_key", "token")

    def __init__(self, lock_key: str, token: bytes | None) -> None:
        self.lock_key, self.token = lock_key, token


class _Sleep:
    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class _Background:
    """Refresh in the background; ``held`` is the value being replaced."""

    __slots__ = ("held",)

    def __init__(self, held: LocalEntry | None) -> None:
        self.held = held
Flow = Generator[Any, Any, Any]


def drive(flow: Flow, perform: Callable[[Any], Any]) -> Any:
    """Run a flow to its end, performing each yielded operation with blocking I/O."""
    send: Any = None
    error: BaseException | None = None
    while True:
        try:
            op = flow.throw(error) if error is not None else flow.send(send)
        except StopIteration as stop:
            return stop.value
        error = None
        try:
            send = perform(op)
        except BaseException as exc:
            error = exc


async def adrive(flow: Flow, perform: Callable[[Any], Awaitable[Any]]) -> Any:
    """The same, awaiting each operation."""
    send: Any = None
    error: BaseException | None = None
    while True:
        try:
            op = flow.throw(error) if error is not None else flow.send(send)
        except StopIteration as stop:
            return stop.value
        error = None
        try:
            send = await perform(op)
        except BaseException as exc:
            error = exc


def ttl_seconds(ttl: Any, value: Any, fn_name: str) -> float:
    """A TTL given as seconds, a timedelta, or a callable of the result (a strategy)."""
    if callable(ttl) and not isinstance(ttl, _dt.timedelta):
        ttl = ttl(value)
    if isinstance(ttl, _dt.timedelta):
        return ttl.total_seconds()
    if isinstance(ttl, (int, float)) and not isinstance(ttl, bool) and math.isfinite(ttl):
        return float(ttl)
    raise ConfigurationError(f"{fn_name}: ttl must be finite seconds, a timedelta or a callable returning one; got {ttl!r}")


def check_ttl(ttl: Any, fn_name: str) -> None:
    if callable(ttl) and not isinstance(ttl, _dt.timedelta):
        return
    if ttl_seconds(ttl, None, fn_name) <= 0:
        raise ConfigurationError(f"{fn_name}: ttl must be positive, got {ttl!r}")


def _write_id(raw: bytes | None) -> bytes:
    return raw[WRITE_ID_OFFSET:WRITE_ID_OFFSET + WRITE_ID_SIZE] if raw else b""


def _meta_problem(meta: Any, generations: int, tombstone: bool) -> str | None:
    """Why an envelope's meta is not one we wrote, or None: an object whose ``g`` is
    the list of ``generations`` counter values (strings) it was computed under (a
    tombstone has none). Other fields belong to TTL policies, which validate their own."""
    if not isinstance(meta, dict):
        return f"meta is a {type(meta).__name__}, not an object"
    if tombstone:
        return None
    g = meta.get("g")
    if not isinstance(g, list) or len(g) != generations or not all(isinstance(x, str) for x in g):
        return "meta has no list of generations of the expected length"
    return None


def _gens(values: Sequence[Any]) -> list[str]:
    """Counter values as strings. Latin-1 maps every byte string to a distinct str, so a
    counter someone overwrote with non-UTF-8 bytes is just another value, never an error."""
    return [v.decode("latin-1") if isinstance(v, bytes) else "0" if v is None else str(v) for v in values]


class Engine:
    """Everything one decorated function needs to answer a call."""

    def __init__(
        self,
        cache: Cache,
        fn: Callable[..., Any],
        *,
        ttl: Any,
        key: str | Callable[..., str] | None = None,
        tags: Sequence[str] = (),
        exclude: Sequence[str] = (),
        version: str | int | None = None,
        lock: bool | None = None,
        early_refresh: bool | None = None,
        stale_if_error: float | None = None,
        stale_while_revalidate: bool | None = None,
        stale_on: Callable[[BaseException], bool] | None = None,
        retry: tenacity.BaseRetrying | None = None,
        should_cache: Callable[[Any], bool] | None = None,
        local: bool = True,
    ) -> None:
        self.fn = fn
        self.name = f"{fn.__module__}.{fn.__qualname__}"
        self.is_async = inspect.iscoroutinefunction(fn)
        check_ttl(ttl, self.name)
        self.ttl = ttl
        self.keys = KeyBuilder(fn, key, exclude=exclude)
        self.prefix = f"v{version}:" if version is not None else ""
        names = set(self.keys.binder.names)
        for template in tags:
            unknown = template_fields(template) - names
            if unknown:
                raise ConfigurationError(f"{self.name}: tag {template!r} names unknown parameters {sorted(unknown)}")
        self.tag_templates = tuple(tags)
        self.cache = cache
        o = cache.options
        self.lock = o.lock if lock is None else lock
        self.early_refresh = o.early_refresh if early_refresh is None else early_refresh
        self.stale_if_error = o.stale_if_error if stale_if_error is None else stale_if_error
        self.swr = o.stale_while_revalidate if stale_while_revalidate is None else stale_while_revalidate
        self.stale_on = stale_on or (lambda exc: isinstance(exc, Exception))
        self.retry = (as_async(retry) if self.is_async else as_sync(retry)) if retry is not None else None
        self.should_cache = should_cache
        self.local = cache.local if local else None
        self.redis = cache.redis
        self.stats = Stats()
        self.policy = ttl if isinstance(ttl, TTLPolicy) else None  # a context-aware TTL (api.TTLPolicy)
        if self.policy is not None:
            self.stats = self.policy.bind(self.name, self.stats)
        cache._register(self)
        self._warned_size = False

    # -- keys ------------------------------------------------------------
    def key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        return self.prefix + self.keys.build(args, kwargs)

    def tags(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, ...]:
        if not self.tag_templates:
            return ()
        bound = self.keys.binder.bind(args, kwargs)
        tags = tuple(format_template(t, bound, self.name) for t in self.tag_templates)
        for tag in tags:
            try:
                check_tag(tag)  # invalidate_tags refuses it: an entry it could never reach is not stored
            except ConfigurationError as exc:
                raise KeyBuildError(f"{self.name}: {exc}") from None
        return tags

    # -- the local tier ---------------------------------------------------
    def _fill(self, key: str, value: Any, created_at: float, ttl: float, compute_time: float,
              tags: tuple[str, ...], since: int, size: int) -> None:
        local = self.local
        if local is None:
            return
        o = self.cache.options
        expires = created_at + ttl
        local_expires = min(expires, self.cache.timer() + o.local_ttl) if o.local_ttl else expires
        soft = min(local_expires, soft_deadline(expires, compute_time, o.beta)) if self.early_refresh else local_expires
        entry = LocalEntry(
            value, created_at=created_at, ttl=ttl, expires_at=local_expires, soft_at=soft,
            stale_until=expires + self.stale_if_error, compute_time=compute_time, tags=tags, size=size,
        )
        local.put(key, entry, since)

    def local_lookup(self, key: str) -> tuple[Any, str, LocalEntry | None]:
        """(value, mode, entry): a value to return now, or NO_VALUE and the mode of the flow to run."""
        entry = self.local.get(key) if self.local is not None else None
        if entry is None:
            return NO_VALUE, "miss", None
        now = self.cache.timer()
        if now < entry.soft_at:
            self.stats.local_hits += 1
            return entry.value, "", entry
        if now < entry.expires_at:
            expires = entry.created_at + entry.ttl
            if self.early_refresh and entry.soft_at < entry.expires_at and xfetch_due(
                now, expires, entry.compute_time, self.cache.options.beta
            ):
                return NO_VALUE, "early", entry
            self.stats.local_hits += 1
            return entry.value, "", entry
        return NO_VALUE, "miss", entry

    # -- the flow ---------------------------------------------------------
    def _decode(self, raw: bytes | None, gens: list[str], entry_key: str, key: str, tags: tuple[str, ...]) -> Envelope | None:
        """The entry, or None for a miss: absent, unreadable, a tombstone, computed
        under other generations, or older than an invalidation Redis has not yet
        acknowledged (this process must not serve what it asked to drop)."""
        if raw is None:
            return None
        try:
            env = self.cache.codec.decode(raw, key=entry_key)
            problem = _meta_problem(env.meta, len(gens), env.tombstone)
            if problem:
                raise SerializationError(problem)
        except SerializationError as exc:
            self.stats.corrupt += 1
            log.warning("%s: discarding an unreadable Redis entry: %s", self.name, exc)
            return None
        if env.tombstone or env.meta["g"] != gens:
            return None
        pending = self.cache.pending
        if pending.owed and pending.blocks(key, tags, env.created_at):
            self.stats.pending_misses += 1
            return None
        return env

    def flow(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any], mode: str, held: LocalEntry | None) -> Flow:
        """``mode``: ``miss`` (nothing fresh here), ``early`` (XFetch chose this caller
        to refresh a value it still holds) or ``refresh`` (recompute and overwrite)."""
        cache, stats, rt = self.cache, self.stats, self.redis
        o = cache.options
        background = mode == "bg"
        if background:
            mode = "early"
        started = time.perf_counter()
        since = self.local.begin() if self.local is not None else 0
        tags = self.tags(args, kwargs)
        ks = cache.keyspace
        entry_key, lock_key = ks.entry(key), ks.lock(key)
        gen_keys = [ks.generation, *(ks.tag(t) for t in tags)]
        gens: list[str] | None = None
        expected = b""
        current: Envelope | None = None  # a fresh value we may hand out while someone else refreshes
        stale: Any = NO_VALUE
        if held is not None and cache.timer() < held.stale_until:
            stale = held.value
        token: bytes | None = None
        prev: Envelope | None = None  # the latest entry seen, fresh or not: a TTL policy learns from its meta

        if rt is not None:
            cache.ensure_listener()
            locked = False
            # When the value this process held has passed its TTL, the Redis entry has
            # probably expired too: read it and take the lock in one round trip, so the
            # miss costs two. Otherwise (never seen here, or only local_ttl ran out)
            # it is probably a Redis hit, which a plain MGET serves fastest.
            read_at = cache.timer()
            if self.lock and mode == "miss" and held is not None and read_at >= held.created_at + held.ttl:
                token = os.urandom(16)
                res = yield from self._lock_call(rt.read_or_acquire(lock_key, token, int(o.lock_timeout * 1000), read_at,
                                                                    [entry_key, *gen_keys]), lock_key, token)
                if res is not FAILED:
                    locked, res = res[0] == 1, res[1:]
                if not locked:
                    token = None
            else:
                res = yield _Redis(rt.read([entry_key, *gen_keys]), "read")
            if res is not FAILED:
                raw, gens = res[0], _gens(res[1:])
                expected = _write_id(raw)
                env = prev = self._decode(raw, gens, entry_key, key, tags)
                now = max(cache.timer(), read_at)  # a clock stepping back must not undo what the script judged
                if env is not None:
                    if now < env.expires_at:
                        newer = held is None or env.created_at > held.created_at
                        if mode == "miss" and not (self.early_refresh and xfetch_due(now, env.expires_at, env.compute_time, o.beta)):
                            return self._hit(key, env, tags, since, started)
                        if mode == "early" and newer:
                            return self._hit(key, env, tags, since, started)
                        current = env
                        if mode == "miss":
                            mode = "early"
                    elif now < env.expires_at + self.stale_if_error:
                        stale = env.value
                if mode == "early" and self.swr and not background:
                    yield _Background(held if current is None else LocalEntry(
                        current.value, created_at=current.created_at, ttl=current.ttl,
                        expires_at=current.expires_at, soft_at=current.expires_at,
                        stale_until=current.expires_at + self.stale_if_error,
                    ))
                    return current.value if current is not None else held.value if held is not None else stale

                if self.lock and mode != "refresh" and not locked:
                    token = os.urandom(16)
                    acq = yield from self._lock_call(rt.acquire(lock_key, token, int(o.lock_timeout * 1000), [entry_key, *gen_keys]),
                                                     lock_key, token)
                    if acq is FAILED:
                        token = None
                    else:
                        new_gens = _gens(acq[2:])
                        if acq[1] != raw or new_gens != gens:  # unchanged bytes need no second decode
                            env = self._decode(acq[1], new_gens, entry_key, key, tags)
                            prev = env or prev
                        gens = new_gens
                        fresh = env is not None and cache.timer() < env.expires_at
                        if acq[0] == 1 and fresh and env is not None and (current is None or env.created_at > current.created_at):
                            yield from self._unlock(lock_key, token)
                            return self._hit(key, env, tags, since, started)
                        if acq[0] != 1:
                            token = None
                            if fresh and env is not None and (mode == "miss" or current is None or env.created_at > current.created_at):
                                return self._hit(key, env, tags, since, started)
                            if mode == "early":  # someone else is refreshing: keep serving
                                return current.value if current is not None else held.value if held is not None else stale
                            value, token, expected = yield from self._wait(key, entry_key, lock_key, gen_keys, tags, since, started)
                            if value is not NO_VALUE:
                                return value
                        else:
                            expected = _write_id(acq[1])

        # -- compute ------------------------------------------------------
        t0 = time.perf_counter()
        try:
            value = yield _Call(lock_key, token)
        except Exception as exc:
            stats.compute_errors += 1
            if token is not None and rt is not None:
                yield from self._unlock(lock_key, token)
            if mode == "early":  # XFetch picked this caller to refresh a value that has not expired yet
                keep = current.value if current is not None else (
                    held.value if held is not None and cache.timer() < held.expires_at else NO_VALUE)
                if keep is not NO_VALUE:
                    log.warning("%s: early refresh failed, keeping the current value: %s: %s", self.name, type(exc).__name__, exc)
                    return keep
            fallback = current.value if current is not None else stale
            if fallback is not NO_VALUE and self.stale_if_error and self.stale_on(exc):
                stats.stale_served += 1
                log.warning("%s: serving a stale value after %s: %s", self.name, type(exc).__name__, exc)
                return fallback
            raise
        except (asyncio.CancelledError, KeyboardInterrupt):
            # the caller gave up mid-computation: free the lock now, not after lock_timeout
            if token is not None and rt is not None:
                yield from self._unlock(lock_key, token)
            raise
        compute_time = time.perf_counter() - t0
        stats.computes += 1
        if mode == "early":
            stats.early_refreshes += 1
        elif mode == "miss":
            stats.misses += 1
        try:
            yield from self._store(key, value, compute_time, tags, since, gens, expected, token, mode,
                                   prev.meta if prev is not None else None)
        except BaseException:
            # should_cache, a TTL policy or the serializer raised: free the lock now, not
            # after lock_timeout (the release is token-checked, so a second one is harmless).
            if token is not None and rt is not None:
                yield from self._unlock(lock_key, token)
            raise
        stats.latency["miss"].add(time.perf_counter() - started)
        return value

    def _hit(self, key: str, env: Envelope, tags: tuple[str, ...], since: int, started: float) -> Any:
        self._fill(key, env.value, env.created_at, env.ttl, env.compute_time, tags, since, 1)
        self.stats.redis_hits += 1
        self.stats.latency["redis_hit"].add(time.perf_counter() - started)
        return env.value

    def _wait(self, key: str, entry_key: str, lock_key: str, gen_keys: list[str], tags: tuple[str, ...],
              since: int, started: float) -> Generator[Any, Any, tuple[Any, bytes | None, bytes]]:
        """Another process computes: poll the key (bounded, backing off) for its value,
        take over if its lock goes away, compute ourselves after ``lock_wait``."""
        rt, o, cache = self.redis, self.cache.options, self.cache
        assert rt is not None
        self.stats.lock_waits += 1
        deadline = time.monotonic() + o.lock_wait
        delay = 0.002
        while True:
            yield _Sleep(delay)
            delay = min(delay * 1.5, 0.05)
            res = yield _Redis(rt.read([entry_key, *gen_keys, lock_key]), "read")
            if res is FAILED:
                return NO_VALUE, None, b""
            env = self._decode(res[0], _gens(res[1:-1]), entry_key, key, tags)
            if env is not None and cache.timer() < env.expires_at:
                return self._hit(key, env, tags, since, started), None, b""
            if res[-1] is None:  # the holder finished without a value, or died and its lock expired
                token = os.urandom(16)
                acq = yield from self._lock_call(rt.acquire(lock_key, token, int(o.lock_timeout * 1000), [entry_key, *gen_keys]),
                                                 lock_key, token)
                if acq is FAILED:
                    return NO_VALUE, None, b""
                if acq[0] == 1:
                    return NO_VALUE, token, _write_id(acq[1])
            if time.monotonic() >= deadline:
                self.stats.lock_timeouts += 1
                if o.on_lock_timeout == "raise":
                    raise LockTimeout(f"{self.name}: waited {o.lock_wait}s for another caller's value", key=key, tier="redis")
                log.warning("%s: lock wait over %.1fs; computing without the lock", self.name, o.lock_wait)
                return NO_VALUE, None, b""

    def _store(self, key: str, value: Any, compute_time: float, tags: tuple[str, ...], since: int,
               gens: list[str] | None, expected: bytes, token: bytes | None, mode: str,
               prev_meta: dict[str, Any] | None = None) -> Flow:
        cache, rt = self.cache, self.redis
        cacheable = self.should_cache is None or self.should_cache(value)
        now = cache.timer()
        extra: dict[str, Any] = {}
        retain = 0.0
        if not cacheable:
            ttl = 0.0
        elif self.policy is not None:
            ttl, extra_meta, retain = self.policy.decide(value, key=key, meta=prev_meta, now=now, name=self.name)
            extra = dict(extra_meta)
        else:
            ttl = ttl_seconds(self.ttl, value, self.name)
        size = 1
        wrote = False
        if rt is not None and ttl > 0 and gens is not None:
            try:
                data = cache.codec.encode(value, created_at=now, ttl=ttl, compute_time=compute_time, meta={**extra, "g": gens},
                                          key=cache.keyspace.entry(key))
            except SerializationError as exc:
                if token is not None:
                    yield from self._unlock(cache.keyspace.lock(key), token)
                raise SerializationError(f"{self.name}: result not cacheable: {exc}", key=key, tier="redis") from exc
            except ValueError as exc:
                self.stats.rejected += 1
                if not self._warned_size:
                    self._warned_size = True
                    log.warning("%s: not caching: %s", self.name, exc)
                ttl = 0.0
            else:
                size = len(data)
                announce = (cache.keyspace.channel, cache.message("k", key)) if mode != "miss" else None
                # Bounded, so the entry expires before the counters it depends on (Keyspace).
                px = max(1, int(min(MAX_ENTRY_TTL, ttl + max(self.stale_if_error, retain)) * 1000))
                result = yield _Redis(rt.write(
                    cache.keyspace.entry(key), cache.keyspace.lock(key), data, px,
                    expected=None if mode == "refresh" else expected, token=token, announce=announce,
                ), "write")
                wrote = result == 1
        if token is not None and not wrote and rt is not None:
            yield from self._unlock(cache.keyspace.lock(key), token)
        if ttl > 0:
            if rt is None and cache.options.local_max_bytes:
                size = approx_size(value)
            self._fill(key, value, now, ttl, compute_time, tags, since, size)

    def invalidate_flow(self, key: str) -> Flow:
        self.stats.invalidations += 1
        return (yield from self.cache.key_invalidation(key))

    # -- locks whose reply was lost -------------------------------------------
    def _lock_call(self, op: Op, lock_key: str, token: bytes) -> Flow:
        """A lock request whose reply is lost may still have taken the lock on the
        server (a frozen Redis runs it when it wakes): owe a token-checked release."""
        try:
            res = yield _Redis(op, "lock")
        except BaseException:
            self.cache.owe_release(lock_key, token)
            raise
        if res is FAILED:
            self.cache.owe_release(lock_key, token)
        return res

    def _unlock(self, lock_key: str, token: bytes) -> Flow:
        assert self.redis is not None
        try:
            done = yield _Redis(self.redis.release(lock_key, token), "unlock")
        except BaseException:
            self.cache.owe_release(lock_key, token)
            raise
        if done is FAILED:
            self.cache.owe_release(lock_key, token)

    # -- drivers ------------------------------------------------------------
    def call_sync(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Everything after a failed fast local check (the wrapper does that one inline)."""
        value, mode, held = self.local_lookup(key)
        if value is not NO_VALUE:
            return value
        if mode == "early" and self.swr and held is not None:
            self.cache.background(lambda: self.run_flight(key, args, kwargs, "bg", held))
            return held.value
        return self.run_flight(key, args, kwargs, mode, held)

    def run_flight(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any], mode: str, held: LocalEntry | None) -> Any:
        if mode == "refresh":
            return self.drive(self.flow(key, args, kwargs, mode, held), args, kwargs)
        flights = self.cache.flights
        flight, leader = flights.join(key)
        if not leader:
            if mode in ("early", "bg") and held is not None:
                self.stats.local_hits += 1
                return held.value
            if flight.wait(self.cache.options.lock_wait):
                return flight.result()
            self.stats.lock_timeouts += 1
            if self.cache.options.on_lock_timeout == "raise":
                raise LockTimeout(f"{self.name}: waited {self.cache.options.lock_wait}s for this process's computation", key=key)
            flight = Flight()  # compute ourselves, outside the stuck flight
        try:
            value = self.drive(self.flow(key, args, kwargs, mode, held), args, kwargs)
        except BaseException as exc:
            flight.finish(error=exc)
            raise
        else:
            flight.finish(value)
            return value
        finally:
            flights.leave(key, flight)

    def drive(self, flow: Flow, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        def perform(op: Any) -> Any:
            if isinstance(op, _Redis):
                assert self.redis is not None
                return self.redis.run(op.op, op.what)
            if isinstance(op, _Call):
                return self._call(op, args, kwargs or {})
            if isinstance(op, _Sleep):
                return self.cache.sleep(op.seconds)
            self.cache.background(lambda: self.run_flight(self.key(args, kwargs or {}), args, kwargs or {}, "bg", op.held))
            return None

        return drive(flow, perform)

    def _call(self, op: _Call, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        keeper = self.cache.lock_keeper if op.token is not None else None
        if keeper is not None and op.token is not None:
            keeper.add(op.lock_key, op.token)
        try:
            if self.retry is not None:
                return self.retry(self.fn, *args, **kwargs)
            return self.fn(*args, **kwargs)
        finally:
            if keeper is not None and op.token is not None:
                keeper.remove(op.token)

    async def call_async(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        value, mode, held = self.local_lookup(key)
        if value is not NO_VALUE:
            return value
        if mode == "early" and self.swr and held is not None:
            self.cache.abackground(self.arun_flight(key, args, kwargs, "bg", held))
            return held.value
        return await self.arun_flight(key, args, kwargs, mode, held)

    async def arun_flight(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any], mode: str, held: LocalEntry | None) -> Any:
        if mode == "refresh":
            return await self.adrive(self.flow(key, args, kwargs, mode, held), args, kwargs)
        flights = self.cache.flights
        future, leader = flights.ajoin(key)
        if not leader:
            if mode in ("early", "bg") and held is not None:
                self.stats.local_hits += 1
                return held.value
            try:
                return await asyncio.wait_for(asyncio.shield(future), self.cache.options.lock_wait)
            except _LeaderCancelled:  # the leader's caller gave up, not us: start over (one of us leads)
                return await self.arun_flight(key, args, kwargs, mode, held)
            except asyncio.TimeoutError:
                self.stats.lock_timeouts += 1
                if self.cache.options.on_lock_timeout == "raise":
                    raise LockTimeout(f"{self.name}: waited {self.cache.options.lock_wait}s for this process's computation", key=key) from None
                future = asyncio.get_running_loop().create_future()
        try:
            value = await self.adrive(self.flow(key, args, kwargs, mode, held), args, kwargs)
        except BaseException as exc:
            if not future.done():
                # A cancelled leader must not cancel the callers waiting on it.
                future.set_exception(_LeaderCancelled() if isinstance(exc, asyncio.CancelledError) else exc)
                future.exception()  # retrieved: no "never retrieved" warning when nobody waited
            raise
        else:
            if not future.done():
                future.set_result(value)
            return value
        finally:
            flights.aleave(key, future)

    async def adrive(self, flow: Flow, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        async def perform(op: Any) -> Any:
            if isinstance(op, _Redis):
                assert self.redis is not None
                return await self.redis.arun(op.op, op.what)
            if isinstance(op, _Call):
                return await self._acall(op, args, kwargs or {})
            if isinstance(op, _Sleep):
                return await asyncio.sleep(op.seconds)
            self.cache.abackground(self.arun_flight(self.key(args, kwargs or {}), args, kwargs or {}, "bg", op.held))
            return None

        return await adrive(flow, perform)

    async def _acall(self, op: _Call, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        extender = None
        if op.token is not None and self.redis is not None:
            extender = asyncio.ensure_future(self._keep_lock(op.lock_key, op.token))
        try:
            if self.retry is not None:
                return await self.retry(self.fn, *args, **kwargs)
            return await self.fn(*args, **kwargs)
        finally:
            if extender is not None:
                extender.cancel()

    async def _keep_lock(self, lock_key: str, token: bytes) -> None:
        assert self.redis is not None
        timeout = self.cache.options.lock_timeout
        while True:
            await asyncio.sleep(timeout / 3)
            await self.redis.arun(self.redis.reacquire(lock_key, token, int(timeout * 1000)), "extend lock")
