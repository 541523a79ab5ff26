"""The HTTP side: a threading HTTP/1.1 server on loopback that hands every request
to a dispatch function (the simulator's :meth:`~.api.Api.handle`) and writes its
JSON answer; started in a daemon thread, stopped by :meth:`HttpServer.stop`."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

__all__ = ["Dispatch", "HttpServer"]

Dispatch = Callable[[str, str, bytes, Mapping[str, str]], tuple[int, Any]]
"""(method, target, body, headers) -> (status, JSON body or None)."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def _serve(self) -> None:
        dispatch: Dispatch = cast(Any, self.server).dispatch
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k: v for k, v in self.headers.items()}
        status, payload = dispatch(self.command, self.path, body, headers)
        self.send_response(status)
        if status == 204:
            self.end_headers()
            return
        data = json.dumps(payload).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: benchmarks print their own reports."""


class HttpServer:
    """Serves ``dispatch`` on ``host``:``port`` (0: any free port, known once started)."""

    def __init__(self, dispatch: Dispatch, host: str = "127.0.0.1", port: int = 0) -> None:
        self.dispatch = dispatch
        self.host, self.port = host, port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The Mistral v2 base URL (``http://HOST:PORT/v2``)."""
        return f"http://{self.host}:{self.port}/v2"

    def start(self) -> str:
        """Serve in a daemon thread (once); return :attr:`url`."""
        if self._server is None:
            server = ThreadingHTTPServer((self.host, self.port), _Handler)
            server.daemon_threads = True
            cast(Any, server).dispatch = self.dispatch
            self.port = server.server_address[1]
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05},
                name=f"sim-mistral-{self.port}", daemon=True,
            )
            self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving and close the socket."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
