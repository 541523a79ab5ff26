"""The freshness lease kept by several publishers of one stream, against a real Redis.

Production runs several keepers of one lease: the receiver's workers under
gunicorn, the publisher plugin in each Mistral engine -- and an engine creates
several plugin instances when its first events race (seen: four epochs begun in
20 ms by one engine, then clients ending epochs at random, dropping every entry
cached so far; in ``benchmarks/events_freshness.py`` every execution and task list
was fetched again about 2 s into the plugin's run). The keepers must share one
epoch, and an epoch must still end when the stream may have lost events: the
heartbeat lapsing, the last keeper stopping, or a keeper restarting after a crash.
Keepers in other processes are real processes, killed and stopped with signals.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from mistral_cache import Cache
from mistral_cache.mistral.events.lease import LEASE_TTL, LeaseKeeper, LeaseWatch, lease_keys, lease_tag

MISTRAL = "http://mistral.invalid:8989/v2"

KEEPER = """
import sys, time
from mistral_cache import Cache
from mistral_cache.mistral.events.lease import LeaseKeeper
cache = Cache(sys.argv[1], namespace=sys.argv[2], local=None, lock=None, refresh=None)
keeper = LeaseKeeper(cache, sys.argv[3], ttl=float(sys.argv[4])).start()
print(keeper.epoch, flush=True)
time.sleep(3600)
"""


def _keeper_cache(redis_url: str, namespace: str) -> Cache:
    return Cache(redis_url, namespace=namespace, local=None, lock=None, refresh=None)


class Counted:
    """A function cached under the lease's tag, counting its computations: an epoch
    ending drops it (one more computation), a continuing epoch keeps it."""

    def __init__(self, cache: Cache) -> None:
        self.calls = 0
        self.read = cache.cached(ttl=300, key="lease-test", tags=[lease_tag(MISTRAL)], lock=None)(self._compute)

    def _compute(self) -> int:
        self.calls += 1
        return self.calls


@pytest.fixture
def client(redis_url: str, namespace: str) -> Iterator[Cache]:
    cache = Cache(redis_url, namespace=namespace, local=None)
    yield cache
    cache.close()


def _dead(redis_url: str, namespace: str) -> list[bytes]:
    prefix = lease_keys(f"mc:{namespace}:", MISTRAL)[2]
    return sorted(redis.Redis.from_url(redis_url).keys(prefix + "*"))


def _watch_steadily(watch: LeaseWatch, seconds: float, epoch: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        watch.check()
        assert watch.live() and watch.epoch == epoch and watch.lapses == 0, (watch.epoch, epoch, watch.lapses)
        time.sleep(0.02)


def test_keepers_of_one_stream_share_its_epoch(redis_url: str, namespace: str, client: Cache) -> None:
    """Four keepers started at once (an engine's racing plugin instances) and a fifth
    later share one epoch; entries cached under it survive all but the last keeper
    stopping, and the last one ends it."""
    caches = [_keeper_cache(redis_url, namespace) for _ in range(5)]
    keepers = [LeaseKeeper(c, MISTRAL, ttl=3.0) for c in caches]
    try:
        starting = [threading.Thread(target=k.start) for k in keepers[:4]]
        for t in starting:
            t.start()
        for t in starting:
            t.join()
        epoch = keepers[0].epoch
        assert epoch is not None and all(k.epoch == epoch for k in keepers[:4]), [k.epoch for k in keepers]
        assert _dead(redis_url, namespace) == []
        watch = LeaseWatch(client, MISTRAL, interval=60.0)
        counted = Counted(client)
        assert counted.read() == 1
        _watch_steadily(watch, 1.0, epoch)  # the keepers' beats do not fight over the lease
        keepers[4].start()  # joins: a sibling beats
        assert keepers[4].epoch == epoch
        for k in keepers[:4]:
            k.stop()
            _watch_steadily(watch, 0.1, epoch)
        assert counted.read() == 1 and _dead(redis_url, namespace) == []
        keepers[4].stop()
        watch.check()
        assert not watch.live() and len(_dead(redis_url, namespace)) == 1
        assert counted.read() == 2, "the entry cached under the ended epoch was served"
    finally:
        for k in keepers:
            k.stop()
        for c in caches:
            c.close()


def _spawn(redis_url: str, namespace: str, ttl: float) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", KEEPER, redis_url, namespace, MISTRAL, str(ttl)],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def test_a_keeper_killed_leaves_the_epoch_to_its_beating_sibling(redis_url: str, namespace: str,
                                                                 client: Cache) -> None:
    proc, epoch = _spawn(redis_url, namespace, 3.0)
    cache = _keeper_cache(redis_url, namespace)
    keeper = LeaseKeeper(cache, MISTRAL, ttl=3.0)
    try:
        keeper.start()
        assert keeper.epoch == epoch, "a keeper started beside a beating one began an epoch of its own"
        watch = LeaseWatch(client, MISTRAL, interval=60.0)
        proc.kill()
        proc.wait()
        _watch_steadily(watch, 3.5, epoch)  # past the killed keeper's last beat + ttl
        assert _dead(redis_url, namespace) == []
    finally:
        proc.kill()
        keeper.stop()
        cache.close()


def test_a_keeper_restarted_after_a_crash_begins_a_new_epoch(redis_url: str, namespace: str) -> None:
    """Its predecessor's lease still lives, but nobody beats it: the events sent
    while no keeper ran may be lost, so the old epoch ends."""
    proc, old = _spawn(redis_url, namespace, 3.0)
    proc.kill()
    proc.wait()
    lease = lease_keys(f"mc:{namespace}:", MISTRAL)[0]
    assert redis.Redis.from_url(redis_url).pttl(lease) > 1000, "the dead keeper's lease should still live"
    cache = _keeper_cache(redis_url, namespace)
    keeper = LeaseKeeper(cache, MISTRAL, ttl=3.0)
    try:
        keeper.start()
        assert keeper.epoch not in (None, old)
        assert _dead(redis_url, namespace) == [(lease_keys(f"mc:{namespace}:", MISTRAL)[2] + old).encode()]
    finally:
        keeper.stop()
        cache.close()


def test_a_keeper_paused_past_its_lease_begins_a_new_epoch(redis_url: str, namespace: str, client: Cache) -> None:
    """SIGSTOPped past ``LEASE_TTL``: clients end its epoch; resumed, it must not bring
    that epoch back to life (entries cached under it were dropped, events may be lost)."""
    proc, old = _spawn(redis_url, namespace, LEASE_TTL)
    watch = LeaseWatch(client, MISTRAL, interval=60.0)
    try:
        watch.check()
        assert watch.live() and watch.epoch == old
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(LEASE_TTL + 0.5)
        watch.check()
        assert not watch.live() and watch.lapses == 1
        os.kill(proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + 5
        while not watch.live():
            assert time.monotonic() < deadline, "the resumed keeper did not beat again"
            time.sleep(0.05)
            watch.check()
        assert watch.epoch != old, "the resumed keeper revived the epoch its clients had ended"
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait()
