"""The webhook receiver: a WSGI app turning Mistral's notifications into invalidations.

Mistral's notifier (``[notifier] type = local``) waits for each POST, so the app
answers as soon as the invalidation is sent (Redis calls bounded by the cache's
short timeouts; one Redis did not acknowledge is kept and replayed, see
``Cache.invalidate_tags``). The webhook's token travels in every execution's
``params`` (readable by whoever can read the execution), so it is low-trust:
the app only ever *invalidates* -- a forged event costs refetches, never wrong
data -- and is rate-limited, optionally restricted to source networks.

Routes: ``POST /events`` (200, or a 4xx naming the problem with nothing
invalidated; 200 and not 202 because Mistral's webhook publisher counts anything
but 200/201 as a failure and logs an error with a traceback for it) and ``GET /health`` (counters and the lease). The counters also
travel with the cache's statistics (section ``events``): ``mistral-cache
stats`` and the Prometheus collector show them. Both need
``Authorization: Bearer <token>``, compared in constant time.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import random
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

from .definitions import Definitions
from .lease import SENDER_TTL, sender_key
from .mapping import FINISHING, RECEIVER_COUNTERS, Event, EventError, parse_event, tags_for

__all__ = ["MAX_BODY", "RateLimit", "Receiver", "load_token", "mark_sender"]

log = logging.getLogger("mistral_cache.mistral.events")

#: A notification is about 1 KiB; ``state_info`` of a failure can be longer.
MAX_BODY = 256 * 1024
MIN_TOKEN = 16

StartResponse = Callable[..., Any]


def load_token(path: str | None, env: dict[str, str] | None = None, name: str = "MISTRAL_CACHE_EVENTS_TOKEN") -> bytes:
    """The shared secret: the first line of ``path``, else ``$MISTRAL_CACHE_EVENTS_TOKEN``
    (never a command-line argument, which any local user can read in ``ps``)."""
    import os

    text = None
    if path:
        with open(path, encoding="utf-8") as f:
            text = f.readline().strip()
    else:
        text = (env if env is not None else os.environ).get(name, "").strip()
    if not text or len(text) < MIN_TOKEN:
        raise ValueError(f"the events token must be at least {MIN_TOKEN} characters (from --token-file or ${name})")
    return text.encode()


def mark_sender(cache: Any, mistral_url: str, event: Event) -> None:
    """Remember that this event's execution sends us events (its tasks get event-backed TTLs)."""
    execution = event.workflow_execution_id if event.is_task else event.id
    if execution and cache.redis is not None:
        key = sender_key(cache.keyspace.base, mistral_url, execution)
        cache.redis.run(lambda c: c.set(key, "1", ex=SENDER_TTL), "events sender")


class RateLimit:
    """A token bucket per source address (``rate`` per second, ``burst`` at once):
    a flood of forged events cannot turn into a flood of refetches."""

    def __init__(self, rate: float = 200.0, burst: float = 400.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, source: str) -> bool:
        now = self.clock()
        with self._lock:
            level, then = self._buckets.pop(source, (self.burst, now))
            level = min(self.burst, level + (now - then) * self.rate)
            ok = level >= 1.0
            self._buckets[source] = (level - 1.0 if ok else level, now)
            while len(self._buckets) > 4096:
                self._buckets.popitem(last=False)
        return ok


class Receiver:
    """The WSGI application (importable for gunicorn/uwsgi through :mod:`.serve`).

    ``cache``: a :class:`~mistral_cache.Cache` on the clients' Redis and namespace.
    ``mistral_url``: the API URL exactly as the clients spell it (it is in the scope).
    ``token``: the bearer secret. ``allow``: source networks (empty: any).
    ``lease``: a :class:`~.lease.LeaseKeeper` reported by ``/health``.
    ``definitions``: started :class:`~.definitions.Definitions`; a finished task it
    knows publishes no global variable leaves its execution cached.
    """

    def __init__(self, cache: Any, mistral_url: str, token: bytes, *, max_body: int = MAX_BODY,
                 rate: RateLimit | None = None, allow: Iterable[str] = (), lease: Any = None,
                 definitions: Definitions | None = None, discard: float = 0.0, trace: str | None = None) -> None:
        self.cache, self.mistral_url, self.max_body = cache, mistral_url, max_body
        self._expected = b"Bearer " + token
        self.rate = rate or RateLimit()
        self.allow = tuple(ipaddress.ip_network(a, strict=False) for a in allow)
        self.lease, self.definitions = lease, definitions
        self.discard = discard  # tests of reconciliation: events "lost" on purpose
        self.counts: Counter[str] = Counter()  # events by type, invalidations, rejects by reason...
        self.seen: OrderedDict[str, str | None] = OrderedDict()  # id -> last state an event told
        self._lock = threading.Lock()
        from ...observability.publisher import add_section

        add_section(cache, "events", self.counters)  # published with the cache's stats, scraped with them
        # Benchmarks only: one JSON line per event applied (when it came, when Redis answered).
        self._trace = open(trace, "a", encoding="utf-8", buffering=1) if trace else None  # noqa: SIM115

    # -- WSGI --------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        status, body = self.handle(environ)
        payload = json.dumps(body, separators=(",", ":")).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
        if status.startswith("401"):
            headers.append(("WWW-Authenticate", 'Bearer realm="mistral-cache events"'))
        start_response(status, headers)
        return iter([payload])

    def handle(self, environ: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        source = str(environ.get("REMOTE_ADDR") or "")
        if self.allow and not self._allowed(source):
            return self._reject("403 Forbidden", "source", "source address not allowed")
        if not self.rate.allow(source):
            return self._reject("429 Too Many Requests", "rate", "rate limit exceeded")
        method, path = environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")
        if path not in ("/events", "/health"):
            return self._reject("404 Not Found", "path", "no such endpoint")
        if not self._authenticated(environ):
            return self._reject("401 Unauthorized", "auth", "missing or wrong bearer token")
        if path == "/health":
            if method != "GET":
                return self._reject("405 Method Not Allowed", "method", "GET /health")
            return "200 OK", self.health()
        if method != "POST":
            return self._reject("405 Method Not Allowed", "method", "POST /events")
        raw = self._body(environ)
        if raw is None:
            return self._reject("413 Content Too Large", "size", f"body over {self.max_body} bytes")
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return self._reject("400 Bad Request", "json", "body is not JSON")
        try:
            event = parse_event(data)
        except EventError as exc:
            return self._reject("422 Unprocessable Content", "event", str(exc))
        if self.discard and random.random() < self.discard:
            with self._lock:
                self.counts["discarded"] += 1
            return "200 OK", {"event": event.kind, "id": event.id, "acknowledged": False}
        acked = self.apply(event)
        return "200 OK", {"event": event.kind, "id": event.id, "acknowledged": acked}

    def _allowed(self, source: str) -> bool:
        try:
            addr = ipaddress.ip_address(source)
        except ValueError:
            return False
        return any(addr in net for net in self.allow)

    def _authenticated(self, environ: dict[str, Any]) -> bool:
        given = str(environ.get("HTTP_AUTHORIZATION") or "").encode("latin-1", "replace")
        return hmac.compare_digest(given, self._expected)

    def _body(self, environ: dict[str, Any]) -> bytes | None:
        """The body, or None when it is over the cap (read no further than cap + 1)."""
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > self.max_body:
            return None
        stream = environ.get("wsgi.input")
        if stream is None:
            return b""
        raw: bytes = stream.read(self.max_body + 1 if length <= 0 else length)
        return None if len(raw) > self.max_body else raw

    def _reject(self, status: str, reason: str, message: str) -> tuple[str, dict[str, Any]]:
        with self._lock:
            self.counts[f"rejected.{reason}"] += 1
        return status, {"error": message}

    # -- what an event does ----------------------------------------------------
    def apply(self, event: Event, *, missed: bool = False) -> bool:
        """Invalidate what ``event`` changes, in one call (one pipeline); True when
        Redis acknowledged it (False: kept by the cache and replayed)."""
        kept = False
        if self.definitions is not None and not missed:
            if event.kind == "WORKFLOW_LAUNCHED":
                self.definitions.launched(event.id)
            elif event.kind in FINISHING and self.definitions.keeps_execution(event.workflow_execution_id, event.name):
                event, kept = replace(event, execution_kept=True), True
        tags = tags_for(event, self.mistral_url)
        began = time.time()
        acked = bool(self.cache.invalidate_tags(*tags))
        if self._trace is not None:
            self._trace_line(event, began, missed)
        if not missed:
            mark_sender(self.cache, self.mistral_url, event)
        with self._lock:
            self.counts[f"events.{event.kind}"] += 0 if missed else 1
            self.counts["missed_events"] += 1 if missed else 0
            self.counts["invalidations"] += len(tags)
            self.counts["unacknowledged"] += 0 if acked else 1
            self.counts["kept_executions"] += 1 if kept else 0
            self.seen[event.id] = event.state
            self.seen.move_to_end(event.id)
            while len(self.seen) > 100_000:
                self.seen.popitem(last=False)
        return acked

    def _trace_line(self, event: Event, began: float, missed: bool) -> None:
        line = json.dumps({"got": began, "done": time.time(), "kind": event.kind, "id": event.id,
                           "task": event.is_task, "wx": event.workflow_execution_id, "state": event.state,
                           "missed": missed})
        trace = self._trace
        if trace is not None:
            with self._lock:
                trace.write(line + "\n")

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def last_state(self, ident: str) -> str | None:
        with self._lock:
            return self.seen.get(ident, "?")

    def counters(self) -> dict[str, int]:
        """Flat counters for ``mistral-cache stats``, the Prometheus collector and
        ``/health``: ``events.<TYPE>``, ``rejected.<reason>``, ``invalidations``,
        ``missed_events``, ``unacknowledged``, ``discarded``, ``kept_executions``, and
        the requests this process made to Mistral: ``reconcile_requests`` and
        ``definition_requests`` (all these always present), and
        ``definition_failures`` and ``definition_lookups`` (batches answered) when
        the definition checks are on."""
        with self._lock:
            counts = {k: v for k, v in self.counts.items() if v}
        if self.definitions is not None:
            counts["definition_requests"] = self.definitions.requests
            counts["definition_failures"] = self.definitions.failures
            counts["definition_lookups"] = self.definitions.lookups
        for name in RECEIVER_COUNTERS:
            counts.setdefault(name, 0)
        return counts

    def health(self) -> dict[str, Any]:
        lease = self.lease
        return {
            "ok": True, "counts": self.counters(),
            "lease": None if lease is None else {"epoch": lease.epoch, "beats_failed": lease.beats_failed},
            "pending": self.cache.pending.summary() if self.cache.redis is not None else None,
        }
