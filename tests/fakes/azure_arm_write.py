"""A stateful fake of the Azure Resource Manager calls the Azure quarantine and release actions make.

Resources live in `ArmWorld.resources`, keyed by their lower-cased ARM id (ARM ids are case-insensitive).
Served: VMs get / PATCH (tags) / deallocate / start, NICs get / PUT, NSGs get / PUT, disks get, snapshots PUT.
Every PUT and PATCH answers 200 with the stored body and provisioningState Succeeded, which the SDK's ARM
poller takes as a finished long-running operation. `log` keeps (method, path, body) of every request.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

MUTATING = frozenset({"PUT", "PATCH", "POST", "DELETE"})


def rid(sub: str, rg: str, provider: str, kind: str, name: str) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{provider}/{kind}/{name}"


@dataclass
class ArmWorld:
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    log: list[tuple[str, str, Any]] = field(default_factory=list)
    power: dict[str, str] = field(default_factory=dict)

    def add(self, body: dict[str, Any]) -> dict[str, Any]:
        self.resources[body["id"].lower()] = body
        return body

    def get(self, resource_id: str) -> dict[str, Any]:
        return self.resources[resource_id.lower()]

    def mutations(self) -> list[tuple[str, str, Any]]:
        return [e for e in self.log if e[0] in MUTATING]

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        self.log.append((method, path, body))
        key = path.rstrip("/").lower()
        if method == "POST" and key.endswith(("/deallocate", "/start")):
            vm_id, verb = key.rsplit("/", 1)
            if vm_id not in self.resources:
                return 404, _not_found(path)
            self.power[vm_id] = "deallocated" if verb == "deallocate" else "running"
            return 200, None
        if method == "GET":
            if key in self.resources:
                return 200, self.resources[key]
            return 404, _not_found(path)
        if method == "PUT":
            stored = dict(body)
            stored["id"] = path
            stored["name"] = path.rsplit("/", 1)[-1]
            stored.setdefault("properties", {})["provisioningState"] = "Succeeded"
            self.resources[key] = stored
            return 200, stored  # 200 + body: every PUT here (NIC, NSG, snapshot) accepts it as done
        if method == "PATCH":
            if key not in self.resources:
                return 404, _not_found(path)
            current = self.resources[key]
            if "tags" in body:
                current["tags"] = body["tags"]  # ARM PATCH replaces the whole tags object
            return 200, current
        return 405, {"error": {"code": "MethodNotAllowed", "message": f"{method} {path}"}}


def _not_found(path: str) -> dict[str, Any]:
    return {"error": {"code": "ResourceNotFound", "message": f"{path} was not found"}}


@contextmanager
def serve_arm(world: ArmWorld) -> Iterator[str]:
    """Serve `world` on 127.0.0.1; yields the base URL."""

    class _Req(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            status, answer = world.handle(self.command, urlsplit(self.path).path, body)
            data = b"" if answer is None else json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Req)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
