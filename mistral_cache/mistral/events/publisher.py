"""The publisher plugin: Mistral's notifier invalidates straight into Redis, no HTTP hop.

Registered under the stevedore namespace ``mistral.notification.publishers`` as
``mistral_cache``; operators add ``{"type": "mistral_cache"}`` to ``[notifier]
notify`` and install ``mistral-cache[events]`` into Mistral's environment. Its
settings come from its own file on the Mistral host (never from ``notify``
params, which every reader of an execution sees): ``$MISTRAL_CACHE_PUBLISHER_CONFIG``
or ``/etc/mistral/mistral-cache.conf``::

    [publisher]
    redis_url = redis://10.0.0.5:6379/0
    namespace = mistral
    mistral_url = http://mistral.internal:8989/v2   ; exactly as the clients spell it

The mapping is the receiver's (:func:`.mapping.tags_for`); a malformed event is
logged and ignored (the engine must not fail a workflow over its cache). One
thing the plugin knows that the receiver cannot: whether a finished task
published a global variable (:mod:`.task_spec`, from the engine's own spec cache), so
a task that did not leaves its execution cached (``kept_executions``). Its
counters have the receiver's names (``events.<TYPE>``, ``rejected.event``,
``invalidations``) and are published every 10 s for ``mistral-cache stats``.

Mistral's engine may load the plugin several times (its first events race to
load it; one engine counts as several receivers otherwise): instances of one
process with the same settings share one Cache, one set of counters, one lease
keeper and one stats publisher, which the last instance's ``close`` stops.
"""

from __future__ import annotations

import configparser
import logging
import os
import threading
from dataclasses import replace
from typing import Any

from ...cache import Cache
from ...observability.publisher import StatsPublisher, add_section
from ...policies import Timeouts
from .lease import PLUGIN_TYPE, LeaseKeeper
from .mapping import COUNTERS, FINISHING, EventError, parse_event, tags_for
from .receiver import mark_sender
from .task_spec import publishes_global

__all__ = ["DEFAULT_CONFIG", "Publisher"]

log = logging.getLogger("mistral_cache.mistral.events")

DEFAULT_CONFIG = "/etc/mistral/mistral-cache.conf"


_Config = tuple[str, str, str]  # (redis_url, namespace, mistral_url)


def _settings(config: str | None) -> _Config:
    path = config or os.environ.get("MISTRAL_CACHE_PUBLISHER_CONFIG") or DEFAULT_CONFIG
    parser = configparser.ConfigParser()
    if not parser.read(path):
        raise RuntimeError(f"mistral_cache publisher: cannot read {path}")
    section = parser["publisher"]
    return section["redis_url"], section.get("namespace", "default"), section["mistral_url"].rstrip("/")


class Publisher:
    """``publish(ctx, ex_id, data, event, timestamp, **kwargs)``, as Mistral calls it;
    a handle on the process's :class:`PublisherCore` publisher for its settings."""

    _shared: dict[_Config, tuple[PublisherCore, int]] = {}  # settings -> (the publisher, its open handles)
    _shared_lock = threading.Lock()

    def __init__(self, config: str | None = None) -> None:
        self._settings = _settings(config)
        with Publisher._shared_lock:
            shared, handles = Publisher._shared.get(self._settings) or (PublisherCore(*self._settings), 0)
            Publisher._shared[self._settings] = (shared, handles + 1)
        self._core: PublisherCore | None = shared

    @property
    def core(self) -> PublisherCore:
        if self._core is None:
            raise RuntimeError("mistral_cache publisher: closed")
        return self._core

    @property
    def counts(self) -> dict[str, int]:
        return self.core.counters(raw=True)

    def publish(self, ctx: Any, ex_id: Any, data: Any, event: Any, timestamp: Any, **kwargs: Any) -> None:
        self.core.publish(data, event, ex_id)

    def close(self) -> None:
        """Release this handle; the last one stops the lease and publishes the last counts."""
        with Publisher._shared_lock:
            core, self._core = self._core, None
            if core is None:
                return
            shared, handles = Publisher._shared[self._settings]
            if handles > 1:
                Publisher._shared[self._settings] = (shared, handles - 1)
                return
            del Publisher._shared[self._settings]
        core.close()


class PublisherCore:
    """One process's publisher for one set of settings."""

    def __init__(self, redis_url: str, namespace: str, mistral_url: str) -> None:
        self.mistral_url = mistral_url
        self.cache = Cache(redis_url, namespace=namespace, local=None, lock=None, refresh=None,
                           timeouts=Timeouts(socket=0.25, connect=0.25))
        self.counts: dict[str, int] = {}
        self._lease: LeaseKeeper | None = None
        self._stats: StatsPublisher | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._lease_lock = threading.Lock()  # not the counters': starting a lease may wait one beat
        add_section(self.cache, "events", self.counters)

    def counters(self, raw: bool = False) -> dict[str, int]:
        """As the receiver's: ``events.<TYPE>``, ``rejected.event``, ``invalidations``...
        (``raw``: only those counted so far)."""
        with self._lock:
            counts = dict(self.counts)
        if raw:
            return counts
        for name in COUNTERS:
            counts.setdefault(name, 0)
        return counts

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] = self.counts.get(name, 0) + n

    def _ensure_lease(self) -> None:
        if self._lease is None:
            with self._lease_lock:
                if self._lease is None and not self._closed:  # a publish racing the last close starts nothing
                    self._lease = LeaseKeeper(self.cache, self.mistral_url, (f"{PLUGIN_TYPE}:",)).start()
                    self._stats = StatsPublisher(self.cache).start()

    def publish(self, data: Any, event: Any, ex_id: Any) -> None:
        try:
            ev = parse_event(data, event)
        except EventError as exc:
            log.warning("mistral_cache publisher: ignored event %s of %s: %s", str(event)[:40], ex_id, exc)
            self._count("rejected.event")
            return
        if ev.kind in FINISHING and publishes_global(ev.workflow_execution_id or "", ev.name, ev.state) is False:
            ev = replace(ev, execution_kept=True)
            self._count("kept_executions")
        tags = tags_for(ev, self.mistral_url)
        if not self.cache.invalidate_tags(*tags):
            self._count("unacknowledged")
        mark_sender(self.cache, self.mistral_url, ev)
        self._count("events." + ev.kind)
        self._count("invalidations", len(tags))
        # After the invalidation: joining a lease another engine keeps waits one beat.
        self._ensure_lease()

    def close(self) -> None:
        with self._lease_lock:
            self._closed = True
        if self._lease is not None:
            self._lease.stop()
        if self._stats is not None:
            self._stats.stop()  # publishes the last counts
        self.cache.close()
