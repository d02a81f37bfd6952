"""A recording HTTP receiver on 127.0.0.1 that a test can take down (refused connections), make fail (any
status), and bring back on the same port: the fake behind the webhook, SCC and Log Analytics sink tests."""

from __future__ import annotations

import gzip
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes  # as received (gunzipped when Content-Encoding is gzip)

    def json(self) -> Any:
        return json.loads(self.body or b"null")


# responder(request) -> (status, JSON body)
Responder = Callable[[Request], tuple[int, Any]]


class Receiver:
    """`status` None answers with `responder` (default 200 {}); an int answers that status to everything.
    `accepted` holds the requests answered 2xx, `requests` every request that arrived."""

    def __init__(self, responder: Responder | None = None) -> None:
        self.responder = responder or (lambda req: (200, {}))
        self.status: int | None = None
        self.requests: list[Request] = []
        self.accepted: list[Request] = []
        self._lock = threading.Lock()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> Receiver:
        receiver = self

        class _Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                req = Request(self.command, parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()},
                              dict(self.headers.items()), body)
                with receiver._lock:
                    receiver.requests.append(req)
                    status, doc = (receiver.status, {"error": {"code": receiver.status, "message": "down"}}) \
                        if receiver.status is not None else receiver.responder(req)
                    if 200 <= status < 300:
                        receiver.accepted.append(req)
                data = b"" if status == 204 else json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def down(self) -> None:
        """Stop listening: connections are refused until `up()`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Receiver:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()
