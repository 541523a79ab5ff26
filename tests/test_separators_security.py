"""Issue 17, against a real Redis: separators user data cannot inject (M3, L2),
crafted pub/sub messages (L3), tag and generation counters that expire without
ever reviving an invalidated entry (M6), a counter that cannot be incremented
(M4), passwords kept out of every output (L4), and bad inputs that used to crash
(L6)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
import redis

from mistral_cache import Cache, StaleIfError
from mistral_cache import coherence as coh
from mistral_cache.admin.cli import main
from mistral_cache.exceptions import CacheError, ConfigurationError
from mistral_cache.tiers.local import LocalEntry, LocalTier
from mistral_cache.tiers.redis import Keyspace, redact


def _eventually(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _connected(cache: Cache) -> coh.Listener:
    cache.ensure_listener()
    assert cache.listener is not None and cache.listener.connected.wait(5)
    return cache.listener


def _entry(tags: tuple[str, ...] = ()) -> LocalEntry:
    return LocalEntry(1, created_at=0.0, ttl=1e9, expires_at=1e9, soft_at=1e9, stale_until=1e9, tags=tags)


@pytest.fixture
def cache(redis_url: str, namespace: str) -> Iterator[Cache]:
    c = Cache(redis_url, namespace=namespace, refresh=None)
    yield c
    c.close()


# -- M3: tags cannot break the framing ------------------------------------------------
@pytest.mark.parametrize("tag", ["user:x\x1fy", "a\nb", "nul\x00", "del\x7f", "c1\x85"])
def test_tags_with_control_characters_are_rejected(cache: Cache, tag: str) -> None:
    with pytest.raises(ConfigurationError):
        cache.invalidate_tags(tag)

    @cache.cached(ttl=60, key="u:{u}", tags=["user:{u}"])
    def user(u: str) -> str:
        return u

    with pytest.raises(CacheError):  # an entry its tag could never invalidate is not stored
        user(tag)


def test_any_tag_survives_the_message_framing() -> None:
    """The framing carries tags verbatim, whatever they hold (a crafted or future
    sender included): exactly the named tags are dropped."""
    local = LocalTier(100)
    tags = ["a\x1fb", "a", "b", "p|q", "p", "q", "é\u2028", '"]', "\\"]
    for i, t in enumerate(tags):
        local.put(f"k{i}", _entry((t,)))
    kind = coh.apply(local, coh.message("other", "t", ["a\x1fb", "p|q", "é\u2028", '"]']), "me")
    assert kind == "t"
    assert {k for k in (f"k{i}" for i in range(len(tags))) if local.get(k) is not None} == {"k1", "k2", "k4", "k5", "k8"}
    assert coh.apply(local, coh.message("other", "k", "k|1\x1f"), "me") == "k"
    assert coh.apply(local, coh.message("me", "c"), "me") is None and len(local) == 5  # our own: not applied


def test_several_tags_reach_another_process(redis_url: str, namespace: str, cache: Cache) -> None:
    other = Cache(redis_url, namespace=namespace, refresh=None)
    source = {"v": 1}

    @cache.cached(ttl=300, key="g:{g}", tags=["grp:{g}"])
    def grp(g: str) -> list[Any]:
        return [g, source["v"]]

    names = ["a|b", "c:d", "é"]
    _connected(cache)
    assert [grp(g) for g in names] == [[g, 1] for g in names]
    source["v"] = 2
    other.invalidate_tags("grp:a|b", "grp:é")
    assert _eventually(lambda: grp("a|b") == ["a|b", 2] and grp("é") == ["é", 2])
    assert grp("c:d") == ["c:d", 1]
    other.close()


# -- L2: namespaces cannot collide -----------------------------------------------------
@pytest.mark.parametrize("ns", ["app:t", "a\x1fb", "tab\tx", "nul\x00", "", "sp ace", "br{ace}"])
def test_bad_namespaces_are_rejected(redis_url: str, ns: str) -> None:
    with pytest.raises(ConfigurationError):
        Cache(redis_url, namespace=ns)


def test_keyspaces_are_disjoint() -> None:
    """Every name one namespace uses differs from every name another uses, and a
    tag can never name a namespace's own keys (the generation, the channel...)."""
    tags = ["g", "inv", "stats", "t:g", "k:{=x}", "h:" + "0" * 64, "x" * 300, "y" * 101]
    seen: dict[str, tuple[str, str]] = {}
    for ns in ("app", "app-t", "t", "g"):
        ks = Keyspace(ns)
        names = [ks.generation, ks.channel, ks.base + "stats", ks.entry("x"), ks.lock("x"), *(ks.tag(t) for t in tags)]
        assert len(set(names)) == len(names), names
        for n in names:
            assert seen.setdefault(n, (ns, n)) == (ns, n), f"{n!r} is used by {seen[n][0]} and {ns}"


# -- L3: crafted pub/sub messages -------------------------------------------------------
def test_non_utf8_messages_are_ignored_and_counted(redis_url: str, namespace: str, cache: Cache, rclient: redis.Redis) -> None:
    @cache.cached(ttl=300, key="i:{i}")
    def item(i: int) -> int:
        return i

    listener = _connected(cache)
    item(1), item(2)
    for data in (b"\xff\xfe|k|i:1", b"\x80", b"[\xff]"):
        for _ in range(5):
            rclient.publish(cache.keyspace.channel, data)
    other = Cache(redis_url, namespace=namespace, local=None)
    other.invalidate("i:2")  # a real announcement, after the crafted ones: our barrier
    assert cache.local is not None
    assert _eventually(lambda: cache.local is not None and cache.local.get("i:2") is None)
    assert listener.reconnects == 0 and listener.connected.is_set()
    assert cache.local.get("i:1") is not None, "the crafted messages flushed the local tier"
    assert getattr(listener, "ignored", 0) == 15
    assert cache.stats()["coherence"]["ignored"] == 15
    other.close()


@pytest.mark.parametrize("framing", ["legacy", "json"])
def test_oversized_messages_are_ignored(redis_url: str, namespace: str, cache: Cache, rclient: redis.Redis, framing: str) -> None:
    """A crafted 2.5 MB message naming 300,000 tags (the local-tier lock held for
    a third of a second) is not applied."""
    @cache.cached(ttl=300, key="i:{i}", tags=["t0"])
    def item(i: int) -> int:
        return i

    listener = _connected(cache)
    item(1)
    tags = [f"t{i}" for i in range(300_000)]
    data = "x|t|" + "\x1f".join(tags) if framing == "legacy" else json.dumps(["x", "t", tags])
    rclient.publish(cache.keyspace.channel, data)
    rclient.publish(cache.keyspace.channel, coh.message("x", "k", "barrier"))
    assert _eventually(lambda: listener.received >= 2)
    assert cache.local is not None and cache.local.get("i:1") is not None
    assert listener.reconnects == 0 and getattr(listener, "ignored", 0) == 1


def test_a_large_tag_list_releases_the_local_lock_between_chunks() -> None:
    calls: list[int] = []

    class Recording(LocalTier):
        def delete_tags(self, tags: Iterable[str]) -> int:
            tags = list(tags)
            calls.append(len(tags))
            return super().delete_tags(tags)

    local = Recording(20_000)
    tags = [f"t{i}" for i in range(5000)]
    for t in tags:
        local.put(t, _entry((t,)))
    data = coh.message("other", "t", tags)
    assert len(data.encode()) <= coh.MAX_MESSAGE
    assert coh.apply(local, data, "me") == "t"
    assert len(local) == 0 and sum(calls) == 5000 and max(calls) <= 1024


def test_a_message_over_the_cap_becomes_a_local_flush() -> None:
    """A sender never sends what a listener would ignore: too many tags for one
    message means every local tier is flushed, which is always correct."""
    local = LocalTier(10)
    local.put("a", _entry(("x",)))
    data = coh.message("other", "t", ["y" * 1000] * 100)
    assert len(data.encode()) <= coh.MAX_MESSAGE
    assert coh.apply(local, data, "me") == "c" and len(local) == 0


# -- M6: counters expire, and an expired counter never revives an entry --------------------
def _counters(rclient: redis.Redis, ns: str) -> dict[bytes, int]:
    ks = Keyspace(ns)
    return {k: rclient.pttl(k) for k in rclient.scan_iter(match=ks.base + "*")
            if k.startswith(((ks.base + "t:").encode(), (ks.base + "h:").encode())) or k == ks.generation.encode()}


def test_counters_carry_a_ttl_and_long_tags_are_hashed(cache: Cache, rclient: redis.Redis, namespace: str) -> None:
    cache.invalidate_tags("short", "x" * 100_000)
    cache.clear()
    counters = _counters(rclient, namespace)
    assert len(counters) == 3
    assert all(ttl > 0 for ttl in counters.values()), counters
    assert max(len(k) for k in counters) < 200


def test_entries_expire_before_the_counters_they_depend_on(cache: Cache, rclient: redis.Redis) -> None:
    @cache.cached(ttl=10**9, key="e:{i}", tags=["t"], local=False)
    def e(i: int) -> int:
        return i

    ks = cache.keyspace
    e(1)  # written while the counters did not exist
    cache.invalidate_tags("t")
    cache.clear()
    e(2)  # written under them
    for counter in (ks.tag("t"), ks.generation):
        assert 0 < rclient.pttl(ks.entry("e:1")) < rclient.pttl(counter)
        assert 0 < rclient.pttl(ks.entry("e:2")) < rclient.pttl(counter)


@pytest.mark.parametrize("which", ["tag", "namespace"])
def test_a_counter_that_expired_and_came_back_revives_nothing(cache: Cache, rclient: redis.Redis, which: str) -> None:
    source = {"v": 1}

    @cache.cached(ttl=300, key="k", tags=["t"], local=False)
    def f() -> int:
        return source["v"]

    ks = cache.keyspace
    counter, bump = (ks.tag("t"), lambda: cache.invalidate_tags("t")) if which == "tag" else (ks.generation, cache.clear)
    assert f() == 1
    bump()
    source["v"] = 2
    assert f() == 2  # stored under the counter's current value
    rclient.delete(counter)  # it expired
    source["v"] = 3
    bump()  # and an invalidation created it again
    assert f() == 3


# -- M4: a counter that cannot be incremented --------------------------------------------
@pytest.mark.parametrize("bad", [b"x", b"9223372036854775807", b"1.5"])
def test_a_counter_that_cannot_be_incremented_is_reset(cache: Cache, rclient: redis.Redis, bad: bytes) -> None:
    source = {"v": 1}

    @cache.cached(ttl=300, key="acl:{who}", tags=["acl:{who}"], local=False)
    def acl(who: str) -> str:
        return "allowed" if source["v"] == 1 else "revoked"

    rclient.set(cache.keyspace.tag("acl:bob"), bad)
    assert acl("bob") == "allowed"
    source["v"] = 2
    cache.invalidate_tags("acl:bob")
    assert acl("bob") == "revoked"
    assert cache.stats()["redis_errors"] == 0
    assert rclient.pttl(cache.keyspace.tag("acl:bob")) > 0


# -- L4: passwords -------------------------------------------------------------------------
SECRET = "s3cretPW"


@pytest.mark.parametrize("url", [
    f"redis://user:{SECRET}@h:6379/0",
    f"redis://h:6379/0?password={SECRET}",
    f"redis://h:6379/0?db=1&PassWord={SECRET}&x=1",
    f"redis://h:6379/0?pass%77ord={SECRET}",
    f"redis+sentinel://h:26379,h2:26379/svc?sentinel_password={SECRET}",
    f"redis+sentinel://u:{SECRET}@h:26379/svc?sentinel_password={SECRET}",
    f"redis://:top/{SECRET}@h:6379/0",
    f"redis://:top@{SECRET}@h:6379/0",
    f"redis://:top?{SECRET}@h:6379/0",
    f"redis://:top#{SECRET}@h:6379/0",
    f"redis://h:6379/0?client_name=a@b&password={SECRET}",
    f"redis://h:6379/0?client_name=a:x@b&password={SECRET}",
    f"redis://usr:top{SECRET}/x@h:6379/0",
    f"unix:///tmp/redis.sock?password={SECRET}",
    f"rediss://u:{SECRET}@h:6379/0?ssl_cert_reqs=none",
])
def test_redact_hides_every_password(url: str) -> None:
    shown = redact(url)
    assert SECRET not in shown and "top" not in shown, shown
    assert "h:" in shown or "/tmp/redis.sock" in shown, shown


@pytest.mark.parametrize("url", [
    f"redis://:top/{SECRET}@127.0.0.1:6379/0",
    f"redis+sentinel://:top/{SECRET}@127.0.0.1:26379/svc",
    f"redis+cluster://:top/{SECRET}@127.0.0.1:7000",
    f"redis+cluster://:top{SECRET}@127.0.0.1:x7000",
])
def test_an_unparseable_url_error_shows_no_part_of_the_password(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    cache = Cache(url, namespace="n", local=None)

    @cache.cached(ttl=60, key="k")
    def f() -> int:
        return 1

    with pytest.raises(ConfigurationError) as info:
        f()
    chain: list[BaseException] = []
    exc: BaseException | None = info.value
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    for e in chain:
        assert "top" not in str(e) and SECRET not in str(e), repr(e)
    for argv in (["doctor", "--json"], ["stats"], ["invalidate", "--tag", "x"]):
        main([*argv, "--redis-url", url])
        out, err = capsys.readouterr()
        assert "top" not in out + err and SECRET not in out + err, out + err


def test_cli_output_hides_query_passwords(redis_url: str, namespace: str, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"{redis_url}?password={SECRET}"
    for argv in (["doctor", "--json"], ["doctor"], ["stats", "--namespace", namespace],
                 ["invalidate", "--tag", "x", "--namespace", namespace]):
        main([*argv, "--redis-url", url])
        out, err = capsys.readouterr()
        assert SECRET not in out + err, out + err
        if argv[0] == "doctor":
            assert "password=***" in out, out


# -- L6: bad inputs ------------------------------------------------------------------------------
@pytest.mark.parametrize("ttl", [math.inf, -math.inf, math.nan])
def test_non_finite_ttls_are_refused_when_decorating(cache: Cache, ttl: float) -> None:
    with pytest.raises(ConfigurationError):
        cache.cached(ttl=ttl)(lambda: 1)


def test_a_ttl_strategy_returning_infinity_is_a_clear_error(cache: Cache) -> None:
    @cache.cached(ttl=lambda v: math.inf, key="k")
    def f() -> int:
        return 1

    with pytest.raises(ConfigurationError):
        f()


def test_an_infinite_stale_if_error_still_stores(cache: Cache, rclient: redis.Redis) -> None:
    @cache.cached(ttl=60, key="k", stale=StaleIfError(math.inf))
    def f() -> int:
        return 1

    assert f() == 1 and rclient.pttl(cache.keyspace.entry("k")) > 0


CRAFTED: list[bytes | str] = [
    b"\xff\xfe", "[]", '"x"', "null", "1e999", '{"ts": "x"}', '{"ts": null}', '{"ts": [1]}',
    '{"ts": NOW, "counters": {"misses": "x"}}', '{"ts": NOW, "counters": []}', '{"ts": NOW, "counters": {"misses": 1e999}}',
    '{"ts": NOW, "latency": {"miss": {"counts": {"x": 1}}}}', '{"ts": NOW, "latency": {"miss": []}}',
    '{"ts": NOW, "latency": {"miss": {"counts": {"1": "y"}, "sum": "z"}}}', '{"ts": NOW, "latency": {"miss": {"counts": {"1": -5}}}}',
    '{"ts": NOW, "adaptive": {"f": "nope"}}', '{"ts": NOW, "adaptive": []}',
    '{"ts": NOW, "adaptive": {"f": {"histogram": {"ttl": {"a": "b"}}}}}', '{"ts": NOW, "adaptive": {"f": {"keys": "many"}}}',
    '{"ts": NOW, "breaker": {"a": 1}, "counters": {"misses": 1}}',
]


def test_crafted_stats_fields_do_not_crash_the_command(redis_url: str, namespace: str, cache: Cache,
                                                       rclient: redis.Redis, capsys: pytest.CaptureFixture[str]) -> None:
    from mistral_cache.observability.publisher import publish_stats, stats_key

    @cache.cached(ttl=60, key="x")
    def f() -> int:
        return 1

    f()
    assert publish_stats(cache)
    now = str(time.time())
    key = stats_key(cache.keyspace)
    for i, value in enumerate(CRAFTED):
        rclient.hset(key, f"evil-{i}\x1b[2J", value.replace("NOW", now) if isinstance(value, str) else value)
    for argv in (["--json"], []):
        code = main(["stats", "--redis-url", redis_url, "--namespace", namespace, *argv])
        out = capsys.readouterr().out
        assert code == 0 and "\x1b" not in out
    code = main(["stats", "--redis-url", redis_url, "--namespace", namespace, "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["misses"] >= 1 and any(p["lookups"] >= 1 for p in data["processes"])
