"""A tiny threaded JSON HTTP server on 127.0.0.1 that a test programs with a handler function."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

# handler(method, path, query) -> (status, body, headers)
Handler = Callable[[str, str, dict[str, str]], tuple[int, Any, dict[str, str]]]


@contextmanager
def serve(handler: Handler) -> Iterator[tuple[str, list[tuple[str, str, dict[str, str]]]]]:
    """Run `handler` behind an HTTP server; yields (base URL, log of (method, path, query) requests)."""
    log: list[tuple[str, str, dict[str, str]]] = []

    class _Req(BaseHTTPRequestHandler):
        def _any(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            log.append((self.command, parts.path, query))
            status, body, headers = handler(self.command, parts.path, query)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _any

        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Req)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()
