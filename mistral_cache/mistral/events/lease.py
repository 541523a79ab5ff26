"""The freshness lease: event-backed TTLs only while the event stream is healthy.

A receiver (or the publisher plugin) keeps, per namespace and Mistral server:

- ``ev:<server>:lease``: a heartbeat (expires ``LEASE_TTL`` after the last beat)
  holding the current epoch and the publisher's identity (webhook URLs);
- ``ev:<server>:epoch``: the epoch of the stream now, kept past a lapse;
- ``ev:<server>:dead:<epoch>``: set once (``NX``) by whoever sees that epoch end;
- ``ev:<server>:members`` and ``ev:<server>:member:<id>``: the keepers of the stream
  (several processes publish one stream), each alive while it beats.

Every entry cached under a lease carries the tag :func:`lease_tag`. Whoever first
sees an epoch end -- the receiver restarting alone, or any client's :class:`LeaseWatch`
noticing the heartbeat gone -- wins the ``NX`` and bumps that tag, so no entry
written under a dead epoch outlives it by more than ``LEASE_TTL`` plus one watch
interval (together under the 2 s state-rule TTL of an active resource).

Clients read the lease in a background thread (and once when a process's first
read starts the watch); deciding a TTL reads memory only, so a local or Redis hit
never pays a round trip for it.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from ...tiers.redis import FAILED
from ..identity import server_id

__all__ = [
    "EVENT_TTL", "LEASE_TTL", "SENDER_TTL", "LeaseKeeper", "LeaseWatch", "lease_keys", "lease_tag", "notified",
    "sender_key", "watch_for",
]

log = logging.getLogger("mistral_cache.mistral.events")

#: Default TTL of an active execution or task (and its lists) while events flow.
EVENT_TTL = 300.0
#: A heartbeat older than this means the stream is down.
LEASE_TTL = 1.0
#: How often the keeper beats and clients look.
BEAT = 0.25
#: A client trusts the lease only while its last reading has this much left.
MARGIN = 0.1
#: The publisher type of the plugin, as operators write it in ``notify``.
PLUGIN_TYPE = "mistral_cache"


def lease_tag(mistral_url: str) -> str:
    """The tag every entry cached under a lease of this server carries."""
    return f"ev-lease@{server_id(mistral_url)}"


def lease_keys(base: str, mistral_url: str) -> tuple[str, str, str]:
    """(lease, epoch, dead-marker prefix) under a keyspace ``base`` (``mc:<ns>:``)."""
    root = f"{base}ev:{server_id(mistral_url)}:"
    return root + "lease", root + "epoch", root + "dead:"


def sender_key(base: str, mistral_url: str, execution_id: str) -> str:
    """Set by the receiver when an execution's events reach it: its tasks are covered."""
    return f"{base}ev:{server_id(mistral_url)}:x:{execution_id}"


#: How long the receiver remembers that an execution sends events.
SENDER_TTL = 86400


def notified(params: Any, urls: Iterable[str]) -> bool:
    """Does an execution's ``params`` (a dict or its JSON text) name our publisher in ``notify``?"""
    if isinstance(params, str):
        try:
            params = json.loads(params)
        except ValueError:
            return False
    notify = params.get("notify") if isinstance(params, Mapping) else None
    if not isinstance(notify, list):
        return False
    wanted = {u.rstrip("/") for u in urls}
    for item in notify:
        if not isinstance(item, Mapping):
            continue
        if item.get("type") == PLUGIN_TYPE:
            return True
        url = item.get("url")
        if item.get("type") == "webhook" and isinstance(url, str) and url.rstrip("/") in wanted:
            return True
    return False


def _end_epoch(client: Any, dead_prefix: str, epoch: str, ttl: float = 3600.0) -> bool:
    """Mark ``epoch`` dead; True for the one caller that did it first."""
    return bool(client.set(dead_prefix + epoch, "1", nx=True, ex=int(ttl)))


class LeaseKeeper:
    """The writing side, one per publishing process.

    Every publisher of one stream -- the receiver's workers under gunicorn, the
    plugin in each Mistral engine, the plugin instances an engine creates in a race
    at its first events -- keeps the same lease. The first starts an epoch; the others
    join it while a sibling is seen beating, so several keepers never look like a
    stream restarting (each start used to begin a new epoch: every entry cached
    under the old one was dropped, and keepers overwriting each other's epoch made
    clients end epochs at random). An epoch ends when its heartbeat lapses (nobody
    beat for ``ttl``: events may have been lost), or when its last keeper stops.

    A keeper restarted while its crashed predecessor's lease still lives sees no
    sibling beating and starts a new epoch: the events sent while it was down may
    be lost."""

    def __init__(self, cache: Any, mistral_url: str, urls: Iterable[str] = (), *, beat: float = BEAT,
                 ttl: float = LEASE_TTL) -> None:
        if cache.redis is None:
            raise ValueError("a lease needs a Redis tier")
        self.cache, self.mistral_url, self.beat, self.ttl = cache, mistral_url, beat, ttl
        self.keys = lease_keys(cache.keyspace.base, mistral_url)
        root = self.keys[0][: -len("lease")]
        self.member = secrets.token_hex(8)
        self._members = root + "members"  # the ids of the keepers that beat (or did)
        self._member_prefix = root + "member:"  # one key per keeper, alive while it beats
        self.urls = sorted(set(urls))
        self.epoch: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.beats_failed = 0

    @property
    def _ttl_ms(self) -> int:
        return int(self.ttl * 1000)

    def start(self) -> LeaseKeeper:
        """Join the stream's epoch if a sibling keeps it, else begin a new one (ending
        the previous); then beat. When a lease is live, telling a beating sibling from
        a crashed one takes up to one beat (a crashed one: up to ``ttl``)."""
        self.cache.redis.run(self._member, "lease member")  # first: a sibling starting now sees us
        got = self.cache.redis.run(lambda c: c.get(self.keys[0]), "lease read")
        current = _decode(got) if got is not FAILED else None
        if current is not None and self._siblings_beating():
            self.epoch = current["epoch"]
        else:
            self._begin(force=current is not None)
        self._beat()
        self._thread = threading.Thread(target=self._run, name="mistral-cache-lease", daemon=True)
        self._thread.start()
        return self

    def _member(self, c: Any, pipe: Any = None) -> Any:
        """Say this keeper is alive for ``ttl`` (into ``pipe``, or at once)."""
        p = pipe if pipe is not None else c.pipeline(transaction=False)
        p.set(self._member_prefix + self.member, "1", px=self._ttl_ms)
        p.sadd(self._members, self.member)
        p.expire(self._members, 86400)
        return p if pipe is not None else p.execute()

    def _siblings_beating(self) -> bool:
        """Does another keeper beat now? Its member key is refreshed every beat, while a
        crashed one's only counts down: watch them until one is refreshed, or for at
        most ``ttl`` (by then a crashed one's key is gone)."""
        got = self.cache.redis.run(lambda c: c.smembers(self._members), "lease members")
        if got is FAILED:
            return False
        others = sorted(_names(got) - {self.member})
        if not others:
            return False
        keys = [self._member_prefix + m for m in others]

        def pttls(c: Any) -> Any:
            pipe = c.pipeline(transaction=False)
            for key in keys:
                pipe.pttl(key)
            return pipe.execute()

        last = self.cache.redis.run(pttls, "lease members")
        deadline = time.monotonic() + self.ttl
        while last is not FAILED and time.monotonic() < deadline and any(t > 0 for t in last):
            time.sleep(0.05)
            now = self.cache.redis.run(pttls, "lease members")
            if now is not FAILED and any(b > a for a, b in zip(last, now, strict=True)):
                return True  # more left than before: refreshed, a keeper that beats
            last = now
        if last is not FAILED and (gone := [m for m, t in zip(others, last, strict=True) if t < 0]):
            self.cache.redis.run(lambda c: c.srem(self._members, *gone), "lease members")
        return False

    def _begin(self, force: bool = False) -> None:
        """A new epoch. ``force``: over a lease nobody keeps any more (else only if
        none is there: a sibling that began one a moment earlier wins, and we join)."""
        lease, epoch_key, _ = self.keys
        epoch = secrets.token_hex(8)
        value = json.dumps({"epoch": epoch, "urls": self.urls})

        def op(c: Any) -> Any:
            replaced = c.get(lease) if force else None
            if not c.set(lease, value, px=self._ttl_ms, nx=not force):
                return False, c.get(lease), None
            old = c.getset(epoch_key, epoch)
            return True, replaced, old

        got = self.cache.redis.run(op, "lease epoch")
        if got is FAILED:  # the next beat tries again
            self.beats_failed += 1
            return
        began, other, old = got
        if not began:
            joined = _decode(other)
            if joined is not None:
                self.epoch = joined["epoch"]
            return
        self.epoch = epoch
        ended = {_text(old)} | ({d["epoch"]} if (d := _decode(other)) is not None else set())
        for gone in ended - {None, epoch}:
            # The previous stream ended (maybe unnoticed): events may have been lost since.
            if self.cache.redis.run(lambda c, e=gone: _end_epoch(c, self.keys[2], e), "lease end") is True:
                self.cache.invalidate_tags(lease_tag(self.mistral_url))

    def _beat(self) -> bool:
        lease = self.keys[0]

        def op(c: Any) -> Any:
            pipe = c.pipeline(transaction=False)
            pipe.pexpire(lease, self._ttl_ms)
            pipe.get(lease)
            return self._member(c, pipe).execute()

        got = self.cache.redis.run(op, "lease beat")
        if got is FAILED:
            self.beats_failed += 1
            return False
        kept, raw = got[0], _decode(got[1])
        if kept and raw is not None:
            self.epoch = raw["epoch"]  # a sibling may have begun a new one after a lapse
            return True
        # nobody beat for ttl: that epoch is over, events may have been lost (or the
        # lease holds what no keeper wrote: replace it)
        self._begin(force=bool(kept))
        return self.epoch is not None

    def _run(self) -> None:
        while not self._stop.wait(self.beat):
            self._beat()

    def stop(self) -> None:
        """Leave the stream; the last keeper ends the epoch now (clients fall back to
        the state rules at once), while siblings beating keep it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        lease, _, dead = self.keys
        member = self._member_prefix + self.member

        def leave(c: Any) -> Any:
            pipe = c.pipeline(transaction=False)
            pipe.delete(member)
            pipe.srem(self._members, self.member)
            pipe.smembers(self._members)
            return pipe.execute()[2]

        others = self.cache.redis.run(leave, "lease end")
        if others is not FAILED and others:
            names = _names(others)
            alive = self.cache.redis.run(lambda c: c.exists(*(self._member_prefix + m for m in names)), "lease end")
            if alive not in (FAILED, 0):
                return
        epoch = self.epoch
        if epoch is None:
            return

        def end(c: Any) -> Any:
            current = _decode(c.get(lease))
            if current is not None and current["epoch"] == epoch:
                c.delete(lease)
            return _end_epoch(c, dead, epoch)

        if self.cache.redis.run(end, "lease end") is True:
            self.cache.invalidate_tags(lease_tag(self.mistral_url))


class LeaseWatch:
    """The reading side, one per (cache, server) in a process: a daemon thread reads
    the lease every ``interval`` and ends epochs it sees lapse; :meth:`live` and
    :meth:`covered` read memory only."""

    def __init__(self, cache: Any, mistral_url: str, *, interval: float = BEAT, event_ttl: float = EVENT_TTL) -> None:
        # A weak reference: the watch (and its thread) ends with the cache it serves.
        self._cache = weakref.ref(cache)
        self.mistral_url, self.interval, self.event_ttl = mistral_url, interval, event_ttl
        self.keys = lease_keys(cache.keyspace.base, mistral_url)
        self.tag = lease_tag(mistral_url)
        self.epoch: str | None = None
        self.urls: tuple[str, ...] = ()
        self.live_until = 0.0
        self.lapses = 0
        self._executions: OrderedDict[str, bool] = OrderedDict()  # ids known to send us events
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.started = False

    def ensure(self) -> None:
        """Start watching (the first read of the process calls it). The first look is
        made here, once per process, so the read that starts the watch already knows
        whether the stream is live: otherwise what the process fetches in its first
        ``interval`` would take the state rules' TTLs and be fetched again when they end."""
        if self._thread is None:
            try:  # outside the lock: a slow Redis must not queue every thread's first read behind it
                self.check()
            except Exception:  # the thread will try again; meanwhile, state rules
                log.exception("lease watch")
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="mistral-cache-lease-watch", daemon=True)
                    self._thread.start()
                    self.started = True

    def live(self) -> bool:
        return time.monotonic() < self.live_until - MARGIN

    def _run(self) -> None:
        stop = self._stop
        while not stop.wait(self.interval) and self._cache() is not None:
            try:
                self.check()
            except Exception:  # never let the thread die: a dead watch only means state rules
                log.exception("lease watch")

    def check(self) -> None:
        """One look at the lease (public so tests and tools can step it)."""
        lease, epoch_key, dead = self.keys

        def read(c: Any) -> Any:
            pipe = c.pipeline(transaction=False)
            pipe.get(lease)
            pipe.pttl(lease)
            pipe.get(epoch_key)
            return pipe.execute()

        cache = self._cache()
        if cache is None:
            return
        stop = self._stop  # a stop() while this reads must win: it resets live_until
        t0 = time.monotonic()
        got = cache.redis.run(read, "lease read")
        if stop is not self._stop:
            return
        if got is FAILED:
            self.live_until = 0.0
            return
        raw, pttl, current = got
        current = _text(current)
        data = _decode(raw)
        if data is not None and isinstance(pttl, int) and pttl > 0:
            epoch = data["epoch"]
            if self.epoch is not None and epoch != self.epoch:
                self._end(cache, self.epoch)
            self.epoch, self.urls = epoch, data["urls"]
            self.live_until = t0 + pttl / 1000.0
            return
        self.live_until = 0.0
        for gone in {e for e in (self.epoch, current) if e}:
            self._end(cache, gone)
        self.epoch = None

    def _end(self, cache: Any, epoch: str) -> None:
        dead = self.keys[2]
        if cache.redis.run(lambda c: _end_epoch(c, dead, epoch), "lease end") is True:
            self.lapses += 1
            log.info("event stream of %s ended (epoch %s): entries cached under it dropped", self.tag, epoch)
            cache.invalidate_tags(self.tag)

    # -- which values events cover ------------------------------------------
    def covered(self, value: Any) -> bool:
        """Does every resource in ``value`` send events we receive? Executions whose
        ``params.notify`` names our publisher, and tasks of executions known to."""
        if isinstance(value, list):
            return bool(value) and all(self.covered(v) for v in value)
        if not isinstance(value, Mapping):
            return False
        wx = value.get("workflow_execution_id")
        if isinstance(wx, str):  # a task: covered if its execution's events reach the receiver
            return wx in self._executions or self._sends_events(wx)
        ident = value.get("id")
        if "params" in value and isinstance(ident, str) and notified(value.get("params"), self.urls):
            self._remember(ident)
            return True
        return False

    def _sends_events(self, execution_id: str) -> bool:
        """One Redis EXISTS, on a miss only (the TTL of a value just fetched upstream)."""
        cache = self._cache()
        if cache is None:
            return False
        key = sender_key(cache.keyspace.base, self.mistral_url, execution_id)
        if cache.redis.run(lambda c: c.exists(key), "lease sender") == 1:
            self._remember(execution_id)
            return True
        return False

    def _remember(self, ident: str) -> None:
        with self._lock:
            self._executions[ident] = True
            self._executions.move_to_end(ident)
            while len(self._executions) > 10_000:
                self._executions.popitem(last=False)

    def stop(self) -> None:
        """End the thread; the next :meth:`ensure` (a later read) starts a new one."""
        with self._lock:
            self._stop.set()
            self._stop = threading.Event()
            self._thread = None
            self.started = False
            self.live_until = 0.0


def _text(raw: Any) -> str | None:
    return raw.decode() if isinstance(raw, bytes) else raw


def _names(members: Any) -> set[str]:
    """The member ids of a SMEMBERS reply."""
    return {str(_text(m)) for m in members}


def _decode(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("epoch"), str):
        return None
    urls = data.get("urls")
    data["urls"] = tuple(u for u in urls if isinstance(u, str)) if isinstance(urls, list) else ()
    return data


_WATCHES: weakref.WeakKeyDictionary[Any, dict[str, LeaseWatch]] = weakref.WeakKeyDictionary()
_WATCHES_LOCK = threading.Lock()


def watch_for(cache: Any, mistral_url: str) -> LeaseWatch | None:
    """The process's watch of this cache and server (None: no Redis tier, no lease)."""
    if getattr(cache, "redis", None) is None:
        return None
    with _WATCHES_LOCK:
        per_cache = _WATCHES.setdefault(cache, {})
        watch = per_cache.get(mistral_url)
        if watch is None:
            watch = per_cache[mistral_url] = LeaseWatch(cache, mistral_url)
    return watch
