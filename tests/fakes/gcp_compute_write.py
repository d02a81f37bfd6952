"""A stateful fake of the Compute Engine REST calls the GCP quarantine and release make.

Speaks the v1 shapes the real google-cloud-compute REST client sends: instances get/setTags/setLabels/stop/start
(tag and label fingerprints checked: 412 conditionNotMet on a stale one, as Compute does), firewalls
insert/get/delete, zonal and regional disks createSnapshot, and zone/region/global operations get/wait. Every
operation is DONE at once, unless `slow_operations` is set: then each is RUNNING when started and DONE when
polled, so the client's waits are exercised. Every request is logged with its JSON body, so tests assert
exactly what was sent, and `permissions()` names the IAM permission each logged request needs (from the
Compute API reference), so tests can compare what an action did with what it declares.
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
from urllib.parse import urlsplit

API = "https://www.googleapis.com/compute/v1"


@dataclass
class Request:
    method: str
    path: str
    body: dict[str, Any]

    @property
    def mutating(self) -> bool:
        # operations/{op}/wait is a POST that changes nothing
        return self.method in ("POST", "PUT", "PATCH", "DELETE") and not self.path.endswith("/wait")


@dataclass
class ComputeWorld:
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)  # "project/zone/name" -> instance
    firewalls: dict[str, dict[str, Any]] = field(default_factory=dict)  # "project/name" -> firewall
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)  # "project/name" -> snapshot
    log: list[Request] = field(default_factory=list)
    slow_operations: bool = False
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def add_instance(self, project: str, zone: str, name: str, *, tags: list[str] | None = None,
                     labels: dict[str, str] | None = None, disks: list[str] | None = None,
                     regional_disks: list[str] | None = None, network: str = "default") -> dict[str, Any]:
        inst = {
            "name": name, "id": str(1000 + len(self.instances)), "status": "RUNNING",
            "zone": f"{API}/projects/{project}/zones/{zone}",
            "tags": {"items": list(tags or []), "fingerprint": self._fingerprint()},
            "labels": dict(labels or {}), "labelFingerprint": self._fingerprint(),
            "networkInterfaces": [{"name": "nic0", "network": f"{API}/projects/{project}/global/networks/{network}",
                                   "networkIP": "10.0.0.2"}],
            "disks": [{"deviceName": d, "boot": i == 0, "source": f"{API}/projects/{project}/zones/{zone}/disks/{d}"}
                      for i, d in enumerate(disks if disks is not None else [f"{name}-boot"])],
        }
        region = zone.rsplit("-", 1)[0]
        inst["disks"] += [{"deviceName": d, "boot": False,
                           "source": f"{API}/projects/{project}/regions/{region}/disks/{d}"}
                          for d in regional_disks or []]
        self.instances[f"{project}/{zone}/{name}"] = inst
        return inst

    def instance(self, project: str, zone: str, name: str) -> dict[str, Any]:
        return self.instances[f"{project}/{zone}/{name}"]

    def set_tags_behind_their_back(self, project: str, zone: str, name: str, items: list[str]) -> None:
        """Someone else changes the tags: the fingerprint moves on."""
        self.instance(project, zone, name)["tags"] = {"items": items, "fingerprint": self._fingerprint()}

    @property
    def mutations(self) -> list[Request]:
        return [r for r in self.log if r.mutating]

    def permissions(self) -> set[str]:
        """The IAM permissions the logged requests need, per the Compute API reference of each method."""
        needed: set[str] = set()
        for r in self.log:
            parts = r.path.strip("/").split("/")[4:]  # after compute/v1/projects/{project}
            if "operations" in parts:
                scope = {"zones": "zone", "regions": "region", "global": "global"}[parts[0]]
                needed.add(f"compute.{scope}Operations.get")  # get and wait alike
            elif parts[:2] == ["global", "firewalls"]:
                verb = {"GET": "get", "DELETE": "delete", "POST": "create"}[r.method]
                needed.add(f"compute.firewalls.{verb}")
                if verb in ("create", "delete"):
                    needed.add("compute.networks.updatePolicy")
            elif len(parts) >= 4 and parts[2] == "disks" and parts[-1] == "createSnapshot":
                needed |= {"compute.disks.createSnapshot", "compute.snapshots.create"}
            elif len(parts) >= 4 and parts[2] == "instances":
                needed.add("compute.instances." + (parts[4] if len(parts) > 4 else "get"))
            else:
                raise AssertionError(f"no permission known for {r.method} {r.path}")
        return needed

    def _fingerprint(self) -> str:
        return f"fp{next(self._ids)}"

    def _operation(self, project: str, zone: str | None, target: str, kind: str, *,
                   region: str | None = None) -> dict[str, Any]:
        name = f"operation-{next(self._ids)}"
        scope = f"zones/{zone}" if zone else f"regions/{region}" if region else "global"
        where = ({"zone": f"{API}/projects/{project}/zones/{zone}"} if zone else
                 {"region": f"{API}/projects/{project}/regions/{region}"} if region else {})
        return {"kind": "compute#operation", "name": name, "operationType": kind,
                "status": "RUNNING" if self.slow_operations else "DONE", "progress": 0 if self.slow_operations else 100,
                "targetLink": target, **where, "selfLink": f"{API}/projects/{project}/{scope}/operations/{name}"}

    def handle(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        parts = path.strip("/").split("/")
        if parts[:3] != ["compute", "v1", "projects"] or len(parts) < 6:
            return _error(404, f"no route {path}")
        project, rest = parts[3], parts[4:]
        # zones/{z}/operations/{op}[/wait]  |  regions/{r}/operations/{op}[/wait]  |  global/operations/{op}[/wait]
        if "operations" in rest:
            i = rest.index("operations")
            where = ({"zone": f"{API}/projects/{project}/zones/{rest[1]}"} if rest[0] == "zones" else
                     {"region": f"{API}/projects/{project}/regions/{rest[1]}"} if rest[0] == "regions" else {})
            return 200, {"kind": "compute#operation", "name": rest[i + 1], "status": "DONE", "progress": 100, **where}
        if rest[:2] == ["global", "firewalls"]:
            if method == "POST" and len(rest) == 2:
                key = f"{project}/{body.get('name')}"
                if key in self.firewalls:
                    return _error(409, f"The resource 'projects/{key}' already exists", "alreadyExists")
                ranges = [*body.get("sourceRanges", []), *body.get("destinationRanges", [])]
                if len({":" in r for r in ranges}) > 1:  # Compute refuses a rule mixing IPv4 and IPv6 ranges
                    return _error(400, "Invalid value for field 'resource': cannot mix IPv4 and IPv6 ranges",
                                  "invalid")
                self.firewalls[key] = {**body, "selfLink": f"{API}/projects/{project}/global/firewalls/{body['name']}"}
                return 200, self._operation(project, None, self.firewalls[key]["selfLink"], "insert")
            key = f"{project}/{rest[2]}" if len(rest) > 2 else ""
            if key not in self.firewalls:
                return _error(404, f"The resource 'projects/{project}/global/firewalls/{rest[-1]}' was not found",
                              "notFound")
            if method == "GET":
                return 200, self.firewalls[key]
            if method == "DELETE":
                fw = self.firewalls.pop(key)
                return 200, self._operation(project, None, fw["selfLink"], "delete")
        if rest[0] in ("zones", "regions") and len(rest) >= 4 and rest[2] == "disks" and rest[-1] == "createSnapshot":
            scope, where, disk = rest[0], rest[1], rest[3]
            name = body.get("name") or f"snap-{next(self._ids)}"
            source = f"{API}/projects/{project}/{scope}/{where}/disks/{disk}"
            self.snapshots[f"{project}/{name}"] = {**body, "name": name, "sourceDisk": source}
            link = f"{API}/projects/{project}/global/snapshots/{name}"
            if scope == "regions":
                return 200, self._operation(project, None, link, "createSnapshot", region=where)
            return 200, self._operation(project, where, link, "createSnapshot")
        if rest[0] == "zones" and len(rest) >= 4 and rest[2] == "instances":
            zone, name = rest[1], rest[3]
            inst = self.instances.get(f"{project}/{zone}/{name}")
            if inst is None:
                return _error(404, f"The resource 'projects/{project}/zones/{zone}/instances/{name}' was not found",
                              "notFound")
            verb = rest[4] if len(rest) > 4 else None
            link = f"{API}/projects/{project}/zones/{zone}/instances/{name}"
            if method == "GET" and verb is None:
                return 200, inst
            if method == "POST" and verb == "setTags":
                if body.get("fingerprint") != inst["tags"]["fingerprint"]:
                    return _error(412, "Supplied fingerprint does not match current metadata fingerprint.",
                                  "conditionNotMet")
                inst["tags"] = {"items": list(body.get("items", [])), "fingerprint": self._fingerprint()}
                return 200, self._operation(project, zone, link, "setTags")
            if method == "POST" and verb == "setLabels":
                if body.get("labelFingerprint") != inst["labelFingerprint"]:
                    return _error(412, "Labels fingerprint either invalid or resource labels have changed",
                                  "conditionNotMet")
                inst["labels"] = dict(body.get("labels", {}))
                inst["labelFingerprint"] = self._fingerprint()
                return 200, self._operation(project, zone, link, "setLabels")
            if method == "POST" and verb in ("stop", "start"):
                inst["status"] = "TERMINATED" if verb == "stop" else "RUNNING"
                return 200, self._operation(project, zone, link, verb)
        return _error(404, f"no route {method} {path}")


def _error(code: int, message: str, reason: str = "") -> tuple[int, dict[str, Any]]:
    return code, {"error": {"code": code, "message": message,
                            "errors": [{"message": message, "domain": "global", "reason": reason}]}}


@contextmanager
def serve_compute(world: ComputeWorld) -> Iterator[str]:
    """Serve `world` on 127.0.0.1; yields the base URL (give it to the client as `http://...`)."""
    lock = threading.Lock()

    class _Req(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else {}
            path = urlsplit(self.path).path
            with lock:
                world.log.append(Request(self.command, path, body))
                status, reply = world.handle(self.command, path, body)
            data = json.dumps(reply).encode()
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
