"""Coherence of the local tiers: every invalidation, tag bump, clear and
overwrite is announced on one pub/sub channel per namespace; a daemon thread per
:class:`~mistral_cache.Cache` applies what others announce to its local tier.

Why pub/sub and not RESP3 client-side tracking: tracking invalidates by Redis
key, but our local entries are also dropped by *tag* and by *namespace clear*,
which are counter bumps that tracking would only report as a change of the
counter key, not as the entries depending on it; pub/sub carries our own
compact messages, works the same on standalone Redis, Sentinel and Cluster,
and costs one PUBLISH pipelined with the write that needs it.

Guarantee: while the listener is subscribed, an invalidation that returned is
applied by every other subscribed process within the pub/sub delivery delay
(about a millisecond on loopback). A listener that loses its connection cannot
know what it missed: it flushes its local tier when it reconnects, and until
then ``local_ttl`` bounds how long a local entry can be served.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from .stampede import SingleFlight
from .tiers.local import LocalTier

log = logging.getLogger("mistral_cache.coherence")

SEP = "\x1f"
IDLE_PING = 5.0  # seconds without traffic before the listener PINGs
PONG_TIMEOUT = 3.0  # seconds to wait for any reply before reconnecting (and flushing)


def message(sender: str, kind: str, payload: str = "") -> str:
    """``kind`` is ``k`` (one key), ``t`` (tags, SEP-joined) or ``c`` (clear)."""
    return f"{sender}|{kind}|{payload}"


def apply(local: LocalTier, data: str, own: str, flights: SingleFlight | None = None) -> str | None:
    """Apply one announcement to a local tier (and to ``flights``: a computation in
    flight began before the invalidation, so later callers must not join it);
    returns its kind, or None if ignored."""
    try:
        sender, kind, payload = data.split("|", 2)
    except ValueError:
        log.warning("ignoring malformed invalidation message")
        return None
    if sender == own:
        return None  # our own change: already applied, and our fresh entry must stay
    if kind == "k":
        local.delete(payload)
        if flights is not None:
            flights.forget(payload)
    elif kind in ("t", "c"):
        if kind == "t":
            local.delete_tags(payload.split(SEP))
        else:
            local.clear()
        if flights is not None:
            flights.forget_all()  # flights do not know their tags: forget them all
    else:
        return None
    return kind


class Listener:
    """The subscriber thread. ``pubsub_factory()`` returns a redis-py PubSub (sync)."""

    def __init__(
        self,
        pubsub_factory: Callable[[], Any],
        channel: str,
        local: LocalTier,
        sender: str,
        *,
        on_event: Callable[[str], None] | None = None,
        flights: SingleFlight | None = None,
    ) -> None:
        self._factory = pubsub_factory
        self.flights = flights
        self.channel = channel
        self.local = local
        self.sender = sender
        self._on_event = on_event
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._start_lock = threading.Lock()
        self.reconnects = 0
        self.received = 0

    def ensure_started(self) -> None:
        if self._thread is not None and self._pid == os.getpid():
            return
        with self._start_lock:
            if self._thread is not None and self._pid == os.getpid():
                return
            self.connected.clear()  # a forked child inherits no thread and no subscription
            self._stop.clear()
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name=f"mistral-cache-listener:{self.channel}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2)

    def _flush(self) -> None:
        self.local.clear()
        if self.flights is not None:
            self.flights.forget_all()

    def _event(self, kind: str) -> None:
        if self._on_event is not None:
            self._on_event(kind)

    def _run(self) -> None:
        delay = 0.05
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = self._factory()
                pubsub.subscribe(self.channel)
                while not self._stop.is_set():  # wait for the confirmation
                    msg = pubsub.get_message(timeout=1.0)
                    if msg is not None and msg.get("type") in ("subscribe", "ssubscribe"):
                        break
                # Anything announced before this point may have been missed.
                self._flush()
                self.connected.set()
                self._event("connected")
                delay = 0.05
                last_seen = time.monotonic()
                pinged_at: float | None = None
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=1.0)
                    now = time.monotonic()
                    if msg is None:
                        # Notice a silently dead or frozen server: PING when idle, and
                        # give up on the connection if nothing (not even PONG) comes back.
                        if pinged_at is not None and now - pinged_at > PONG_TIMEOUT:
                            raise ConnectionError(f"no reply to PING within {PONG_TIMEOUT}s")
                        if pinged_at is None and now - last_seen > IDLE_PING:
                            pubsub.ping()
                            pinged_at = now
                        continue
                    last_seen, pinged_at = now, None
                    if msg.get("type") in ("message", "smessage"):
                        data = msg["data"]
                        kind = apply(self.local, data.decode() if isinstance(data, bytes) else data, self.sender, self.flights)
                        self.received += 1
                        if kind:
                            self._event(kind)
            except Exception as exc:  # any failure: resubscribe after a backoff
                if self._stop.is_set():
                    break
                if self.connected.is_set():
                    log.warning("invalidation listener lost its connection (%s); flushing the local tier", type(exc).__name__)
                self.connected.clear()
                self._flush()
                self.reconnects += 1
                self._event("disconnected")
                self._stop.wait(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass
        self.connected.clear()
