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
know what it missed: it flushes its local tier when it notices the loss (before
``connected`` clears) and again when it resubscribes; in between, ``local_ttl``
bounds how long an entry filled meanwhile can be served.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .exceptions import ConfigurationError
from .stampede import SingleFlight
from .tiers.local import LocalTier

__all__ = [
    "SEP",
    "IDLE_PING",
    "PONG_TIMEOUT",
    "RECONNECT_MAX",
    "MAX_MESSAGE",
    "TAG_CHUNK",
    "IGNORED",
    "check_tag",
    "message",
    "apply",
    "Listener",
]

log = logging.getLogger("mistral_cache.coherence")

SEP = "\x1f"  # the old framing's tag separator: a str payload of kind "t" is still split on it
IDLE_PING = 5.0  # seconds without traffic before the listener PINGs
PONG_TIMEOUT = 3.0  # seconds to wait for any reply before reconnecting (and flushing)
#: Longest pause between reconnect attempts. Short: until it is subscribed again,
#: this process's local tier misses every invalidation, so it must be back within a
#: fraction of a second of Redis answering; a refused connect costs microseconds.
RECONNECT_MAX = 0.2

#: Largest announcement sent or applied. A sender that would exceed it announces a
#: local flush instead (always correct); a listener ignores anything larger, which
#: only a crafted message can be, so one PUBLISH cannot pin the local tier's lock.
MAX_MESSAGE = 64 * 1024
#: Tags dropped per hold of the local tier's lock: hits wait for one chunk at most.
TAG_CHUNK = 256
#: What :func:`apply` returns for a message it could not read (counted by the listener).
IGNORED = "!"

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def check_tag(tag: object) -> str:
    """A tag fit to name a counter, be announced and be logged: a non-empty str
    without control characters (which once broke the framing and can corrupt a
    terminal). Raises :class:`ConfigurationError`."""
    if not isinstance(tag, str) or not tag or _CONTROL.search(tag):
        raise ConfigurationError(f"tags must be non-empty strings without control characters, got {tag!r}")
    return tag


def message(sender: str, kind: str, payload: str | Sequence[str] = "") -> str:
    """A JSON array ``[sender, kind, payload]``, so no key or tag can forge a field.
    ``kind`` is ``k`` (payload: one key), ``t`` (tags: a list, or a SEP-joined str)
    or ``c`` (clear). One over :data:`MAX_MESSAGE` becomes ``c``: every local tier
    flushes, which is always correct."""
    body: str | list[str] = payload if isinstance(payload, str) else list(payload)
    if kind == "t" and isinstance(body, str):
        body = body.split(SEP)
    data = json.dumps([sender, kind, body], separators=(",", ":"))  # ASCII: even lone surrogates travel
    if len(data) > MAX_MESSAGE:
        return json.dumps([sender, "c", ""], separators=(",", ":"))
    return data


def _parse(data: bytes | str) -> tuple[str, str, Any] | None:
    """``(sender, kind, payload)``, or None for anything that is not a message we send."""
    if len(data) > MAX_MESSAGE:
        return None
    try:
        if data[:1] in (b"[", "["):
            parsed = json.loads(data)
            if isinstance(parsed, list) and len(parsed) == 3 and isinstance(parsed[0], str) and isinstance(parsed[1], str):
                return parsed[0], parsed[1], parsed[2]
            return None
        # The old framing, from processes not yet upgraded: "sender|kind|payload".
        text = data.decode() if isinstance(data, bytes) else data
        sender, kind, payload = text.split("|", 2)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    return sender, kind, payload.split(SEP) if kind == "t" else payload


def apply(local: LocalTier | None, data: bytes | str, own: str, flights: SingleFlight | None = None) -> str | None:
    """Apply one announcement to a local tier (and to ``flights``: a computation in
    flight began before the invalidation, so later callers must not join it);
    returns its kind, None if not ours to apply, or :data:`IGNORED` if unreadable
    (non-UTF-8, oversized, malformed: nothing we sent, so nothing is dropped)."""
    parsed = _parse(data)
    if parsed is None:
        log.debug("ignoring an unreadable invalidation message (%d bytes)", len(data))
        return IGNORED
    sender, kind, payload = parsed
    if sender == own:
        return None  # our own change: already applied, and our fresh entry must stay
    if kind == "k":
        if not isinstance(payload, str):
            return IGNORED
        if local is not None:
            local.delete(payload)
        if flights is not None:
            flights.forget(payload)
    elif kind == "t":
        if not isinstance(payload, list) or not all(isinstance(t, str) for t in payload):
            return IGNORED
        for i in range(0, len(payload), TAG_CHUNK):  # the lock is released between chunks
            if local is not None:
                local.delete_tags(payload[i:i + TAG_CHUNK])
        if flights is not None:
            flights.forget_all()  # flights do not know their tags: forget them all
    elif kind == "c":
        if local is not None:
            local.clear()
        if flights is not None:
            flights.forget_all()
    else:
        return None  # a kind from a newer version
    return kind


class Listener:
    """The subscriber thread. ``pubsub_factory()`` returns a redis-py PubSub (sync)."""

    def __init__(
        self,
        pubsub_factory: Callable[[], Any],
        channel: str,
        local: LocalTier | None,
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
        self.ignored = 0  # unreadable messages: crafted, never ours

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
        if self.local is not None:
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
                        kind = apply(self.local, msg["data"], self.sender, self.flights)  # never raises on bad bytes
                        self.received += 1
                        if kind == IGNORED:
                            self.ignored += 1
                        # Every message but a single key's (unreadable, unknown, our own
                        # included) may stand for a counter bump: observers hear it too.
                        self._event(kind or "?")
            except Exception as exc:  # any failure: resubscribe after a backoff
                if self._stop.is_set():
                    break
                if self.connected.is_set():
                    log.warning("invalidation listener lost its connection (%s); flushing the local tier", type(exc).__name__)
                    # Once, at the loss, and before `connected` clears: whoever sees it
                    # clear finds the tier flushed. Failed attempts to resubscribe do not
                    # flush again: what is filled meanwhile (a creator's value while Redis
                    # is down) is served up to local_ttl and goes at the resubscribe flush.
                    self._flush()
                    self.connected.clear()
                self.reconnects += 1
                self._event("disconnected")
                self._stop.wait(delay * (0.5 + random.random()))
                delay = min(delay * 2, RECONNECT_MAX)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass
        self.connected.clear()
