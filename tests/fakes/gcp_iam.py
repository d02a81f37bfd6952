"""Fakes of the GCP calls `spendwatch access gcp` makes, driven through the real google-cloud clients.

- Resource Manager v3 (REST): projects/folders get, projects/folders/organizations getIamPolicy;
- IAM v2 (REST): deny policies list and get (the list omits the rules, as the real one does);
- IAM admin v1 (gRPC only in the SDK): GetRole and ListServiceAccounts, served by a real grpc server on
  127.0.0.1 with the SDK's own proto-plus messages as (de)serialisers.

The state is a plain `GcpIamWorld` the test fills; names in `forbidden` answer 403 (PERMISSION_DENIED).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .http import serve


@dataclass
class GcpIamWorld:
    projects: dict[str, dict[str, str]] = field(default_factory=dict)  # project id -> {number, parent}
    folders: dict[str, str] = field(default_factory=dict)  # folders/N -> parent
    policies: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # projects/N|folders/N|orgs -> bindings
    roles: dict[str, list[str]] = field(default_factory=dict)  # role name -> permissions
    service_accounts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # project id -> accounts
    deny: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # attachment (projects/ID...) -> policies
    forbidden: set[str] = field(default_factory=set)  # resource or role names that answer 403
    log: list[str] = field(default_factory=list)

    def project_name(self, project_id: str) -> str:
        return f"projects/{self.projects[project_id]['number']}"


def _error(code: int, status: str, message: str) -> tuple[int, Any, dict[str, str]]:
    return code, {"error": {"code": code, "status": status, "message": message}}, {}


def _project(world: GcpIamWorld, key: str) -> tuple[str, dict[str, str]] | None:
    for pid, p in world.projects.items():
        if key in (pid, p["number"]):
            return pid, p
    return None


def rest_handler(world: GcpIamWorld) -> Any:
    def handle(method: str, path: str, query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        path = urllib.parse.unquote(urllib.parse.unquote(path))
        world.log.append(f"{method} {path}")
        if path.startswith("/v3/"):
            return _resource_manager(world, method, path[len("/v3/"):])
        if path.startswith("/v2/policies/"):
            return _deny(world, path[len("/v2/policies/"):])
        return _error(404, "NOT_FOUND", f"no route {path}")

    return handle


def _resource_manager(world: GcpIamWorld, method: str, rest: str) -> tuple[int, Any, dict[str, str]]:
    target, _, verb = rest.partition(":")
    kind, _, key = target.partition("/")
    if kind == "projects":
        found = _project(world, key)
        if found is None:
            return _error(403, "PERMISSION_DENIED", f"project {key} not found or no permission")
        pid, p = found
        name = f"projects/{p['number']}"
    elif kind == "folders":
        name = target
        if name not in world.folders:
            return _error(404, "NOT_FOUND", name)
    else:
        name = target
    if name in world.forbidden or (kind == "projects" and f"projects/{pid}" in world.forbidden):
        return _error(403, "PERMISSION_DENIED", f"The caller does not have permission on {name}")
    if verb == "getIamPolicy" and method == "POST":
        return 200, {"version": 3, "etag": "BwYAAAA=", "bindings": world.policies.get(name, [])}, {}
    if verb or method != "GET":
        return _error(404, "NOT_FOUND", rest)
    if kind == "projects":
        return 200, {"name": name, "projectId": pid, "parent": p["parent"], "state": "ACTIVE"}, {}
    if kind == "folders":
        return 200, {"name": name, "parent": world.folders[name], "state": "ACTIVE"}, {}
    return _error(404, "NOT_FOUND", rest)


def _deny(world: GcpIamWorld, rest: str) -> tuple[int, Any, dict[str, str]]:
    # cloudresourcemanager.googleapis.com/projects/p/denypolicies[/name]
    attachment, _, tail = rest.partition("/denypolicies")
    attached = attachment.removeprefix("cloudresourcemanager.googleapis.com/")
    if attached in world.forbidden:
        return _error(403, "PERMISSION_DENIED", f"iam.denypolicies.list on {attached}")
    policies = world.deny.get(attached, [])
    prefix = f"policies/{urllib.parse.quote(attachment, safe='')}/denypolicies/"
    if not tail:
        return 200, {"policies": [{"name": prefix + p["id"], "kind": "DenyPolicy"} for p in policies]}, {}
    wanted = tail.strip("/")
    for p in policies:
        if p["id"] == wanted:
            return 200, {"name": prefix + p["id"], "displayName": p.get("displayName", ""), "kind": "DenyPolicy",
                         "rules": [{"denyRule": r} for r in p["rules"]]}, {}
    return _error(404, "NOT_FOUND", rest)


@contextmanager
def serve_iam_admin(world: GcpIamWorld) -> Iterator[str]:
    """The IAM admin gRPC service (GetRole, ListServiceAccounts) on 127.0.0.1; yields host:port."""
    import grpc
    from google.cloud.iam_admin_v1 import types

    def get_role(request: Any, context: Any) -> Any:
        world.log.append(f"GetRole {request.name}")
        if request.name in world.forbidden:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"iam.roles.get denied on {request.name}")
        if request.name not in world.roles:
            context.abort(grpc.StatusCode.NOT_FOUND, f"role {request.name} not found")
        return types.Role(name=request.name, title=request.name.rsplit("/", 1)[-1],
                          included_permissions=world.roles[request.name])

    def list_accounts(request: Any, context: Any) -> Any:
        project = request.name.split("/", 1)[1]
        world.log.append(f"ListServiceAccounts {project}")
        if f"projects/{project}" in world.forbidden:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "iam.serviceAccounts.list denied")
        return types.ListServiceAccountsResponse(accounts=[
            types.ServiceAccount(name=f"projects/{project}/serviceAccounts/{a['email']}", email=a["email"],
                                 project_id=project, display_name=a.get("display_name", ""),
                                 description=a.get("description", ""), disabled=a.get("disabled", False))
            for a in world.service_accounts.get(project, [])])

    handler = grpc.method_handlers_generic_handler("google.iam.admin.v1.IAM", {
        "GetRole": grpc.unary_unary_rpc_method_handler(
            get_role, request_deserializer=types.GetRoleRequest.deserialize,
            response_serializer=types.Role.serialize),
        "ListServiceAccounts": grpc.unary_unary_rpc_method_handler(
            list_accounts, request_deserializer=types.ListServiceAccountsRequest.deserialize,
            response_serializer=types.ListServiceAccountsResponse.serialize),
    })
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(0)


@contextmanager
def serve_gcp_iam(world: GcpIamWorld) -> Iterator[tuple[str, str]]:
    """Both fakes; yields (REST base URL, IAM admin gRPC host:port)."""
    with serve(rest_handler(world)) as (url, _), serve_iam_admin(world) as target:
        yield url, target
