"""The contract every tier configuration keeps: local only, Redis only, both.

One generic suite (in the manner of dogpile's ``_GenericBackendTestSuite``),
run against each topology with a real Redis where Redis is involved.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable

import pytest

from mistral_cache import Cache, ConfigurationError, KeyBuildError, SerializationError


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


TOPOLOGIES = ["local", "redis", "both"]


@pytest.fixture(params=TOPOLOGIES)
def make_cache(request: pytest.FixtureRequest, namespace: str) -> Callable[..., Cache]:
    made: list[Cache] = []

    def make(**kw: object) -> Cache:
        if request.param in ("redis", "both"):
            kw.setdefault("redis_url", request.getfixturevalue("redis_url"))
        if request.param == "redis":
            kw.setdefault("local_maxsize", 0)
        kw.setdefault("namespace", namespace)
        kw.setdefault("early_refresh", False)
        cache = Cache(**kw)  # type: ignore[arg-type]
        made.append(cache)
        return cache

    yield make
    for c in made:
        c.close()


def test_hit_after_miss_and_none_is_a_hit(make_cache: Callable[..., Cache]) -> None:
    cache = make_cache()
    calls: list[object] = []

    @cache.cached(ttl=60)
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


def test_expiry_follows_the_injected_clock(make_cache: Callable[..., Cache]) -> None:
    clock = Clock()
    cache = make_cache(timer=clock)
    calls = []

    @cache.cached(ttl=dt.timedelta(seconds=10))
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


def test_ttl_callable_of_the_result(make_cache: Callable[..., Cache]) -> None:
    clock = Clock()
    cache = make_cache(timer=clock)
    calls = []

    @cache.cached(ttl=lambda r: 100 if r["state"] == "SUCCESS" else 1)
    def get(state: str) -> dict[str, str]:
        calls.append(state)
        return {"state": state}

    get("RUNNING"), get("SUCCESS")
    clock.now += 5
    get("RUNNING"), get("SUCCESS")
    assert calls == ["RUNNING", "SUCCESS", "RUNNING"]


def test_key_template_binds_positional_keyword_and_defaults(make_cache: Callable[..., Cache]) -> None:
    cache = make_cache()
    calls = []

    @cache.cached(ttl=60, key="wf:{name}:{namespace}")
    def get_workflow(name: str, namespace: str = "") -> str:
        calls.append((name, namespace))
        return f"{name}@{namespace}"

    assert get_workflow("a") == get_workflow(name="a") == get_workflow("a", "") == "a@"
    assert get_workflow("a", namespace="ns") == "a@ns"
    assert calls == [("a", ""), ("a", "ns")]
    assert get_workflow.cache_key("a") == "wf:a:"


def test_invalidate_and_refresh(make_cache: Callable[..., Cache]) -> None:
    cache = make_cache()
    source = {"v": 1}

    @cache.cached(ttl=60)
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


def test_exceptions_are_not_cached(make_cache: Callable[..., Cache]) -> None:
    cache = make_cache()
    calls = []

    @cache.cached(ttl=60)
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


def test_unhashable_argument_is_a_clear_error(make_cache: Callable[..., Cache]) -> None:
    cache = make_cache()

    @cache.cached(ttl=60)
    def f(client: object, name: str) -> str:
        return name

    with pytest.raises(KeyBuildError, match="'client'"):
        f(object(), "x")

    @cache.cached(ttl=60, exclude=["client"])
    def g(client: object, name: str) -> str:
        return name

    assert g(object(), "x") == "x"


def test_bad_options_are_named() -> None:
    with pytest.raises(ConfigurationError, match="unknown parameters"):
        Cache().cached(ttl=1, key="{nope}")(lambda x: x)
    with pytest.raises(ConfigurationError, match="ttl"):
        Cache().cached(ttl=-1)(lambda x: x)
    with pytest.raises(ConfigurationError, match="serializer"):
        Cache(serializer="yaml")
    with pytest.raises(ConfigurationError, match="secret"):
        Cache(serializer="pickle")


def test_methods_use_cache_key_hook(make_cache: Callable[..., Cache]) -> None:
    cache = make_cache()

    class Repo:
        def __init__(self, tenant: str) -> None:
            self.tenant = tenant

        def __cache_key__(self) -> str:
            return self.tenant

        @cache.cached(ttl=60)
        def get(self, name: str) -> str:
            return f"{self.tenant}/{name}"

    assert Repo("a").get("x") == "a/x"
    assert Repo("b").get("x") == "b/x"  # another tenant never gets a's value


def test_async_functions_share_the_core(make_cache: Callable[..., Cache]) -> None:
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
        await fetch.invalidate(1)
        assert await fetch(1) == {"i": 1}

    asyncio.run(main())
    assert calls == [1, 1]


def test_tags_and_clear(make_cache: Callable[..., Cache]) -> None:
    cache = make_cache()
    calls = []

    @cache.cached(ttl=60, key="wf:{name}", tags=["workflow:{name}", "workflows"])
    def get(name: str) -> str:
        calls.append(name)
        return name

    get("a"), get("b")
    cache.invalidate_tags("workflow:a")
    get("a"), get("b")
    assert calls == ["a", "b", "a"]
    cache.invalidate_tags("workflows")
    get("a"), get("b")
    assert calls == ["a", "b", "a", "a", "b"]
    cache.clear()
    get("a")
    assert calls[-1] == "a" and len(calls) == 6


def test_unserialisable_result_names_the_function(make_cache: Callable[..., Cache], request: pytest.FixtureRequest) -> None:
    cache = make_cache()

    @cache.cached(ttl=60)
    def f(x: int) -> object:
        return object()

    if cache.redis is None:
        assert f(1) is f(1)  # the local tier keeps objects as they are
    else:
        with pytest.raises(SerializationError, match="f"):
            f(1)
