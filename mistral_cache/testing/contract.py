"""The contract every topology keeps, as one generic suite.

After dogpile.cache's ``_GenericBackendTestSuite`` (``dogpile/testing/fixtures.py``):
the tests live on a base class, :class:`CacheContract`, and a test module
subclasses it once per topology, giving it a ``make_cache`` fixture (the one
abstract part) and saying whether the topology has a Redis tier::

    from mistral_cache.testing.contract import CacheContract, cache_factory

    class TestRedisOnly(CacheContract):
        has_redis = True

        @pytest.fixture
        def make_cache(self, redis_url, namespace):
            with cache_factory(redis_url=redis_url, local=None, namespace=namespace) as make:
                yield make

The project's own suite runs it over local, redis, both (``tests/test_contract.py``),
Redis Cluster with and without a local tier (``tests/test_cluster.py``) and
Sentinel with and without one (``tests/test_sentinel.py``).

Every test that calls a cached function runs twice, ``[sync]`` and ``[async]``:
the same body, with the function defined as a plain ``def`` or as an
``async def`` driven on an event loop of the test's own (:class:`Flavour`).
The suite uses only the public API. It needs pytest, which the package does not
depend on: import it from tests only.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest

from .. import Cache, Clock, KeyBuildError, SerializationError, Timeouts

__all__ = ["CacheContract", "CacheFactory", "Cached", "Flavour", "ManualClock", "cache_factory"]

#: ``make(**options) -> Cache``: a topology's caches, with the test's own options on top.
CacheFactory = Callable[..., Cache]


@contextlib.contextmanager
def cache_factory(**defaults: Any) -> Iterator[CacheFactory]:
    """Yield ``make(**options)``, a :class:`Cache` built from ``defaults`` updated
    with ``options``; every cache it made is closed on exit.

    Early refresh is off unless a default or the test says otherwise: the
    contract counts computations exactly, and an early refresh is one more. For the
    same reason Redis gets 2 s timeouts: on a loaded machine a 0.25 s one fails open
    into a recomputation, correct but not what these tests count.
    """
    made: list[Cache] = []

    def make(**options: Any) -> Cache:
        kw = {"refresh": None, "timeouts": Timeouts(socket=2.0, connect=2.0), **defaults, **options}
        cache = Cache(**kw)
        made.append(cache)
        return cache

    try:
        yield make
    finally:
        for cache in made:
            cache.close()


class ManualClock:
    """An injectable clock (``Cache(clock=Clock(time=...))``) that moves only when told: ``clock.now += 5``."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Flavour:
    """Sync or async: how a contract test defines its cached functions and calls them.

    ``flavour.cached(cache, ttl=...)`` decorates a plain function. In the async
    flavour it is first wrapped in an ``async def`` of the same signature, so
    the cache takes its coroutine path, and every call, ``invalidate`` and
    ``refresh`` runs to completion on this flavour's event loop: the test body
    reads the same in both.
    """

    def __init__(self, name: str) -> None:
        if name not in ("sync", "async"):
            raise ValueError(f"flavour is 'sync' or 'async', not {name!r}")
        self.name = name
        self.is_async = name == "async"
        self._loop: asyncio.AbstractEventLoop | None = asyncio.new_event_loop() if self.is_async else None

    def __repr__(self) -> str:
        return f"<Flavour {self.name}>"

    def cached(self, cache: Cache, ttl: Any, key: Any = None, **options: Any) -> Callable[[Callable[..., Any]], Cached]:
        """``cache.cached(ttl, key, **options)`` on ``fn`` (or on its ``async def`` twin)."""

        def decorate(fn: Callable[..., Any]) -> Cached:
            target: Callable[..., Any] = fn
            if self.is_async:

                @functools.wraps(fn)
                async def twin(*args: Any, **kwargs: Any) -> Any:
                    return fn(*args, **kwargs)

                target = twin
            return Cached(cache.cached(ttl, key, **options)(target), self)

        return decorate

    def run(self, result: Any) -> Any:
        """The value of ``result``: awaited on this flavour's loop when it is awaitable."""
        if self._loop is not None and inspect.isawaitable(result):
            return self._loop.run_until_complete(_awaited(result))
        return result

    def invalidate_tags(self, cache: Cache, *tags: str) -> bool:
        """``cache.invalidate_tags`` (sync) or ``cache.ainvalidate_tags`` (async)."""
        return bool(self.run(cache.ainvalidate_tags(*tags)) if self.is_async else cache.invalidate_tags(*tags))

    def clear(self, cache: Cache) -> bool:
        """``cache.clear`` (sync) or ``cache.aclear`` (async)."""
        return bool(self.run(cache.aclear()) if self.is_async else cache.clear())

    def close(self) -> None:
        """Cancel what is still running on the loop (background refreshes) and close it."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


class Cached:
    """A cached function as a contract test sees it, in either flavour: calling it,
    ``invalidate`` and ``refresh`` give values, never awaitables. A descriptor, so
    it decorates methods too."""

    def __init__(self, fn: Any, flavour: Flavour, bound: tuple[Any, ...] = ()) -> None:
        self.fn = fn
        self.flavour = flavour
        self._bound = bound

    def __get__(self, obj: Any, objtype: type | None = None) -> Cached:
        return self if obj is None else Cached(self.fn, self.flavour, (obj,))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.flavour.run(self.fn(*self._bound, *args, **kwargs))

    def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        return bool(self.flavour.run(self.fn.invalidate(*self._bound, *args, **kwargs)))

    def refresh(self, *args: Any, **kwargs: Any) -> Any:
        return self.flavour.run(self.fn.refresh(*self._bound, *args, **kwargs))

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.fn.stats()
        return stats

    def cache_key(self, *args: Any, **kwargs: Any) -> str:
        return str(self.fn.cache_key(*self._bound, *args, **kwargs))


class CacheContract:
    """The tests every topology passes. Subclass it (as ``Test...``) and define
    the ``make_cache`` fixture; set :attr:`has_redis` to False for a cache with
    no Redis tier."""

    #: Whether the caches ``make_cache`` builds have a Redis tier.
    has_redis: ClassVar[bool] = True

    @pytest.fixture
    def make_cache(self) -> CacheFactory:
        """The topology: a :data:`CacheFactory` (see :func:`cache_factory`). Abstract."""
        raise NotImplementedError(f"{type(self).__name__} must define a make_cache fixture")

    @pytest.fixture(params=["sync", "async"])
    def flavour(self, request: pytest.FixtureRequest) -> Iterator[Flavour]:
        flavour = Flavour(request.param)
        try:
            yield flavour
        finally:
            flavour.close()

    def test_hit_after_miss_and_none_is_a_hit(self, make_cache: CacheFactory, flavour: Flavour) -> None:
        cache = make_cache()
        calls: list[object] = []

        @flavour.cached(cache, ttl=60)
        def f(x: object) -> object:
            calls.append(x)
            return None if x == "none" else {"x": x, "list": [1, 2]}

        assert f("a") == {"x": "a", "list": [1, 2]}
        assert f("a") == {"x": "a", "list": [1, 2]}
        assert f("none") is None
        assert f("none") is None
        assert calls == ["a", "none"]
        s = f.stats()
        assert s["misses"] == 2 and s["local_hits"] + s["redis_hits"] == 2

    def test_expiry_follows_the_injected_clock(self, make_cache: CacheFactory, flavour: Flavour) -> None:
        clock = ManualClock()
        cache = make_cache(clock=Clock(time=clock))
        calls = []

        @flavour.cached(cache, ttl=dt.timedelta(seconds=10))
        def f(x: int) -> int:
            calls.append(x)
            return x

        f(1)
        clock.now += 9.9
        f(1)
        assert calls == [1]
        clock.now += 0.2
        f(1)
        assert calls == [1, 1]

    def test_ttl_callable_of_the_result(self, make_cache: CacheFactory, flavour: Flavour) -> None:
        clock = ManualClock()
        cache = make_cache(clock=Clock(time=clock))
        calls = []

        @flavour.cached(cache, ttl=lambda r: 100 if r["state"] == "SUCCESS" else 1)
        def get(state: str) -> dict[str, str]:
            calls.append(state)
            return {"state": state}

        get("RUNNING"), get("SUCCESS")
        clock.now += 5
        get("RUNNING"), get("SUCCESS")
        assert calls == ["RUNNING", "SUCCESS", "RUNNING"]

    def test_key_template_binds_positional_keyword_and_defaults(self, make_cache: CacheFactory, flavour: Flavour) -> None:
        cache = make_cache()
        calls = []

        @flavour.cached(cache, ttl=60, key="wf:{name}:{namespace}")
        def get_workflow(name: str, namespace: str = "") -> str:
            calls.append((name, namespace))
            return f"{name}@{namespace}"

        assert get_workflow("a") == get_workflow(name="a") == get_workflow("a", "") == "a@"
        assert get_workflow("a", namespace="ns") == "a@ns"
        assert calls == [("a", ""), ("a", "ns")]
        assert get_workflow.cache_key("a") == "wf:a:"

    def test_invalidate_and_refresh(self, make_cache: CacheFactory, flavour: Flavour) -> None:
        cache = make_cache()
        source = {"v": 1}

        @flavour.cached(cache, ttl=60)
        def f(k: str) -> int:
            return source["v"]

        assert f("k") == 1
        source["v"] = 2
        assert f("k") == 1
        f.invalidate("k")
        assert f("k") == 2
        source["v"] = 3
        assert f.refresh("k") == 3
        assert f("k") == 3

    def test_exceptions_are_not_cached(self, make_cache: CacheFactory, flavour: Flavour) -> None:
        cache = make_cache()
        calls = []

        @flavour.cached(cache, ttl=60)
        def f(x: int) -> int:
            calls.append(x)
            if len(calls) == 1:
                raise ValueError("boom")
            return x

        with pytest.raises(ValueError, match="boom"):
            f(1)
        assert f(1) == 1
        assert f(1) == 1
        assert calls == [1, 1]

    def test_unhashable_argument_is_a_clear_error(self, make_cache: CacheFactory, flavour: Flavour) -> None:
        cache = make_cache()

        @flavour.cached(cache, ttl=60)
        def f(client: object, name: str) -> str:
            return name

        with pytest.raises(KeyBuildError, match="'client'"):
            f(object(), "x")

        @flavour.cached(cache, ttl=60, exclude=["client"])
        def g(client: object, name: str) -> str:
            return name

        assert g(object(), "x") == "x"

    def test_methods_use_cache_key_hook(self, make_cache: CacheFactory, flavour: Flavour) -> None:
        cache = make_cache()

        class Repo:
            def __init__(self, tenant: str) -> None:
                self.tenant = tenant

            def __cache_key__(self) -> str:
                return self.tenant

            @flavour.cached(cache, ttl=60)
            def get(self, name: str) -> str:
                return f"{self.tenant}/{name}"

        assert Repo("a").get("x") == "a/x"
        assert Repo("b").get("x") == "b/x"  # another tenant never gets a's value

    def test_async_functions_share_the_core(self, make_cache: CacheFactory) -> None:
        """Twenty concurrent awaits of one key compute it once (single-flight across tasks)."""
        cache = make_cache()
        calls = []

        @cache.cached(ttl=60, key="item:{i}")
        async def fetch(i: int) -> dict[str, int]:
            calls.append(i)
            await asyncio.sleep(0.01)
            return {"i": i}

        async def main() -> None:
            results = await asyncio.gather(*(fetch(1) for _ in range(20)))
            assert all(r == {"i": 1} for r in results)
            assert await fetch(1) == {"i": 1}
            await fetch.invalidate(1)  # type: ignore[attr-defined]
            assert await fetch(1) == {"i": 1}

        asyncio.run(main())
        assert calls == [1, 1]

    def test_tags_and_clear(self, make_cache: CacheFactory, flavour: Flavour) -> None:
        cache = make_cache()
        calls = []

        @flavour.cached(cache, ttl=60, key="wf:{name}", tags=["workflow:{name}", "workflows"])
        def get(name: str) -> str:
            calls.append(name)
            return name

        get("a"), get("b")
        flavour.invalidate_tags(cache, "workflow:a")
        get("a"), get("b")
        assert calls == ["a", "b", "a"]
        flavour.invalidate_tags(cache, "workflows")
        get("a"), get("b")
        assert calls == ["a", "b", "a", "a", "b"]
        flavour.clear(cache)
        get("a")
        assert calls[-1] == "a" and len(calls) == 6

    def test_unserialisable_result_names_the_function(self, make_cache: CacheFactory, flavour: Flavour) -> None:
        cache = make_cache()

        @flavour.cached(cache, ttl=60)
        def f(x: int) -> object:
            return object()

        if not self.has_redis:
            assert f(1) is f(1)  # the local tier keeps objects as they are
        else:
            with pytest.raises(SerializationError, match="f"):
                f(1)
