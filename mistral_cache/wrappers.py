"""The shells handed back by ``@cache.cached``: one for plain functions, one for
coroutine functions, both driving the same :class:`~.engine.Engine` flow.

The local hit is inlined in both wrappers, over closure variables: it is the
path whose cost we promise (no slower than ``cachetools.cached``, which inlines
its own the same way). Everything else goes through :class:`Driver`: in-process
single-flight, then the flow, its Redis operations, the function and sleeps
performed with blocking calls or with ``await``.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from .api import NO_VALUE
from .engine import Engine, Mode
from .exceptions import LockTimeout
from .flow import Background, Flow, FnCall, RedisCall, Sleep, adrive, drive
from .stampede import Flight
from .tiers.local import LocalEntry

__all__ = ["Driver", "make_wrapper"]


class _LeaderCancelled(Exception):
    """Handed to coroutines waiting on an in-process computation whose own caller was cancelled."""


class Driver:
    """Runs an engine's flows: single-flight in this process, then the I/O."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.runtime = engine.runtime
        settings = engine.runtime.settings
        self.wait, self.on_timeout = settings.flight_wait, settings.on_flight_timeout

    def _swr(self, mode: Mode | None, held: LocalEntry | None) -> bool:
        refresh = self.engine.refresh
        return mode is Mode.EARLY and refresh is not None and refresh.background and held is not None

    def _flight_timeout(self, key: str) -> None:
        self.engine.stats.lock_timeouts += 1
        if self.on_timeout == "raise":
            raise LockTimeout(f"{self.engine.name}: waited {self.wait}s for this process's computation", key=key)

    # -- sync ---------------------------------------------------------------
    def call(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any], entry: LocalEntry | None,
             bound: dict[str, Any] | None = None) -> Any:
        """Everything after a failed fast local check (the wrapper does that one inline,
        and hands over the ``entry`` it found: the local tier is read once per call;
        and the arguments if building the key bound them, for Engine.tags)."""
        if entry is None:  # nothing held here (and always without a local tier)
            return self.run_flight(key, args, kwargs, Mode.MISS, None, bound)
        value, mode, held = self.engine.local_lookup(entry)
        if value is not NO_VALUE or mode is None:
            return value
        if self._swr(mode, held) and held is not None:
            self.runtime.background(lambda: self.run_flight(key, args, kwargs, Mode.BACKGROUND, held))
            return held.value
        return self.run_flight(key, args, kwargs, mode, held, bound)

    def run_flight(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any], mode: Mode, held: LocalEntry | None,
                   bound: dict[str, Any] | None = None) -> Any:
        engine = self.engine
        if mode is Mode.REFRESH:
            return self.drive(engine.flow(key, args, kwargs, mode, held), args, kwargs)
        flights = self.runtime.flights
        flight, leader = flights.join(key)
        if not leader:
            if mode in (Mode.EARLY, Mode.BACKGROUND) and held is not None:
                engine.stats.local_hits += 1
                return held.value
            if flight.wait(self.wait):
                return flight.result()
            self._flight_timeout(key)
            flight = Flight()  # compute ourselves, outside the stuck flight
        try:
            value = self._lead(key, args, kwargs, mode, held, bound)
        except BaseException as exc:
            flight.finish(error=exc)
            raise
        else:
            flight.finish(value)
            return value
        finally:
            flights.leave(key, flight)

    def _lead(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any], mode: Mode, held: LocalEntry | None,
              bound: dict[str, Any] | None = None) -> Any:
        """The flight's leader: the flow's first read done here, so a Redis hit pays for
        no generator machinery; on anything but a clean hit, the flow (handed that
        read: no second round trip)."""
        engine = self.engine
        a = None
        if engine.reads_first(mode):
            redis = engine.redis
            assert redis is not None
            a = engine.attempt(key, args, kwargs, mode, held, bound)
            self.runtime.ensure_listener()
            op = engine.first_read(a)
            try:
                res = redis.run(op, "read")
            except BaseException:
                engine.read_lost(a)
                raise
            value = engine.pre_read(a, res)
            if value is not NO_VALUE:
                return value
        return self.drive(engine.flow(key, args, kwargs, mode, held, a, bound), args, kwargs)

    def drive(self, flow: Flow, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        engine, runtime, kw = self.engine, self.runtime, kwargs or {}

        def perform(op: Any) -> Any:
            if isinstance(op, RedisCall):
                assert engine.redis is not None
                return engine.redis.run(op.op, op.what)
            if isinstance(op, FnCall):
                return self._call(op, args, kw)
            if isinstance(op, Sleep):
                return runtime.sleep(op.seconds)
            assert isinstance(op, Background)
            runtime.background(lambda: self.run_flight(engine.key(args, kw), args, kw, Mode.BACKGROUND, op.held))
            return None

        return drive(flow, perform)

    def _call(self, op: FnCall, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        engine = self.engine
        keeper = None
        if op.token is not None and engine.lock is not None:
            keeper = self.runtime.lock_keeper(engine.lock.timeout)
            keeper.add(op.lock_key, op.token)
        try:
            if engine.retry is not None:
                return engine.retry(engine.fn, *args, **kwargs)
            return engine.fn(*args, **kwargs)
        finally:
            if keeper is not None and op.token is not None:
                keeper.remove(op.token)

    # -- async --------------------------------------------------------------
    async def acall(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any], entry: LocalEntry | None,
                    bound: dict[str, Any] | None = None) -> Any:
        if entry is None:
            return await self.arun_flight(key, args, kwargs, Mode.MISS, None, bound)
        value, mode, held = self.engine.local_lookup(entry)
        if value is not NO_VALUE or mode is None:
            return value
        if self._swr(mode, held) and held is not None:
            self.runtime.abackground(self.arun_flight(key, args, kwargs, Mode.BACKGROUND, held))
            return held.value
        return await self.arun_flight(key, args, kwargs, mode, held, bound)

    async def arun_flight(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any], mode: Mode, held: LocalEntry | None,
                          bound: dict[str, Any] | None = None) -> Any:
        engine = self.engine
        if mode is Mode.REFRESH:
            return await self.adrive(engine.flow(key, args, kwargs, mode, held), args, kwargs)
        flights = self.runtime.flights
        future, leader = flights.ajoin(key)
        if not leader:
            if mode in (Mode.EARLY, Mode.BACKGROUND) and held is not None:
                engine.stats.local_hits += 1
                return held.value
            try:
                return await asyncio.wait_for(asyncio.shield(future), self.wait)
            except _LeaderCancelled:  # the leader's caller gave up, not us: start over (one of us leads)
                return await self.arun_flight(key, args, kwargs, mode, held, bound)
            except asyncio.TimeoutError:
                self._flight_timeout(key)
                future = asyncio.get_running_loop().create_future()
        try:
            value = await self._alead(key, args, kwargs, mode, held, bound)
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

    async def _alead(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any], mode: Mode, held: LocalEntry | None,
                     bound: dict[str, Any] | None = None) -> Any:
        engine = self.engine
        a = None
        if engine.reads_first(mode):  # as in _lead
            redis = engine.redis
            assert redis is not None
            a = engine.attempt(key, args, kwargs, mode, held, bound)
            self.runtime.ensure_listener()
            op = engine.first_read(a)
            try:
                res = await redis.arun(op, "read")
            except BaseException:
                engine.read_lost(a)
                raise
            value = engine.pre_read(a, res)
            if value is not NO_VALUE:
                return value
        return await self.adrive(engine.flow(key, args, kwargs, mode, held, a, bound), args, kwargs)

    async def adrive(self, flow: Flow, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        engine, runtime, kw = self.engine, self.runtime, kwargs or {}

        async def perform(op: Any) -> Any:
            if isinstance(op, RedisCall):
                assert engine.redis is not None
                return await engine.redis.arun(op.op, op.what)
            if isinstance(op, FnCall):
                return await self._acall(op, args, kw)
            if isinstance(op, Sleep):
                return await asyncio.sleep(op.seconds)
            assert isinstance(op, Background)
            runtime.abackground(self.arun_flight(engine.key(args, kw), args, kw, Mode.BACKGROUND, op.held))
            return None

        return await adrive(flow, perform)

    async def _acall(self, op: FnCall, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        engine = self.engine
        extender = None
        if op.token is not None and engine.redis is not None and engine.lock is not None:
            extender = asyncio.ensure_future(self._keep_lock(op.lock_key, op.token, engine.lock.timeout))
        try:
            if engine.retry is not None:
                return await engine.retry(engine.fn, *args, **kwargs)
            return await engine.fn(*args, **kwargs)
        finally:
            if extender is not None:
                extender.cancel()

    async def _keep_lock(self, lock_key: str, token: bytes, timeout: float) -> None:
        redis = self.engine.redis
        assert redis is not None
        while True:
            await asyncio.sleep(timeout / 3)
            await redis.arun(redis.reacquire(lock_key, token, int(timeout * 1000)), "extend lock")


def make_wrapper(engine: Engine) -> Any:
    """The wrapper, with ``invalidate``, ``refresh``, ``stats``, ``cache_key`` and ``cache_name``.

    The local hit is inlined: the key, one dict lookup, the LRU touch, one clock
    read and a counter (see :meth:`.LocalTier.hit_path`); the entry found is handed
    on, so a miss reads the local tier only once. Whether there is a version prefix
    or a local tier is decided here, once, not on every call."""
    fn, key, runtime = engine.fn, engine.key, engine.runtime
    driver = Driver(engine)
    build, prefix, local, timer, stats = engine.keys.build, engine.prefix, engine.local, runtime.timer, engine.stats
    key_of = build if not prefix else (lambda args, kwargs: prefix + build(args, kwargs))
    find, touch = local.hit_path() if local is not None else (None, None)
    # With tag templates, a key built by binding the arguments hands them on, so a
    # miss does not bind them again for the tags (Engine.tags).
    keys = engine.keys
    tagged = bool(engine.tag_templates) and keys.uses_bound
    bind, from_bound, fast = keys.binder.bind, keys.from_bound, keys.fast_arity

    def key_bound(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        if not kwargs and len(args) == fast:
            return key_of(args, kwargs), None
        bound = bind(args, kwargs)
        return prefix + from_bound(bound), bound

    if engine.is_async:
        call_async = driver.acall

        if tagged and (find is None or touch is None):

            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                k, bound = key_bound(args, kwargs)
                return await call_async(k, args, kwargs, None, bound)
        elif tagged and find is not None and touch is not None:

            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                if kwargs or len(args) != fast:
                    bound = bind(args, kwargs)
                    k = prefix + from_bound(bound)
                else:
                    k, bound = key_of(args, kwargs), None
                entry = find(k)
                if entry is not None:
                    try:
                        touch(k)
                    except KeyError:  # as below
                        pass
                    if timer() < entry.soft_at:
                        stats.local_hits += 1
                        return entry.value
                return await call_async(k, args, kwargs, entry, bound)
        elif find is None or touch is None:

            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                return await call_async(key_of(args, kwargs), args, kwargs, None)
        else:

            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                k = key_of(args, kwargs)
                entry = find(k)
                if entry is not None:
                    try:
                        touch(k)
                    except KeyError:  # removed since: the entry read is still what a locked read returned
                        pass
                    if timer() < entry.soft_at:
                        stats.local_hits += 1
                        return entry.value
                return await call_async(k, args, kwargs, entry)

        async def invalidate(*args: Any, **kwargs: Any) -> bool:
            return bool(await runtime.adrive(engine.invalidate_flow(key(args, kwargs))))

        async def refresh(*args: Any, **kwargs: Any) -> Any:
            return await driver.arun_flight(key(args, kwargs), args, kwargs, Mode.REFRESH, None)

        wrapper_any: Any = functools.wraps(fn)(wrapper)
    else:
        call_sync = driver.call

        if tagged and (find is None or touch is None):

            def swrapper(*args: Any, **kwargs: Any) -> Any:
                k, bound = key_bound(args, kwargs)
                return call_sync(k, args, kwargs, None, bound)
        elif tagged and find is not None and touch is not None:

            def swrapper(*args: Any, **kwargs: Any) -> Any:
                if kwargs or len(args) != fast:
                    bound = bind(args, kwargs)
                    k = prefix + from_bound(bound)
                else:
                    k, bound = key_of(args, kwargs), None
                entry = find(k)
                if entry is not None:
                    try:
                        touch(k)
                    except KeyError:  # as in the async wrapper
                        pass
                    if timer() < entry.soft_at:
                        stats.local_hits += 1
                        return entry.value
                return call_sync(k, args, kwargs, entry, bound)
        elif find is None or touch is None:

            def swrapper(*args: Any, **kwargs: Any) -> Any:
                return call_sync(key_of(args, kwargs), args, kwargs, None)
        else:

            def swrapper(*args: Any, **kwargs: Any) -> Any:
                k = key_of(args, kwargs)
                entry = find(k)
                if entry is not None:
                    try:
                        touch(k)
                    except KeyError:  # as in the async wrapper
                        pass
                    if timer() < entry.soft_at:
                        stats.local_hits += 1
                        return entry.value
                return call_sync(k, args, kwargs, entry)

        def invalidate(*args: Any, **kwargs: Any) -> bool:  # type: ignore[misc]
            return bool(runtime.drive(engine.invalidate_flow(key(args, kwargs))))

        def refresh(*args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
            return driver.run_flight(key(args, kwargs), args, kwargs, Mode.REFRESH, None)

        wrapper_any = functools.wraps(fn)(swrapper)

    wrapper_any.invalidate = invalidate
    wrapper_any.refresh = refresh
    wrapper_any.stats = lambda: engine.stats.snapshot()  # the policy may have swapped the counters at bind
    wrapper_any.cache_key = lambda *args, **kwargs: key(args, kwargs)
    wrapper_any.cache_name = engine.name
    return wrapper_any
