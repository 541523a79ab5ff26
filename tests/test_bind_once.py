"""A miss of a function with tag templates binds its arguments once (for the key
and the tags), whether the call passes keywords, leaves defaults unfilled or
passes everything positionally; the key and the tags are the ones built before."""

from __future__ import annotations

from typing import Any

import pytest

from mistral_cache import Cache
from mistral_cache.keys import ArgBinder, KeyBuilder


@pytest.fixture
def binds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    count = [0]
    real = ArgBinder.bind

    def counting(self: ArgBinder, args: tuple[Any, ...], kwargs: Any) -> dict[str, Any]:
        count[0] += 1
        return real(self, args, kwargs)

    monkeypatch.setattr(ArgBinder, "bind", counting)
    return count


@pytest.mark.parametrize("key", ["u:{user}:{page}", None])
@pytest.mark.parametrize("local", [True, False])
def test_a_tagged_miss_binds_once(redis_url: str, namespace: str, binds: list[int], key: str | None, local: bool) -> None:
    cache = Cache(redis_url, namespace=namespace, **({} if local else {"local": None}))
    calls = []

    @cache.cached(ttl=60, key=key, tags=("user:{user}",))
    def page(user: int, page: int = 1, size: int = 10) -> tuple[int, int, int]:
        calls.append((user, page, size))
        return user, page, size

    try:
        for call, expect in [(lambda: page(1, page=2), 1), (lambda: page(2), 1), (lambda: page(user=3, page=1, size=10), 1),
                             (lambda: page(4, 1, 10), 1)]:
            binds[0] = 0
            call()
            assert binds[0] <= expect, "a miss bound the arguments twice"
        assert len(calls) == 4
        assert list(page(1, 2)) == [1, 2, 10] and list(page(2, page=1)) == [2, 1, 10]  # same keys: hits
        assert len(calls) == 4
        assert cache.invalidate_tags("user:1")  # the tag was built from the bound arguments
        page(1, page=2)
        assert len(calls) == 5
    finally:
        cache.close()


def test_key_and_bound_matches_the_key() -> None:
    def f(a: int, b: int = 2, **kw: Any) -> int:
        return a

    for template in ("x:{a}:{b}", None):
        kb = KeyBuilder(f, template)
        for args, kwargs in [((1,), {}), ((1, 3), {}), ((1,), {"b": 4, "z": 5}), ((), {"a": 7})]:
            key, bound = kb.key_and_bound(args, kwargs)
            assert key == kb(args, kwargs) == kb.build(args, kwargs)
            assert bound == kb.binder.bind(args, kwargs)
            assert kb.from_bound(kb.binder.bind(args, kwargs)) == key
    callable_key = KeyBuilder(f, lambda a, b=2, **kw: f"c{a}")
    assert callable_key.key_and_bound((1,), {}) == ("c1", None)
