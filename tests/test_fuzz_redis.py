"""Someone writes random and crafted bytes into every kind of Redis key the cache
owns (entries, generation and tag counters, locks) and onto its channel, while
callers read (issue 17). With signing on (``Codec(secret=)``) no caller may see an
exception or a value its function did not return; without it, structural garbage
must still never raise. A real Redis, real threads.
"""

from __future__ import annotations

import os
import random
import threading
import time
from typing import Any

import pytest
import redis

from mistral_cache import Cache, Codec, Local, RedisLock

KEYS = range(12)


def expected(k: int) -> dict[str, Any]:
    return {"k": k, "name": f"wf-{k}", "tags": ["a", "b"], "n": k * 7}


def _crafted(rng: random.Random, real: bytes | None) -> bytes:
    """Random bytes, or a real entry truncated, bit-flipped, extended, or with its header kept."""
    kinds = ["random", "empty", "magic"]
    if real:
        kinds += ["truncated", "flipped", "extended", "header+garbage"]
    kind = rng.choice(kinds)
    if kind == "random":
        return os.urandom(rng.randrange(1, 200))
    if kind == "empty":
        return b""
    if kind == "magic":
        return b"MC" + os.urandom(rng.randrange(0, 80))
    assert real is not None
    if kind == "truncated":
        return real[: rng.randrange(0, len(real))]
    if kind == "flipped":
        i = rng.randrange(len(real))
        return real[:i] + bytes([real[i] ^ (1 << rng.randrange(8))]) + real[i + 1:]
    if kind == "extended":
        return real + os.urandom(rng.randrange(1, 40))
    return real[:40] + os.urandom(rng.randrange(0, 60))


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_garbage_in_every_key_never_reaches_a_caller(redis_url: str, namespace: str, signed: bool) -> None:
    codec = Codec("json", secret=b"fuzz-secret") if signed else Codec("json")
    cache = Cache(redis_url, namespace=namespace, codec=codec, local=Local(ttl=0.05), lock=RedisLock(timeout=1.0, wait=2.0))
    ks = cache.keyspace

    @cache.cached(ttl=0.3, key="item:{k}", tags=["group:{k}", "all"])
    def item(k: int) -> dict[str, Any]:
        return expected(k)

    stop = threading.Event()
    errors: list[BaseException] = []
    wrong: list[Any] = []
    reads = [0]
    writes = [0]

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            k = rng.choice(KEYS)
            try:
                got = item(k)
            except BaseException as exc:  # any exception is a failure
                errors.append(exc)
                continue
            reads[0] += 1
            if got != expected(k):
                wrong.append((k, got))

    def vandal(seed: int) -> None:
        rng = random.Random(seed)
        r = redis.Redis.from_url(redis_url)
        try:
            while not stop.is_set():
                k = rng.choice(KEYS)
                target = rng.choice(["entry", "entry", "generation", "tag", "lock", "channel"])
                if target == "entry":
                    entry = ks.entry(item.cache_key(k))  # type: ignore[attr-defined]
                    r.set(entry, _crafted(rng, r.get(entry)), px=rng.randrange(50, 2000))
                elif target == "generation":
                    r.set(ks.generation, rng.choice([b"x", b"\xff\xfe", b"", b"-1", os.urandom(9), b"99999999999999999999999"]))
                elif target == "tag":
                    r.set(ks.tag(rng.choice([f"group:{k}", "all"])), os.urandom(rng.randrange(0, 12)))
                elif target == "lock":
                    r.set(ks.lock(item.cache_key(k)), os.urandom(16), px=rng.randrange(10, 300))  # type: ignore[attr-defined]
                else:
                    r.publish(ks.channel, rng.choice([os.urandom(rng.randrange(1, 64)), b"[]", b"{}", b'["x","t",5]', b"\xff"]))
                writes[0] += 1
                time.sleep(0.002)
        finally:
            r.close()

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(4)]
    threads.append(threading.Thread(target=vandal, args=(99,), daemon=True))
    try:
        for t in threads:
            t.start()
        # 4 s of vandalism; longer on a loaded machine, until both sides did enough to mean something
        started = time.monotonic()
        while time.monotonic() - started < 4.0 or (min(reads[0], writes[0]) <= 200 and time.monotonic() - started < 30):
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        cache.close()
    assert not any(t.is_alive() for t in threads), "a caller hung"
    assert reads[0] > 200 and writes[0] > 200, (reads, writes)
    assert errors == [], errors[:3]
    if signed:
        assert wrong == [], wrong[:3]
