"""Running the receiver: everything ``mistral-cache events serve`` wires together.

:func:`build` makes the :class:`~.receiver.Receiver` (with its lease and its
reconciliation) from :class:`Settings`; :func:`serve` runs it under waitress
(pure Python, threaded, no C build), bound where the operator says -- an
internal address, not a public one. For gunicorn or uwsgi, point them at
``mistral_cache.mistral.events.serve:application``, configured from the
environment (``MISTRAL_CACHE_EVENTS_*``, see :func:`settings_from_env`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ...cache import Cache
from ...observability.publisher import StatsPublisher
from ...policies import Timeouts
from .definitions import Definitions
from .lease import LeaseKeeper
from .receiver import MAX_BODY, RateLimit, Receiver, load_token
from .reconcile import INTERVAL, Reconciler

__all__ = ["Running", "Settings", "application", "build", "serve", "settings_from_env"]

log = logging.getLogger("mistral_cache.mistral.events")


@dataclass(frozen=True)
class Settings:
    redis_url: str
    mistral_url: str
    token: bytes = field(repr=False)
    namespace: str = "default"
    listen: str = "127.0.0.1:8787"
    notify_urls: tuple[str, ...] = ()  # what Mistral posts to (default http://<listen>/events)
    allow: tuple[str, ...] = ()
    rate: float = 200.0
    burst: float = 400.0
    max_body: int = MAX_BODY
    reconcile: float = INTERVAL  # 0: off
    definitions: bool = True  # learn which workflows publish no global variable (.definitions)
    keystone: dict[str, str] | None = field(default=None, repr=False)  # admin credentials for reconciliation
    threads: int = 8
    discard: float = 0.0  # tests only: answer 200 to this fraction of events and drop them
    stats_interval: float = 10.0  # seconds between snapshots published for `mistral-cache stats` (0: off)
    metrics_listen: str | None = None  # HOST:PORT of a Prometheus /metrics endpoint (None: none)
    trace: str | None = None  # benchmarks only: a JSON line per event applied, to this file


@dataclass
class Running:
    receiver: Receiver
    lease: LeaseKeeper
    reconciler: Reconciler | None
    stats: StatsPublisher | None = None
    definitions: Definitions | None = None

    def stop(self) -> None:
        if self.reconciler is not None:
            self.reconciler.stop()
        if self.definitions is not None:
            self.definitions.stop()
        self.lease.stop()
        if self.stats is not None:
            self.stats.stop()  # publishes the last counts


def _mistral_client(s: Settings) -> Any:
    """The receiver's own client. With Keystone, through a keystoneauth session built
    here: python-mistralclient's keyword authentication reads the password from
    ``api_key`` and silently goes unauthenticated given ``password``."""
    from mistralclient.api import client

    if s.keystone:
        from keystoneauth1 import session
        from keystoneauth1.identity import v3

        k = s.keystone
        auth = v3.Password(auth_url=k["url"], username=k["username"], password=k["password"],
                           project_name=k.get("project", "admin"), user_domain_name="Default",
                           project_domain_name="Default")
        return client.client(mistral_url=s.mistral_url, session=session.Session(auth=auth))
    return client.client(mistral_url=s.mistral_url)


def build(s: Settings) -> Running:
    """The receiver, its lease (started: a new epoch), its reconciliation, its
    definition checks, the publisher of its counters (``mistral-cache stats``) and,
    if asked, ``/metrics``."""
    # Short timeouts: Mistral's engine waits for our answer to each POST.
    cache = Cache(s.redis_url, namespace=s.namespace, local=None, lock=None, refresh=None,
                  timeouts=Timeouts(socket=0.25, connect=0.25))
    urls = s.notify_urls or (f"http://{s.listen}/events",)
    lease = LeaseKeeper(cache, s.mistral_url, urls)
    mistral = _mistral_client(s) if s.definitions or s.reconcile > 0 else None  # one session, one token
    definitions = Definitions(mistral).start() if s.definitions else None
    receiver = Receiver(cache, s.mistral_url, s.token, max_body=s.max_body, rate=RateLimit(s.rate, s.burst),
                        allow=s.allow, lease=lease, definitions=definitions, discard=s.discard, trace=s.trace)
    lease.start()
    reconciler = Reconciler(mistral, receiver, s.reconcile).start() if s.reconcile > 0 else None
    stats = StatsPublisher(cache, s.stats_interval).start() if s.stats_interval > 0 else None
    if s.metrics_listen:
        from ...observability.metrics import start_http_server

        host, _, port = s.metrics_listen.rpartition(":")
        start_http_server(int(port), cache, addr=host or "127.0.0.1")
    return Running(receiver, lease, reconciler, stats, definitions)


def serve(s: Settings, ready: threading.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT; prints ``listening on http://HOST:PORT`` once bound."""
    import waitress

    running = build(s)
    server: Any = waitress.create_server(
        running.receiver, listen=s.listen, threads=s.threads, max_request_body_size=2 * s.max_body,  # beyond: waitress refuses it
        ident="mistral-cache-events", clear_untrusted_proxy_headers=True, channel_timeout=30,
    )
    host, port = server.effective_host, server.effective_port
    print(f"listening on http://{host}:{port}", flush=True)
    if ready is not None:
        ready.set()

    def stop(signum: int, frame: Any) -> None:
        server.close()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.run()
    except OSError:  # the socket closed by the signal handler
        pass
    finally:
        running.stop()
    return 0


def settings_from_env(env: dict[str, str] | None = None) -> Settings:
    """Settings from ``MISTRAL_CACHE_EVENTS_{REDIS_URL,MISTRAL_URL,NAMESPACE,TOKEN_FILE,ALLOW,RECONCILE,DEFINITIONS}``
    (``DEFINITIONS=0``: no definition checks)."""
    e = os.environ if env is None else env
    p = "MISTRAL_CACHE_EVENTS_"
    return Settings(
        redis_url=e[p + "REDIS_URL"], mistral_url=e[p + "MISTRAL_URL"], namespace=e.get(p + "NAMESPACE", "default"),
        token=load_token(e.get(p + "TOKEN_FILE"), dict(e)),
        allow=tuple(a for a in e.get(p + "ALLOW", "").split(",") if a),
        reconcile=float(e.get(p + "RECONCILE", INTERVAL)),
        definitions=e.get(p + "DEFINITIONS", "1").strip().lower() not in ("0", "false", "no", "off"),
        notify_urls=tuple(u for u in e.get(p + "NOTIFY_URL", "").split(",") if u),
    )


_APP: Running | None = None
_APP_LOCK = threading.Lock()


def application(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    """The WSGI entry point for an external server, built on its first request."""
    global _APP
    if _APP is None:
        with _APP_LOCK:
            if _APP is None:
                _APP = build(settings_from_env())
    return _APP.receiver(environ, start_response)
