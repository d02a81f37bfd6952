"""A stateful fake of the Azure Resource Manager calls the Azure quarantine and release actions make.

Resources live in `ArmWorld.resources`, keyed by their lower-cased ARM id (ARM ids are case-insensitive).
Served: VMs get / PATCH (tags) / deallocate / start, NICs get / PUT, NSGs get / PUT, disks get, snapshots PUT.

Long-running operations answer as ARM does (unless `async_operations=False`): a PUT answers 201 (new) or 200
(replaced) and a PATCH 200, each with the body in `provisioningState: Updating` and an `Azure-AsyncOperation`
header; a snapshot PUT and a POST action answer 202 with `Azure-AsyncOperation` and `Location` headers. Both point under
`/subscriptions/<sub>/providers/<provider>/locations/<location>/operations/<id>`; the first poll of an operation
says InProgress, the next Succeeded (and the resource's provisioningState follows). So the SDK's poller really
polls, and the tests see the reads it makes.

`log` keeps (method, path, body) of every request; `operations_needed()` names the Azure RBAC operation each
logged request needs (the path's provider/type plus read/write/action, operation status reads, and the linked
`join/action` a NIC that references an NSG needs), so tests compare what an action did with what it declares.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

MUTATING = frozenset({"PUT", "PATCH", "POST", "DELETE"})
API_VERSION = "2024-07-01"


def rid(sub: str, rg: str, provider: str, kind: str, name: str) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{provider}/{kind}/{name}"


@dataclass
class ArmWorld:
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    log: list[tuple[str, str, Any]] = field(default_factory=list)
    power: dict[str, str] = field(default_factory=dict)
    async_operations: bool = True
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)  # operation id -> {"key", "polls"}
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def add(self, body: dict[str, Any]) -> dict[str, Any]:
        self.resources[body["id"].lower()] = body
        return body

    def get(self, resource_id: str) -> dict[str, Any]:
        return self.resources[resource_id.lower()]

    def add_vm(self, sub: str, rg: str, name: str, *, location: str = "eastus", nsg: str | None = None,
               tags: dict[str, str] | None = None) -> str:
        """A VM with one NIC (in `nsg`, an NSG id, or none) and a managed OS disk; returns the VM's id."""
        nic = rid(sub, rg, "Microsoft.Network", "networkInterfaces", f"{name}-nic")
        disk = rid(sub, rg, "Microsoft.Compute", "disks", f"{name}-os")
        self.add({"id": nic, "name": f"{name}-nic", "location": location, "properties": {
            **({"networkSecurityGroup": {"id": nsg}} if nsg else {}),
            "ipConfigurations": [{"name": "ipconfig1", "properties": {"privateIPAddress": "10.0.0.4"}}]}})
        self.add({"id": disk, "name": f"{name}-os", "location": location, "properties": {"diskSizeGB": 128}})
        vm = rid(sub, rg, "Microsoft.Compute", "virtualMachines", name)
        self.add({"id": vm, "name": name, "location": location, "tags": dict(tags or {}), "properties": {
            "storageProfile": {"osDisk": {"createOption": "FromImage", "managedDisk": {"id": disk}}},
            "networkProfile": {"networkInterfaces": [{"id": nic}]}}})
        return vm

    def mutations(self) -> list[tuple[str, str, Any]]:
        return [e for e in self.log if e[0] in MUTATING]

    def operations_needed(self) -> set[str]:
        """The RBAC operations the logged requests need."""
        needed: set[str] = set()
        for method, path, body in self.log:
            parts = path.strip("/").split("/")
            if len(parts) == 8 and parts[2].lower() == "providers" and parts[4].lower() == "locations":
                needed.add(f"{parts[3]}/locations/{parts[6]}/read")  # e.g. Microsoft.Network/locations/operations
                continue
            if len(parts) < 8 or parts[4].lower() != "providers":
                raise AssertionError(f"no RBAC operation known for {method} {path}")
            kind = f"{parts[5]}/{parts[6]}"
            if method == "POST":
                needed.add(f"{kind}/{parts[8]}/action")
            else:
                needed.add(f"{kind}/{ {'GET': 'read', 'PUT': 'write', 'PATCH': 'write', 'DELETE': 'delete'}[method]}")
            props = (body or {}).get("properties") or {}
            if method == "PUT" and (props.get("networkSecurityGroup") or {}).get("id"):
                needed.add("Microsoft.Network/networkSecurityGroups/join/action")  # linked access check
            if method == "PUT" and ((props.get("creationData") or {}).get("sourceResourceId") or "").lower().find(
                    "/microsoft.compute/disks/") >= 0:
                needed.add("Microsoft.Compute/disks/read")  # the snapshot's source disk is read
        return needed

    def handle(self, method: str, path: str, body: Any, *, query: str = "", base: str = ""
               ) -> tuple[int, Any, dict[str, str]]:
        self.log.append((method, path, body))
        key = path.rstrip("/").lower()
        parts = path.strip("/").split("/")
        if method == "GET" and len(parts) == 8 and parts[4].lower() == "locations":
            return self._poll(parts[7], monitor="monitor" in parse_qs(query))
        if method == "POST" and key.endswith(("/deallocate", "/start")):
            vm_id, verb = key.rsplit("/", 1)
            if vm_id not in self.resources:
                return 404, _not_found(path), {}
            self.power[vm_id] = "deallocated" if verb == "deallocate" else "running"
            if not self.async_operations:
                return 200, None, {}
            url = self._start(vm_id, base)
            return 202, None, {"Azure-AsyncOperation": url, "Location": url.replace("?", "?monitor=true&")}
        if method == "GET":
            if key in self.resources:
                return 200, self.resources[key], {}
            return 404, _not_found(path), {}
        if method == "PUT":
            existed = key in self.resources
            stored = dict(body)
            stored["id"] = path
            stored["name"] = path.rsplit("/", 1)[-1]
            stored.setdefault("properties", {})["provisioningState"] = "Succeeded"
            self.resources[key] = stored
            if not self.async_operations:
                return 200, stored, {}  # 200 + body: the SDK takes it as done
            if parts[6].lower() == "snapshots":  # Compute answers a snapshot PUT 202 Accepted, no body
                url = self._start(key, base)
                return 202, None, {"Azure-AsyncOperation": url, "Location": url.replace("?", "?monitor=true&")}
            return self._accepted(key, base, 200 if existed else 201)
        if method == "PATCH":
            if key not in self.resources:
                return 404, _not_found(path), {}
            current = self.resources[key]
            if "tags" in body:
                current["tags"] = body["tags"]  # ARM PATCH replaces the whole tags object
            if not self.async_operations:
                return 200, current, {}
            return self._accepted(key, base, 200)
        return 405, {"error": {"code": "MethodNotAllowed", "message": f"{method} {path}"}}, {}

    def _start(self, key: str, base: str) -> str:
        """Start an operation on resource `key`; its Azure-AsyncOperation URL."""
        op = f"op-{next(self._ids)}"
        self.operations[op] = {"key": key, "polls": 0}
        parts = key.strip("/").split("/")
        sub, provider = parts[1], self._spelled(parts[5])
        location = (self.resources[key].get("location") or "eastus").lower().replace(" ", "")
        self.resources[key].setdefault("properties", {})["provisioningState"] = "Updating"
        return f"{base}/subscriptions/{sub}/providers/{provider}/locations/{location}/operations/{op}" \
               f"?api-version={API_VERSION}"

    def _accepted(self, key: str, base: str, status: int) -> tuple[int, Any, dict[str, str]]:
        url = self._start(key, base)
        return status, self.resources[key], {"Azure-AsyncOperation": url}

    def _poll(self, op_id: str, *, monitor: bool) -> tuple[int, Any, dict[str, str]]:
        op = self.operations.get(op_id)
        if op is None:
            return 404, _not_found(op_id), {}
        op["polls"] += 1
        done = op["polls"] >= 2
        if done:
            self.resources[op["key"]].setdefault("properties", {})["provisioningState"] = "Succeeded"
        if monitor:
            return (200, None, {}) if done else (202, None, {})
        return 200, {"name": op_id, "status": "Succeeded" if done else "InProgress"}, {}

    def _spelled(self, provider: str) -> str:
        """The provider namespace as ARM spells it (ids are stored lower-cased)."""
        return {"microsoft.compute": "Microsoft.Compute", "microsoft.network": "Microsoft.Network"}.get(
            provider.lower(), provider)


def _not_found(path: str) -> dict[str, Any]:
    return {"error": {"code": "ResourceNotFound", "message": f"{path} was not found"}}


@contextmanager
def serve_arm(world: ArmWorld) -> Iterator[str]:
    """Serve `world` on 127.0.0.1; yields the base URL."""
    lock = threading.Lock()

    class _Req(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            url = urlsplit(self.path)
            base = f"http://{self.headers.get('Host') or '127.0.0.1'}"
            with lock:
                status, answer, headers = world.handle(self.command, url.path, body, query=url.query, base=base)
            data = b"" if answer is None else json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for k, v in headers.items():
                self.send_header(k, v)
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
