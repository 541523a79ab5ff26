"""The freshness lease: event-backed TTLs only while the event stream is healthy.

A receiver (or the publisher plugin) keeps, per namespace and Mistral server:

- ``ev:<server>:lease``: a heartbeat (expires ``LEASE_TTL`` after the last beat)
  holding the current epoch and the publisher's identity (webhook URLs);
- ``ev:<server>:epoch``: the epoch of the stream now, kept past a lapse;
- ``ev:<server>:dead:<epoch>``: set once (``NX``) by whoever sees that epoch end.

Every entry cached under a lease carries the tag :func:`lease_tag`. Whoever first
sees an epoch end -- the receiver restarting, or any client's :class:`LeaseWatch`
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
    """The writing side: a new epoch at start (ending the previous one), then a heartbeat."""

    def __init__(self, cache: Any, mistral_url: str, urls: Iterable[str] = (), *, beat: float = BEAT,
                 ttl: float = LEASE_TTL) -> None:
        if cache.redis is None:
            raise ValueError("a lease needs a Redis tier")
        self.cache, self.mistral_url, self.beat, self.ttl = cache, mistral_url, beat, ttl
        self.keys = lease_keys(cache.keyspace.base, mistral_url)
        self.epoch = secrets.token_hex(8)
        self.value = json.dumps({"epoch": self.epoch, "urls": sorted(set(urls))})
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.beats_failed = 0

    def start(self) -> LeaseKeeper:
        lease, epoch_key, dead = self.keys
        epoch = self.epoch

        def op(c: Any) -> Any:
            old = c.getset(epoch_key, epoch)
            return old.decode() if isinstance(old, bytes) else old

        old = self.cache.redis.run(op, "lease epoch")
        if old is not FAILED and old and old != self.epoch:
            # The previous stream ended (maybe unnoticed): events may have been lost since.
            if self.cache.redis.run(lambda c: _end_epoch(c, dead, old), "lease end") is True:
                self.cache.invalidate_tags(lease_tag(self.mistral_url))
        self._beat()
        self._thread = threading.Thread(target=self._run, name="mistral-cache-lease", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> bool:
        lease = self.keys[0]
        ok = self.cache.redis.run(lambda c: c.set(lease, self.value, px=int(self.ttl * 1000)), "lease beat")
        if ok is FAILED:
            self.beats_failed += 1
            return False
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.beat):
            self._beat()

    def stop(self) -> None:
        """End the epoch now: clients fall back to the state rules at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        lease, _, dead = self.keys

        def op(c: Any) -> Any:
            c.delete(lease)
            return _end_epoch(c, dead, self.epoch)

        if self.cache.redis.run(op, "lease end") is True:
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
        current = current.decode() if isinstance(current, bytes) else current
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
