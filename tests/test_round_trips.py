"""Round trips per path, counted by a connection that records what it sends (one
send is one round trip; redis-py's connection handshake is left out). A miss is
two round trips, a process's first one included: the read that takes the lock
when the entry is absent, and the conditional write that releases it."""

from __future__ import annotations

from typing import Any

import redis

from mistral_cache import Cache, Clock, Local

_HANDSHAKE = (b"HELLO", b"CLIENT", b"SUBSCRIBE", b"PING")


class _Recording(redis.Connection):
    """Records the command name of each send (a pipeline is one send)."""

    sent: list[str] = []

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        parts = command if isinstance(command, list) else [command]
        blob = b"".join(bytes(p) for p in parts)
        words = [w for w in blob.split(b"\r\n") if w and w[:1] not in (b"*", b"$")]
        if words and words[0].upper() not in _HANDSHAKE:
            type(self).sent.append(words[0].decode().upper())
        super().send_packed_command(command, check_health)


def _sent(call: Any) -> list[str]:
    before = len(_Recording.sent)
    call()
    return _Recording.sent[before:]


def _cache(url: str, namespace: str, **kw: Any) -> Cache:
    """A fresh cache over a fresh pool: what a new process has."""
    pool = redis.ConnectionPool.from_url(url, connection_class=_Recording)
    return Cache(redis=redis.Redis(connection_pool=pool), namespace=namespace, refresh=None, **kw)


def test_a_process_first_miss_is_two_round_trips(redis_url: str, namespace: str) -> None:
    for local in (Local(coherence=False), Local(), None):
        cache = _cache(redis_url, f"{namespace}-{id(local)}", local=local)
        try:
            f = cache.cached(ttl=60, key="first:{x}")(lambda x: x * 2)
            assert _sent(lambda: f(1)) == ["EVAL", "EVAL"]  # read-or-lock, write-and-release: sent whole once
            assert _sent(lambda: f(2)) == ["EVALSHA", "EVALSHA"]
        finally:
            cache.close()


def test_a_miss_after_an_invalidation_is_two_round_trips(redis_url: str, namespace: str) -> None:
    """The tombstone an invalidation leaves is no live entry: the first read takes the lock."""
    cache = _cache(redis_url, namespace, local=Local(coherence=False))
    try:
        f = cache.cached(ttl=60, key="inv:{x}")(lambda x: x * 2)
        f(1)
        assert f.invalidate(1)  # type: ignore[attr-defined]
        assert len(_sent(lambda: f(1))) == 2
    finally:
        cache.close()


def test_a_function_that_mostly_hits_reads_plainly(redis_url: str, namespace: str) -> None:
    """Once the first reads of a function mostly find their entry, it reads with a
    plain MGET (cheaper than the script on a hit); a miss then takes three round
    trips (read, lock, write) until misses are common again."""
    writer = _cache(redis_url, namespace, local=None)
    reader = _cache(redis_url, namespace, local=None)
    try:
        fw = writer.cached(ttl=60, key="hot:{x}")(lambda x: x * 2)
        fr = reader.cached(ttl=60, key="hot:{x}")(lambda x: x * 2)
        for x in range(40):
            fw(x)
        hits = [_sent(lambda x=x: fr(x)) for x in range(40)]  # type: ignore[misc]
        assert all(len(h) == 1 for h in hits)
        assert hits[0] == ["EVAL"] and hits[-1] == ["MGET"]  # a new process starts with the script
        assert fr.stats()["redis_hits"] == 40 and fr.stats()["misses"] == 0  # type: ignore[attr-defined]
        assert _sent(lambda: fr(1000)) == ["MGET", "EVAL", "EVAL"]  # read; lock, write (first use: sent whole)
    finally:
        writer.close()
        reader.close()


def test_a_held_value_past_its_ttl_misses_in_two_round_trips_whatever_the_estimate(redis_url: str, namespace: str) -> None:
    now = [1000.0]
    cache = _cache(redis_url, namespace, local=Local(coherence=False), clock=Clock(time=lambda: now[0]))
    try:
        f = cache.cached(ttl=60, key="exp:{x}")(lambda x: x * 2 + now[0])
        f(0)
        now[0] += 61
        assert len(_sent(lambda: f(0))) == 2
    finally:
        cache.close()


def test_a_two_tier_cache_that_mostly_hits_reads_one_get(redis_url: str, namespace: str) -> None:
    """With the listener up the counters are held: once first reads mostly find their
    entry, a Redis hit is one GET of the entry, and answers the right value."""
    writer = _cache(redis_url, namespace, local=None)
    reader = _cache(redis_url, namespace, local=Local(maxsize=2, max_bytes=0))
    try:
        fw = writer.cached(ttl=60, key="two:{x}")(lambda x: [x, "v"])
        fr = reader.cached(ttl=60, key="two:{x}")(lambda x: [x, "computed"])
        for x in range(60):
            fw(x)
        fr(0)  # starts the listener
        from mistral_cache.testing import seconds_until

        assert seconds_until(lambda: reader.stats()["coherence"]["connected"], 5) is not None
        sent = [_sent(lambda x=x: fr(x)) for x in range(1, 60)]  # type: ignore[misc]
        assert [fr(x) for x in range(40, 60)] == [[x, "v"] for x in range(40, 60)]
        assert all(len(s) == 1 for s in sent) and sent[-1] == ["GET"]
        assert fr.stats()["misses"] == 0  # type: ignore[attr-defined]
    finally:
        writer.close()
        reader.close()
