"""Azure quarantine and release through the real azure-mgmt clients against a local ARM fake."""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fakes.azure_arm_write import ArmWorld, rid, serve_arm

from spendwatch.actions import ACTIONS
from spendwatch.actions.azure import QUARANTINE_TAG, AzureClients, AzureQuarantine, AzureRelease, nsg_name
from spendwatch.actions.base import ActionSettings, Target, execute
from spendwatch.store import Store

SUB = "11111111-aaaa-4aaa-8aaa-111111111111"
RG = "GPU-RG"
APP_NSG = rid(SUB, RG, "Microsoft.Network", "networkSecurityGroups", "app-nsg")
NIC1 = rid(SUB, RG, "Microsoft.Network", "networkInterfaces", "gpu-1-nic")
NIC2 = rid(SUB, RG, "Microsoft.Network", "networkInterfaces", "gpu-1-nic2")
OS_DISK = rid(SUB, RG, "Microsoft.Compute", "disks", "gpu-1-os")
DATA_DISK = rid(SUB, RG, "Microsoft.Compute", "disks", "gpu-1-data")
VM_ID = rid(SUB, RG, "Microsoft.Compute", "virtualMachines", "gpu-1")
TARGET = VM_ID.lower()


class _Token:
    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken("fake-token", int(time.time()) + 3600)


def _world(tags: dict[str, str] | None = None) -> ArmWorld:
    w = ArmWorld()  # long-running operations answered as ARM does: the SDK polls them
    w.add({"id": APP_NSG, "name": "app-nsg", "location": "eastus", "properties": {"securityRules": []}})
    w.add({"id": NIC1, "name": "gpu-1-nic", "location": "eastus", "properties": {
        "networkSecurityGroup": {"id": APP_NSG},
        "ipConfigurations": [{"name": "ipconfig1", "properties": {"privateIPAddress": "10.0.0.4"}}]}})
    w.add({"id": NIC2, "name": "gpu-1-nic2", "location": "eastus", "properties": {
        "ipConfigurations": [{"name": "ipconfig1", "properties": {"privateIPAddress": "10.0.1.4"}}]}})
    for disk in (OS_DISK, DATA_DISK):
        w.add({"id": disk, "name": disk.rsplit("/", 1)[-1], "location": "eastus",
               "properties": {"diskSizeGB": 128, "creationData": {"createOption": "Empty"}}})
    w.add({"id": VM_ID, "name": "gpu-1", "location": "eastus",
           "tags": {"workload": "training", **(tags or {})},
           "properties": {"hardwareProfile": {"vmSize": "Standard_NC24ads_A100_v4"},
                          "storageProfile": {"osDisk": {"createOption": "FromImage", "managedDisk": {"id": OS_DISK}},
                                             "dataDisks": [{"lun": 0, "createOption": "Empty",
                                                            "managedDisk": {"id": DATA_DISK}}]},
                          "networkProfile": {"networkInterfaces": [{"id": NIC1}, {"id": NIC2}]}}})
    return w


@pytest.fixture
def store(tmp_path: Any) -> Iterator[Store]:
    with Store(tmp_path / "state.db") as s:
        yield s


@pytest.fixture
def arm() -> Iterator[tuple[ArmWorld, AzureClients]]:
    world = _world()
    with serve_arm(world) as url:
        yield world, AzureClients.build(SUB, base_url=url, credential=_Token())


def _nsg_of(world: ArmWorld, nic: str) -> str | None:
    ref = world.get(nic)["properties"].get("networkSecurityGroup")
    return ref["id"] if ref else None


def test_registered_with_exact_azure_operations() -> None:
    assert ACTIONS["azure.quarantine"] is AzureQuarantine and ACTIONS["azure.release"] is AzureRelease
    assert "Microsoft.Network/networkSecurityGroups/join/action" in AzureQuarantine.permissions
    assert "Microsoft.Compute/virtualMachines/deallocate/action" in AzureQuarantine.permissions


def test_quarantine_isolates_every_nic_tags_snapshots_and_release_restores(arm: Any, store: Store) -> None:
    world, clients = arm
    before = copy.deepcopy({nic: world.get(nic) for nic in (NIC1, NIC2)})
    out = execute(AzureQuarantine(clients=clients, store=store, actor="test"),
                  Target("azure", TARGET, finding_id="f-1"), apply=True)
    assert out.status == "applied", out.message
    nsg = rid(SUB, RG, "Microsoft.Network", "networkSecurityGroups", "spendwatch-quarantine-eastus")
    nsg_puts = [b for m, p, b in world.log if m == "PUT" and p.lower() == nsg.lower()]
    assert [b["properties"].get("flushConnection") for b in nsg_puts] == [False, True]
    rules = {r["name"]: r["properties"] for r in nsg_puts[-1]["properties"]["securityRules"]}
    assert set(rules) == {"DenyAllInbound", "DenyAllOutbound"}
    for rule, direction in (("DenyAllInbound", "Inbound"), ("DenyAllOutbound", "Outbound")):
        assert {k: rules[rule][k] for k in ("access", "priority", "direction", "protocol", "sourceAddressPrefix",
                                            "sourcePortRange", "destinationAddressPrefix", "destinationPortRange")} == {
            "access": "Deny", "priority": 100, "direction": direction, "protocol": "*", "sourceAddressPrefix": "*",
            "sourcePortRange": "*", "destinationAddressPrefix": "*", "destinationPortRange": "*"}
    nic_puts = {p.lower(): b for m, p, b in world.log if m == "PUT" and "/networkinterfaces/" in p.lower()}
    assert set(nic_puts) == {NIC1.lower(), NIC2.lower()}
    for body in nic_puts.values():
        assert body["properties"]["networkSecurityGroup"]["id"].lower() == nsg.lower()
        assert body["properties"]["ipConfigurations"][0]["name"] == "ipconfig1"
    assert world.get(VM_ID)["tags"] == {"workload": "training", QUARANTINE_TAG: "f-1"}
    snaps = [b for m, p, b in world.log if m == "PUT" and "/snapshots/" in p.lower()]
    assert sorted(s["properties"]["creationData"]["sourceResourceId"] for s in snaps) == sorted([DATA_DISK, OS_DISK])
    assert all(s["properties"]["creationData"]["createOption"] == "Copy" for s in snaps)
    assert not [p for m, p, _ in world.log if m == "POST"]  # not deallocated unless asked
    record = store.active_quarantine(cloud="azure", account=SUB, resource=TARGET).record
    assert record["nics"] == {NIC1.lower(): APP_NSG, NIC2.lower(): None}

    # Already quarantined: refused.
    again = execute(AzureQuarantine(clients=clients, store=store, actor="test"), Target("azure", TARGET), apply=True)
    assert again.status == "refused"

    world.log.clear()
    back = execute(AzureRelease(clients=clients, store=store, actor="test"), Target("azure", TARGET), apply=True)
    assert back.status == "applied", back.message
    assert _nsg_of(world, NIC1) == APP_NSG and _nsg_of(world, NIC2) is None
    for nic in (NIC1, NIC2):
        restored = world.get(nic)["properties"]
        assert restored["ipConfigurations"] == before[nic]["properties"]["ipConfigurations"]
    assert world.get(VM_ID)["tags"] == {"workload": "training"}
    assert world.get(nsg)["properties"]["securityRules"]  # the shared NSG is kept
    assert not [p for m, p, _ in world.mutations() if "/snapshots/" in p.lower() or m == "DELETE"]
    assert store.active_quarantine(cloud="azure", account=SUB, resource=TARGET) is None


def test_dry_run_sends_nothing_mutating(arm: Any, store: Store) -> None:
    world, clients = arm
    out = execute(AzureQuarantine(clients=clients, store=store, actor="test", stop=True), Target("azure", TARGET),
                  apply=False)
    assert out.status == "planned" and out.dry_run
    assert [s.name for s in out.steps] == ["record-nsgs", "prepare-nsg", "attach-nsg", "attach-nsg",
                                           "flush-connections", "tag", "snapshot", "snapshot", "deallocate"]
    assert world.mutations() == [] and world.log  # it did read
    assert store.active_quarantine(cloud="azure", account=SUB, resource=TARGET) is None


def test_stop_deallocates_and_release_starts(arm: Any, store: Store) -> None:
    world, clients = arm
    out = execute(AzureQuarantine(clients=clients, store=store, actor="test", stop=True), Target("azure", TARGET),
                  apply=True)
    assert out.status == "applied" and world.power[VM_ID.lower()] == "deallocated"
    assert execute(AzureRelease(clients=clients, store=store, actor="test"), Target("azure", TARGET),
                   apply=True).status == "applied"
    assert world.power[VM_ID.lower()] == "running"


def test_release_of_a_vm_spendwatch_did_not_quarantine_is_refused(arm: Any, store: Store) -> None:
    world, clients = arm
    out = execute(AzureRelease(clients=clients, store=store, actor="test"), Target("azure", TARGET), apply=True)
    assert out.status == "refused" and "no active quarantine" in out.message
    assert world.mutations() == []


@pytest.mark.parametrize("how", ["tag", "allow-list"])
def test_protected_vm_is_refused(store: Store, how: str) -> None:
    world = _world({"spendwatch-protected": "true"} if how == "tag" else None)
    settings = ActionSettings(protected_ids=frozenset({VM_ID} if how == "allow-list" else set()))
    with serve_arm(world) as url:
        clients = AzureClients.build(SUB, base_url=url, credential=_Token())
        out = execute(AzureQuarantine(clients=clients, store=store, actor="test", settings=settings),
                      Target("azure", TARGET), apply=True)
    assert out.status == "refused" and "protected" in out.message
    assert world.mutations() == []


def test_requests_made_need_exactly_the_declared_operations(arm: Any, store: Store) -> None:
    """Each request the SDK sends (long-running-operation polls included) maps to an RBAC operation the action
    declares, and a full quarantine (with deallocate) and release use every declared operation."""
    world, clients = arm
    out = execute(AzureQuarantine(clients=clients, store=store, actor="test", stop=True), Target("azure", TARGET),
                  apply=True)
    assert out.status == "applied", out.message
    polls = [p for m, p, _ in world.log if "/locations/" in p and "/operations/" in p]
    assert {p.split("/providers/")[1].split("/")[0] for p in polls} == {"Microsoft.Network", "Microsoft.Compute"}
    assert world.operations_needed() == set(AzureQuarantine.permissions)
    world.log.clear()
    assert execute(AzureRelease(clients=clients, store=store, actor="test"), Target("azure", TARGET),
                   apply=True).status == "applied"
    assert world.operations_needed() == set(AzureRelease.permissions)
    assert all(set(s.permissions) <= set(AzureQuarantine.permissions) for s in out.steps)


def test_each_region_gets_its_own_quarantine_nsg(store: Store) -> None:
    """NSGs are regional: a VM in westeurope in the same resource group gets spendwatch-quarantine-westeurope."""
    world = _world()
    west_nic = rid(SUB, RG, "Microsoft.Network", "networkInterfaces", "gpu-2-nic")
    west_vm = rid(SUB, RG, "Microsoft.Compute", "virtualMachines", "gpu-2")
    world.add({"id": west_nic, "name": "gpu-2-nic", "location": "westeurope", "properties": {
        "ipConfigurations": [{"name": "ipconfig1", "properties": {"privateIPAddress": "10.1.0.4"}}]}})
    world.add({"id": west_vm, "name": "gpu-2", "location": "westeurope", "tags": {},
               "properties": {"storageProfile": {}, "networkProfile": {"networkInterfaces": [{"id": west_nic}]}}})
    with serve_arm(world) as url:
        clients = AzureClients.build(SUB, base_url=url, credential=_Token())
        for vm in (TARGET, west_vm.lower()):
            out = execute(AzureQuarantine(clients=clients, store=store, actor="test"), Target("azure", vm), apply=True)
            assert out.status == "applied", out.message
    east = rid(SUB, RG, "Microsoft.Network", "networkSecurityGroups", nsg_name("eastus"))
    west = rid(SUB, RG, "Microsoft.Network", "networkSecurityGroups", nsg_name("West Europe"))
    assert world.get(east)["location"] == "eastus" and world.get(west)["location"] == "westeurope"
    assert _nsg_of(world, NIC1).lower() == east.lower() and _nsg_of(world, west_nic).lower() == west.lower()


def test_an_nsg_of_that_name_in_another_region_is_refused(store: Store) -> None:
    world = _world()
    squatter = rid(SUB, RG, "Microsoft.Network", "networkSecurityGroups", nsg_name("eastus"))
    world.add({"id": squatter, "name": nsg_name("eastus"), "location": "westus", "properties": {}})
    with serve_arm(world) as url:
        clients = AzureClients.build(SUB, base_url=url, credential=_Token())
        out = execute(AzureQuarantine(clients=clients, store=store, actor="test"), Target("azure", TARGET), apply=True)
    assert out.status == "refused" and "westus" in out.message
    assert world.mutations() == []
