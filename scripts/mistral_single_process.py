"""Run a whole Mistral server (API, engine, executor, notifier, event engine,
periodic tasks) in ONE process, for tests on a machine without RabbitMQ.

Run it with the Python of the Mistral virtualenv (``scripts/mistral-server
start --backend sqlite`` does)::

    <venv>/bin/python scripts/mistral_single_process.py --config-file mistral.conf

Why one process: with ``transport_url = fake:/`` oslo.messaging keeps its
queues in memory, so the API's RPC calls reach the engine only when both live
in the same process (``mistral-server --server all`` forks them apart and every
call times out). Mistral's own engine tests run the services the same way.
The executor and the notifier run inside the engine (``[executor] type =
local``, ``[notifier] type = local``). Mistral's SQLite row locks are
in-process locks too (``mistral.db.sqlalchemy.sqlite_lock``), one more reason
for a single process.

The schema is created with the models' ``metadata.create_all`` (the alembic
migrations use ALTER statements SQLite does not support), then the standard
actions and workflows are loaded, as ``mistral-db-manage populate`` does.
"""

# Mistral's entry points pick oslo.service's threading backend before anything
# imports oslo_service.service; importing mistral.cmd does exactly that.
import logging as logging_module
import os
import queue
import signal
import sqlite3
import sys
import threading
import time
import traceback

import mistral.cmd  # noqa: F401  (side effect: threading backend)
from mistral import config, version
from mistral.api import service as api_service
from mistral.db.v2 import api as db_api
from mistral.engine import engine_server
from mistral.event_engine import event_engine_server
from mistral.rpc import base as rpc
from mistral.services import action_manager, periodic_server, workflows
from oslo_config import cfg
from oslo_log import log as logging
from oslo_messaging import opts as messaging_opts

CONF = cfg.CONF
LOG = logging.getLogger("mistral_single_process")


def _force_single_process_options():
    # Whatever the config file says, these are what make one process work.
    # transport_url belongs to oslo.messaging, which registers it lazily.
    for group, opts in messaging_opts.list_opts():
        if group in (None, "DEFAULT"):
            CONF.register_opts(opts)
    CONF.set_override("transport_url", "fake:/")
    CONF.set_override("type", "local", group="executor")
    CONF.set_override("type", "local", group="notifier")
    # Cron triggers are processed by the periodic server started below, not
    # by the API (that path is deprecated and would run the loop twice).
    CONF.set_override("run_in_api", False, group="cron_trigger")


class _BlockingQueue(queue.Queue):
    """The event engine polls its queue with get_nowait() in a tight loop
    (fine under eventlet, a 100% CPU spin with the threading backend that
    Mistral 23 uses), starving the API and the engine of the GIL. Blocking
    for a moment instead keeps the same behaviour without the spin."""

    def get_nowait(self):
        return self.get(timeout=0.5)


def _event_engine_service():
    svc = event_engine_server.get_oslo_service()
    svc._event_engine.event_queue = _BlockingQueue()
    return svc


def _sqlite_path():
    url = CONF.database.connection or ""
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        return url[len("sqlite:///") :].split("?", 1)[0]
    return None


def _prepare_database():
    started = time.monotonic()
    path = _sqlite_path()
    if path:
        # WAL lets readers (API GETs) go on while the engine writes; the mode
        # is stored in the file, so set it once before SQLAlchemy connects.
        con = sqlite3.connect(path)
        try:
            con.execute("PRAGMA journal_mode=WAL")
        finally:
            con.close()
    db_api.setup_db()  # models' metadata.create_all + the metrics table
    action_manager.sync_db()  # = mistral-db-manage populate
    workflows.sync_db()
    LOG.info("Database ready in %.2fs", time.monotonic() - started)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    CONF.register_cli_opts(config.CLI_OPTS)
    config.parse_args(argv)
    _force_single_process_options()
    logging.setup(CONF, "Mistral")
    LOG.info(
        "Mistral %s single-process server (API + engine + executor + "
        "notifier + event engine + periodic), database %s",
        version.version_string,
        CONF.database.connection.split("@")[-1],
    )

    _prepare_database()
    rpc.get_transport()

    stop_requested = threading.Event()

    def _on_signal(signum, _frame):
        LOG.info("Signal %s received, stopping", signum)
        stop_requested.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    services = []

    def _start(name, svc):
        svc.start()
        wait_started = getattr(svc, "wait_started", None)
        if wait_started is not None:
            wait_started()
        services.append((name, svc))
        LOG.info("%s started", name)

    try:
        # Back ends first, API last: the port opens only when the engine can
        # take the API's calls.
        _start("engine", engine_server.get_oslo_service(setup_profiler=False))
        _start("event engine", _event_engine_service())
        _start("periodic", periodic_server.get_oslo_service())
        _start("api", api_service.WSGIService("mistral_api"))
        LOG.info(
            "Mistral API listening on http://%s:%s/v2",
            CONF.api.host,
            CONF.api.port,
        )
        while not stop_requested.wait(1.0):
            pass
    finally:
        for name, svc in reversed(services):
            try:
                svc.stop()
            except Exception:  # keep stopping the others
                LOG.exception("Stopping %s failed", name)
    LOG.info("Stopped")
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except BaseException:  # noqa: BLE001  a failed start must not hang on live threads
        traceback.print_exc()
        code = 1
    # Some of Mistral's helper threads (action heartbeats, futurist workers)
    # are not daemons and are never joined by stop(): leave without them.
    logging_module.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
