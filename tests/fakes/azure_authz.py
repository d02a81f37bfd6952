"""A fake of the ARM reads `spendwatch access azure` makes (role assignments and definitions, user-assigned
managed identities, policy assignments, definitions and exemptions), for the real azure-mgmt clients.

`AuthzWorld.docs` maps a lower-cased ARM path to the JSON it answers (lists as {"value": [...]}); paths under a
prefix in `forbidden` answer 403 AuthorizationFailed. Builders below write the ARM shapes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .http import serve

AUTHZ = "providers/Microsoft.Authorization"


@dataclass
class AuthzWorld:
    sub: str
    docs: dict[str, Any] = field(default_factory=dict)
    forbidden: set[str] = field(default_factory=set)
    log: list[str] = field(default_factory=list)

    def put(self, path: str, body: Any) -> None:
        self.docs[path.lower().rstrip("/")] = body

    def listing(self, path: str) -> list[dict[str, Any]]:
        key = path.lower().rstrip("/")
        self.docs.setdefault(key, {"value": []})
        value: list[dict[str, Any]] = self.docs[key]["value"]
        return value

    def role(self, guid: str, name: str, actions: list[str], not_actions: list[str] | None = None) -> str:
        rid = f"/subscriptions/{self.sub}/{AUTHZ}/roleDefinitions/{guid}"
        self.put(rid, {"id": rid, "name": guid, "type": "Microsoft.Authorization/roleDefinitions",
                       "properties": {"roleName": name, "type": "BuiltInRole", "assignableScopes": ["/"],
                                      "permissions": [{"actions": actions, "notActions": not_actions or [],
                                                       "dataActions": [], "notDataActions": []}]}})
        return rid

    def assign(self, principal: str, principal_type: str, role_id: str, scope: str,
               condition: str | None = None) -> None:
        n = len(self.listing(f"/subscriptions/{self.sub}/{AUTHZ}/roleAssignments"))
        props: dict[str, Any] = {"roleDefinitionId": role_id, "principalId": principal,
                                 "principalType": principal_type, "scope": scope}
        if condition:
            props |= {"condition": condition, "conditionVersion": "2.0"}
        self.listing(f"/subscriptions/{self.sub}/{AUTHZ}/roleAssignments").append(
            {"id": f"{scope}/{AUTHZ}/roleAssignments/ra-{n}", "name": f"ra-{n}",
             "type": "Microsoft.Authorization/roleAssignments", "properties": props})

    def identity(self, name: str, principal: str, tags: dict[str, str] | None = None, rg: str = "identities") -> None:
        rid = f"/subscriptions/{self.sub}/resourceGroups/{rg}/providers/Microsoft.ManagedIdentity/" \
              f"userAssignedIdentities/{name}"
        self.listing(f"/subscriptions/{self.sub}/providers/Microsoft.ManagedIdentity/userAssignedIdentities").append(
            {"id": rid, "name": name, "location": "eastus", "tags": tags or {},
             "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
             "properties": {"principalId": principal, "clientId": f"client-{principal}", "tenantId": "t"}})

    def policy_definition(self, name: str, rule: dict[str, Any], parameters: dict[str, Any] | None = None,
                          *, built_in: bool = False) -> str:
        did = (f"/{AUTHZ}/policyDefinitions/{name}" if built_in
               else f"/subscriptions/{self.sub}/{AUTHZ}/policyDefinitions/{name}")
        self.put(did, {"id": did, "name": name, "type": "Microsoft.Authorization/policyDefinitions",
                       "properties": {"policyType": "BuiltIn" if built_in else "Custom", "mode": "Indexed",
                                      "parameters": parameters or {}, "policyRule": rule}})
        return did

    def policy_assignment(self, name: str, definition_id: str, scope: str, *, parameters: dict[str, Any] | None = None,
                          enforcement: str = "Default", not_scopes: list[str] | None = None) -> str:
        aid = f"{scope}/{AUTHZ}/policyAssignments/{name}"
        self.listing(f"/subscriptions/{self.sub}/{AUTHZ}/policyAssignments").append(
            {"id": aid, "name": name, "type": "Microsoft.Authorization/policyAssignments",
             "properties": {"displayName": name, "policyDefinitionId": definition_id, "scope": scope,
                            "notScopes": not_scopes or [], "enforcementMode": enforcement,
                            "parameters": {k: {"value": v} for k, v in (parameters or {}).items()}}})
        return aid

    def exemption(self, name: str, assignment_id: str, scope: str, expires: str | None) -> None:
        props: dict[str, Any] = {"policyAssignmentId": assignment_id, "exemptionCategory": "Waiver"}
        if expires:
            props["expiresOn"] = expires
        self.listing(f"/subscriptions/{self.sub}/{AUTHZ}/policyExemptions").append(
            {"id": f"{scope}/{AUTHZ}/policyExemptions/{name}", "name": name, "properties": props})

    def handle(self, method: str, path: str, query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        key = path.lower().rstrip("/")
        self.log.append(f"{method} {path}")
        if any(key.startswith(f.lower()) for f in self.forbidden):
            return 403, {"error": {"code": "AuthorizationFailed",
                                   "message": f"The client does not have authorization to perform {path}"}}, {}
        if method == "GET" and key in self.docs:
            return 200, self.docs[key], {}
        if method == "GET" and key.endswith(("/roleassignments", "/policyassignments", "/policyexemptions",
                                             "/userassignedidentities")):
            return 200, {"value": []}, {}
        return 404, {"error": {"code": "NotFound", "message": f"{path} not found"}}, {}


@contextmanager
def serve_authz(world: AuthzWorld) -> Iterator[str]:
    with serve(world.handle) as (url, _):
        yield url
