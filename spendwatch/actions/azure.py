"""Azure quarantine and release of a virtual machine, reversibly.

- `AzureQuarantine` records each NIC's network security group, attaches a deny-all NSG
  (`spendwatch-quarantine-<region>`, one per resource group and region, shared: an NSG can only be attached to
  NICs in its own region) to every NIC, tags the VM, snapshots every managed disk, and deallocates the VM only
  when asked.
- `AzureRelease` undoes exactly what the stored record says was done: puts back each NIC's original NSG (or
  none), removes the tag, starts the VM if the quarantine deallocated it. Snapshots and the shared NSG stay.

The target is the VM's ARM id in lower case (the Azure connector's convention). The azure-mgmt SDKs are
imported only in `AzureClients.build`.

Every change is a long-running operation: the SDK polls the `Azure-AsyncOperation` URL ARM answers with
(`/subscriptions/<sub>/providers/<provider>/locations/<region>/operations/<id>`), which needs that provider's
`locations/operations/read`, and reads the resource when it is done (hence `snapshots/read`). Both are in the
declared permissions; tests/actions/test_azure.py checks them against the requests the SDK really makes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

from .base import ActionSettings, QuarantineAction, Refused, ReleaseAction, Step, Target, now_utc

QUARANTINE_TAG = "spendwatch-quarantine"
PROTECTED_TAGS = ("spendwatch-protected", "spendwatch:protected")
QUARANTINE_NSG = "spendwatch-quarantine"  # prefix: the NSG is spendwatch-quarantine-<region>
DENY_RULES = (("DenyAllInbound", "Inbound"), ("DenyAllOutbound", "Outbound"))
COMPUTE_POLL = "Microsoft.Compute/locations/operations/read"
NETWORK_POLL = "Microsoft.Network/locations/operations/read"
# What Azure documents about existing flows, quoted in the plan so the operator knows what to expect.
FLUSH_NOTE = (
    "Azure documents only NSG `flushConnection`: 'When enabled, flows created from Network Security Group "
    "connections will be re-evaluated when rules are updated. Initial enablement will trigger re-evaluation.' "
    "Whether attaching an NSG to a NIC drops the NIC's existing flows is not documented; spendwatch therefore "
    "creates the NSG with flushConnection off, attaches it, then turns flushConnection on (the documented "
    "trigger) so established flows are re-evaluated against the deny-all rules"
)


@dataclass
class AzureClients:
    """The azure-mgmt clients for one subscription.

    Example::

        clients = AzureClients.build("11111111-...")                                   # DefaultAzureCredential
        clients = AzureClients.build(sub, base_url="http://127.0.0.1:8080", credential=token)  # local fake
    """

    subscription_id: str
    compute: Any
    network: Any

    @classmethod
    def build(cls, subscription_id: str, base_url: str | None = None, credential: Any = None) -> AzureClients:
        from azure.mgmt.compute import ComputeManagementClient  # lazily: the core needs no Azure SDK
        from azure.mgmt.network import NetworkManagementClient

        from spendwatch.connectors.azure.inventory import AzureOptions, _client_kwargs

        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        plain_http = bool(base_url and base_url.startswith("http://"))
        kwargs = _client_kwargs(AzureOptions(credential=credential, base_url=base_url, allow_http=plain_http,
                                             retry_total=2, retry_backoff_factor=0.01 if plain_http else 0.8))
        return cls(subscription_id, ComputeManagementClient(credential, subscription_id, **kwargs),
                   NetworkManagementClient(credential, subscription_id, **kwargs))


def parse_vm_id(resource: str) -> tuple[str, str, str]:
    """(subscription, resource group, VM name) of a VM ARM id, any case."""
    parts = resource.strip("/").split("/")
    low = [p.lower() for p in parts]
    if (len(parts) != 8 or low[0] != "subscriptions" or low[2] != "resourcegroups" or low[4] != "providers"
            or low[5] != "microsoft.compute" or low[6] != "virtualmachines"):
        raise Refused(f"{resource!r} is not an Azure VM id (/subscriptions/<sub>/resourceGroups/<rg>/providers/"
                      "Microsoft.Compute/virtualMachines/<name>)")
    return parts[1], parts[3], parts[7]


def nsg_name(location: str) -> str:
    """The deny-all NSG for VMs in `location` ("East US" and "eastus" alike give spendwatch-quarantine-eastus)."""
    return f"{QUARANTINE_NSG}-{location.lower().replace(' ', '')}"


def _rg_name(arm_id: str) -> tuple[str, str]:
    parts = arm_id.strip("/").split("/")
    return parts[3], parts[-1]


def _not_found(exc: Exception) -> bool:
    return getattr(exc, "status_code", None) == 404


class _AzureMixin:
    clients: AzureClients
    resolved: Target | None

    def _resolve(self, target: Target) -> tuple[Target, str, str]:
        sub, rg, name = parse_vm_id(target.resource)
        if sub.lower() != self.clients.subscription_id.lower():
            raise Refused(f"the Azure clients are for subscription {self.clients.subscription_id}, not {sub}")
        if target.account and target.account.lower() != sub.lower():
            raise Refused(f"{target.resource} is in subscription {sub}, not {target.account}")
        self.resolved = replace(target, cloud="azure", resource=target.resource.lower(), account=sub.lower())
        return self.resolved, rg, name

    def _vm(self, rg: str, name: str) -> Any:
        try:
            return self.clients.compute.virtual_machines.get(rg, name)
        except Exception as exc:
            if _not_found(exc):
                raise Refused(f"no Azure VM {name} in resource group {rg}") from exc
            raise

    def _set_tags(self, rg: str, name: str, tags: dict[str, str]) -> None:
        from azure.mgmt.compute.models import VirtualMachineUpdate

        self.clients.compute.virtual_machines.begin_update(rg, name, VirtualMachineUpdate(tags=tags)).result()

    def _set_nsg(self, nic_id: str, nsg_id: str | None) -> None:
        from azure.mgmt.network.models import NetworkSecurityGroup

        net = self.clients.network
        rg, name = _rg_name(nic_id)
        nic = net.network_interfaces.get(rg, name)
        nic.network_security_group = NetworkSecurityGroup(id=nsg_id) if nsg_id else None
        net.network_interfaces.begin_create_or_update(rg, name, nic).result()


class AzureQuarantine(_AzureMixin, QuarantineAction):
    """Isolate an Azure VM behind a deny-all network security group, reversibly.

    Steps (each shown by the dry run, audited and recorded for `release`):

    1. record every NIC's current NSG id (or none) in the state database;
    2. create or reuse `spendwatch-quarantine-<region>` in the VM's resource group (NSGs are regional): DenyAllInbound
       and DenyAllOutbound, access Deny, priority 100, every protocol, port and address, overriding the default
       rules (which sit at 65000+);
    3. attach it to every NIC, then enable its flushConnection so established flows are re-evaluated;
    4. tag the VM `spendwatch-quarantine=<finding id or manual>` (other tags kept);
    5. snapshot every managed disk (kept on release);
    6. only with `stop=True`: deallocate the VM (memory evidence is lost; release starts it again).

    Refused: protected VMs (tag `spendwatch-protected=true`, or the VM id in the allow-list) and VMs already
    quarantined.

    Example::

        action = AzureQuarantine(clients=AzureClients.build(sub), store=store, actor="cli:alice")
        execute(action, Target("azure", vm_id), apply=True)
    """

    name: ClassVar[str] = "azure.quarantine"
    cloud: ClassVar[str] = "azure"
    permissions: ClassVar[tuple[str, ...]] = (
        "Microsoft.Compute/virtualMachines/read",
        "Microsoft.Compute/virtualMachines/write",
        "Microsoft.Network/networkInterfaces/read",
        "Microsoft.Network/networkInterfaces/write",
        "Microsoft.Network/networkSecurityGroups/read",
        "Microsoft.Network/networkSecurityGroups/write",
        "Microsoft.Network/networkSecurityGroups/join/action",
        "Microsoft.Compute/disks/read",
        "Microsoft.Compute/snapshots/write",
        "Microsoft.Compute/snapshots/read",  # the poller reads the snapshot when its creation is done
        "Microsoft.Compute/virtualMachines/deallocate/action",
        "Microsoft.Compute/locations/operations/read",  # polling long-running operations
        "Microsoft.Network/locations/operations/read",
    )

    def __init__(self, *, clients: AzureClients, store: Any, actor: str, settings: ActionSettings | None = None,
                 stop: bool = False, now: Any = now_utc) -> None:
        super().__init__(store=store, actor=actor, settings=settings, now=now)
        self.clients = clients
        self.stop = stop

    def plan(self, target: Target) -> list[Step]:
        t, rg, name = self._resolve(target)
        vm = self._vm(rg, name)
        tags = dict(vm.tags or {})
        protected = next((k for k in PROTECTED_TAGS if tags.get(k, "").strip().lower() == "true"), None)
        allow = {p.lower() for p in self.settings.protected_ids}
        if protected or t.resource in allow or name.lower() in allow:
            why = f"tag {protected}=true" if protected else "it is in the protected allow-list"
            raise Refused(f"{t.resource} is protected ({why}); spendwatch never touches protected resources")
        stored = self.store.active_quarantine(cloud="azure", account=t.account or "", resource=t.resource)
        if QUARANTINE_TAG in tags or stored is not None:
            raise Refused(f"{t.resource} is already quarantined ({QUARANTINE_TAG}={tags.get(QUARANTINE_TAG, '?')}"
                          f"{'' if stored is None else f', record {stored.id}'}); release it first")
        self.resolved = t = replace(t, region=vm.location)
        net = self.clients.network
        nics: dict[str, str | None] = {}
        for ref in (vm.network_profile.network_interfaces if vm.network_profile else None) or []:
            nic_rg, nic_name = _rg_name(ref.id)
            nic = net.network_interfaces.get(nic_rg, nic_name)
            nics[ref.id.lower()] = nic.network_security_group.id if nic.network_security_group else None
        if not nics:
            raise Refused(f"{t.resource} has no network interface; spendwatch cannot isolate it")
        storage = vm.storage_profile
        disk_ids = [d.managed_disk.id for d in ([storage.os_disk] if storage and storage.os_disk else [])
                    + list((storage.data_disks if storage else None) or []) if d.managed_disk and d.managed_disk.id]
        disks = []
        for disk_id in disk_ids:
            d_rg, d_name = _rg_name(disk_id)
            disks.append(self.clients.compute.disks.get(d_rg, d_name))
        nsg = nsg_name(vm.location)
        try:
            found = net.network_security_groups.get(rg, nsg)
        except Exception as exc:
            if not _not_found(exc):
                raise
            found = None
        exists = found is not None
        if found is not None and nsg_name(found.location or "") != nsg:
            raise Refused(f"network security group {nsg} in {rg} is in {found.location}, not {vm.location}; "
                          "rename or delete it, then run again")

        marker = t.finding_id or "manual"
        self.record = {"vm": t.resource, "resource_group": rg, "name": name, "location": vm.location,
                       "finding": t.finding_id, "nics": nics, "nsg": None, "attached": [], "tag": None,
                       "snapshots": [], "deallocated": False}
        rec = self.record
        steps: list[Step] = [Step(
            "record-nsgs", "original NSGs, restored by release: " + "; ".join(
                f"{n.rsplit('/', 1)[-1]}: {g or '(none)'}" for n, g in nics.items()))]

        def ensure_nsg() -> dict[str, Any]:
            rec["nsg"] = self._ensure_nsg(rg, vm.location, flush=False if not exists else None)
            return {"nsg": rec["nsg"]}

        steps.append(Step(
            "prepare-nsg", f"{nsg} in {rg} ({vm.location}, {'reused' if exists else 'created'}): "
            "DenyAllInbound and DenyAllOutbound, access Deny, priority 100, all protocols, ports and addresses",
            ("Microsoft.Network/networkSecurityGroups/read", "Microsoft.Network/networkSecurityGroups/write",
             NETWORK_POLL), ensure_nsg))
        for nic_id, original in nics.items():
            def attach(nic_id: str = nic_id) -> dict[str, Any]:
                self._set_nsg(nic_id, rec["nsg"])
                rec["attached"].append(nic_id)
                return {"nic": nic_id, "was": nics[nic_id]}

            steps.append(Step("attach-nsg", f"{nic_id.rsplit('/', 1)[-1]}: {original or '(no NSG)'} -> {nsg}",
                              ("Microsoft.Network/networkInterfaces/read", "Microsoft.Network/networkInterfaces/write",
                               "Microsoft.Network/networkSecurityGroups/join/action", NETWORK_POLL), attach))

        def flush() -> dict[str, Any]:
            self._ensure_nsg(rg, vm.location, flush=True)
            return {"flushConnection": True}

        steps.append(Step("flush-connections", f"enable flushConnection on {nsg}. {FLUSH_NOTE}",
                          ("Microsoft.Network/networkSecurityGroups/read",
                           "Microsoft.Network/networkSecurityGroups/write", NETWORK_POLL), flush))

        def tag() -> dict[str, Any]:
            current = dict(self._vm(rg, name).tags or {})
            self._set_tags(rg, name, {**current, QUARANTINE_TAG: marker})
            rec["tag"] = QUARANTINE_TAG
            return {"tag": {QUARANTINE_TAG: marker}}

        steps.append(Step("tag", f"tag {name} {QUARANTINE_TAG}={marker} (other tags kept)",
                          ("Microsoft.Compute/virtualMachines/read", "Microsoft.Compute/virtualMachines/write",
                           COMPUTE_POLL), tag))
        stamp = self.now().strftime("%Y%m%d%H%M%S")
        for disk in disks:
            def snapshot(disk: Any = disk) -> dict[str, Any]:
                from azure.mgmt.compute.models import CreationData, Snapshot

                snap_name = f"spendwatch-{disk.name}-{stamp}"[:80]
                # Flattened keywords: older SDKs take them as fields, the newer TypeSpec-generated models map them
                # into `properties` (checked with azure-mgmt-compute 39); those models' stubs list only `properties`.
                snap = self.clients.compute.snapshots.begin_create_or_update(rg, snap_name, Snapshot(  # type: ignore[call-overload]
                    location=disk.location, incremental=False,
                    creation_data=CreationData(create_option="Copy", source_resource_id=disk.id),
                    tags={QUARANTINE_TAG: marker, "spendwatch-vm": name},
                )).result()
                rec["snapshots"].append(snap.id)
                return {"disk": disk.id, "snapshot": snap.id}

            steps.append(Step("snapshot", f"snapshot disk {disk.name} into {rg} (tagged {QUARANTINE_TAG}={marker}; "
                              "kept on release)", ("Microsoft.Compute/disks/read", "Microsoft.Compute/snapshots/write",
                                                   "Microsoft.Compute/snapshots/read", COMPUTE_POLL), snapshot))
        if self.stop:
            def deallocate() -> dict[str, Any]:
                self.clients.compute.virtual_machines.begin_deallocate(rg, name).result()
                rec["deallocated"] = True
                return {}

            steps.append(Step("deallocate", f"deallocate {name} (memory evidence is lost; release starts it)",
                              ("Microsoft.Compute/virtualMachines/deallocate/action", COMPUTE_POLL), deallocate))
        return steps

    def _ensure_nsg(self, rg: str, location: str, *, flush: bool | None) -> str:
        """Create or put back in shape the deny-all NSG; `flush` None keeps its current flushConnection."""
        from azure.mgmt.network.models import NetworkSecurityGroup, SecurityRule

        net = self.clients.network
        name = nsg_name(location)
        current = None
        try:
            current = net.network_security_groups.get(rg, name)
        except Exception as exc:
            if not _not_found(exc):
                raise
        # Flattened keywords, as for Snapshot above (azure-mgmt-network 33 maps them into `properties`).
        rules = [SecurityRule(name=rule, direction=direction, access="Deny", priority=100, protocol="*",  # type: ignore[call-overload]
                              source_address_prefix="*", source_port_range="*", destination_address_prefix="*",
                              destination_port_range="*", description="spendwatch quarantine: deny all")
                 for rule, direction in DENY_RULES]
        if flush is None:
            flush = bool(current and current.flush_connection)
        nsg = NetworkSecurityGroup(location=current.location if current else location, security_rules=rules,  # type: ignore[call-overload]
                                   flush_connection=flush, tags={**((current.tags or {}) if current else {}),
                                                                 "spendwatch-managed": "true"})
        return str(net.network_security_groups.begin_create_or_update(rg, name, nsg).result().id)


class AzureRelease(_AzureMixin, ReleaseAction):
    """Undo an `azure.quarantine` exactly, from the record it left in the state database.

    Puts back each NIC's original NSG (or none), starts the VM if the quarantine deallocated it, and removes the
    `spendwatch-quarantine` tag (other tags kept). Snapshots (evidence) and the shared
    `spendwatch-quarantine-<region>` NSG stay. Refuses a VM spendwatch did not quarantine.

    Example::

        execute(AzureRelease(clients=AzureClients.build(sub), store=store, actor="cli:alice"),
                Target("azure", vm_id), apply=True)
    """

    name: ClassVar[str] = "azure.release"
    cloud: ClassVar[str] = "azure"
    permissions: ClassVar[tuple[str, ...]] = (
        "Microsoft.Compute/virtualMachines/read",
        "Microsoft.Compute/virtualMachines/write",
        "Microsoft.Compute/virtualMachines/start/action",
        "Microsoft.Network/networkInterfaces/read",
        "Microsoft.Network/networkInterfaces/write",
        "Microsoft.Network/networkSecurityGroups/join/action",
        "Microsoft.Compute/locations/operations/read",  # polling long-running operations
        "Microsoft.Network/locations/operations/read",
    )

    def __init__(self, *, clients: AzureClients, store: Any, actor: str, settings: ActionSettings | None = None,
                 now: Any = now_utc) -> None:
        super().__init__(store=store, actor=actor, settings=settings, now=now)
        self.clients = clients

    def plan(self, target: Target) -> list[Step]:
        t, rg, name = self._resolve(target)
        rec = self.load(t, account=t.account or "")
        self.resolved = replace(t, region=rec.get("location"))
        steps: list[Step] = []
        nsg = str(rec.get("nsg") or QUARANTINE_NSG).rsplit("/", 1)[-1]
        for nic_id in list(rec.get("attached", [])):
            original = rec["nics"].get(nic_id)

            def restore(nic_id: str = nic_id, original: str | None = original) -> dict[str, Any]:
                self._set_nsg(nic_id, original)
                rec["attached"].remove(nic_id)
                return {"nic": nic_id, "nsg": original}

            steps.append(Step("restore-nsg", f"{nic_id.rsplit('/', 1)[-1]}: {nsg} -> {original or '(no NSG)'}",
                              ("Microsoft.Network/networkInterfaces/read", "Microsoft.Network/networkInterfaces/write",
                               "Microsoft.Network/networkSecurityGroups/join/action", NETWORK_POLL), restore))
        if rec.get("deallocated"):
            def start() -> dict[str, Any]:
                self.clients.compute.virtual_machines.begin_start(rg, name).result()
                rec["deallocated"] = False
                return {}

            steps.append(Step("start", f"start {name} (the quarantine deallocated it)",
                              ("Microsoft.Compute/virtualMachines/start/action", COMPUTE_POLL), start))
        if rec.get("tag"):
            def untag() -> dict[str, Any]:
                current = dict(self._vm(rg, name).tags or {})
                current.pop(QUARANTINE_TAG, None)
                self._set_tags(rg, name, current)
                rec["tag"] = None
                return {"removed": QUARANTINE_TAG}

            steps.append(Step("untag", f"remove tag {QUARANTINE_TAG} from {name} (other tags kept)",
                              ("Microsoft.Compute/virtualMachines/read", "Microsoft.Compute/virtualMachines/write",
                               COMPUTE_POLL), untag))
        steps.append(Step("keep", f"kept: snapshots {', '.join(rec.get('snapshots', [])) or '(none)'} and the "
                          f"shared {nsg} NSG"))
        return steps
