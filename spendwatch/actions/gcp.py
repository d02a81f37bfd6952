"""GCP quarantine and release of a Compute Engine instance, reversibly.

- `GcpQuarantine` makes sure the instance's network has four shared deny-all firewall rules at priority 0 for
  the network tag `spendwatch-quarantine` (ingress and egress, IPv4 and IPv6: one rule cannot mix the two),
  adds that tag to the instance (with the tags fingerprint, so a concurrent change is reported, not
  overwritten), labels it `spendwatch-quarantine=<finding>` (with the label fingerprint), snapshots every
  attached zonal or regional persistent disk, and stops it only when asked.
- `GcpRelease` undoes exactly what the stored quarantine record says was done.

The target is the instance's relative name, `projects/<project>/zones/<zone>/instances/<name>` (the GCP
connector's convention). google-cloud-compute is imported only in `GcpClients.build`; the actions take clients,
so tests pass clients pointed at a local fake.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from .base import ActionSettings, QuarantineAction, Refused, ReleaseAction, Step, Target, now_utc

QUARANTINE_TAG = "spendwatch-quarantine"  # the network tag the firewall rules target
QUARANTINE_LABEL = "spendwatch-quarantine"
PROTECTED_LABEL = "spendwatch-protected"
DENY_INGRESS = "spendwatch-quarantine-deny-ingress"
DENY_EGRESS = "spendwatch-quarantine-deny-egress"
DENY_INGRESS_V6 = "spendwatch-quarantine-deny-ingress-v6"
DENY_EGRESS_V6 = "spendwatch-quarantine-deny-egress-v6"
# (rule name, direction, range). A VPC firewall rule holds IPv4 or IPv6 ranges, never both, so a dual-stack
# instance needs the IPv6 pair too; on an IPv4-only network the IPv6 rules match nothing and cost nothing.
DENY_RULES = (
    (DENY_INGRESS, "INGRESS", "0.0.0.0/0"),
    (DENY_EGRESS, "EGRESS", "0.0.0.0/0"),
    (DENY_INGRESS_V6, "INGRESS", "::/0"),
    (DENY_EGRESS_V6, "EGRESS", "::/0"),
)
_RESOURCE = re.compile(r"^projects/([^/]+)/zones/([^/]+)/instances/([^/]+)$")
_DISK = re.compile(r"projects/([^/]+)/(zones|regions)/([^/]+)/disks/([^/]+)$")
_NAME_MAX = 63


@dataclass
class GcpClients:
    """The google-cloud-compute clients the GCP actions use, all REST, built once per command.

    Example::

        clients = GcpClients.build("my-project")                               # Application Default Credentials
        clients = GcpClients.build("my-project", endpoint="http://127.0.0.1:8089",
                                   credentials=AnonymousCredentials())         # tests, against a local fake
    """

    project: str
    instances: Any
    firewalls: Any
    disks: Any
    region_disks: Any
    zone_operations: Any
    region_operations: Any
    global_operations: Any

    @classmethod
    def build(cls, project: str, endpoint: str | None = None, credentials: Any = None) -> GcpClients:
        from google.api_core.client_options import ClientOptions  # lazily: the core must not need the GCP SDK
        from google.cloud import compute_v1

        kwargs: dict[str, Any] = {"transport": "rest"}
        if endpoint:
            # Operations are polled through clients built with the same options (the *_unary methods), since
            # the extended-operation helper ignores the endpoint.
            kwargs["client_options"] = ClientOptions(api_endpoint=endpoint)
        if credentials is not None:
            kwargs["credentials"] = credentials
        return cls(
            project=project,
            instances=compute_v1.InstancesClient(**kwargs),
            firewalls=compute_v1.FirewallsClient(**kwargs),
            disks=compute_v1.DisksClient(**kwargs),
            region_disks=compute_v1.RegionDisksClient(**kwargs),
            zone_operations=compute_v1.ZoneOperationsClient(**kwargs),
            region_operations=compute_v1.RegionOperationsClient(**kwargs),
            global_operations=compute_v1.GlobalOperationsClient(**kwargs),
        )


def parse_instance(resource: str) -> tuple[str, str, str]:
    """(project, zone, name) of `projects/P/zones/Z/instances/N`; anything else is refused."""
    m = _RESOURCE.match(resource.strip())
    if not m:
        raise Refused(f"{resource!r} is not a GCP instance name; use projects/PROJECT/zones/ZONE/instances/NAME")
    return m.group(1), m.group(2), m.group(3)


def _label_value(value: str) -> str:
    """A label value Compute accepts: lowercase letters, digits, '-' and '_', at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "-", value.lower())[:_NAME_MAX] or "manual"


def _last(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def _disk_location(source: str, project: str) -> tuple[str, str, str] | None:
    """("zones" or "regions", zone or region, disk name) of an attached disk's source URL in `project`; None for
    anything else (a disk of another project, or no source)."""
    m = _DISK.search(source)
    if not m or m.group(1) != project:
        return None
    return m.group(2), m.group(3), m.group(4)


def _is_not_found(exc: Exception) -> bool:
    return getattr(exc, "code", None) == 404 or type(exc).__name__ == "NotFound"


class _GcpMixin:
    clients: GcpClients
    resolved: Target | None

    def _resolve(self, target: Target) -> tuple[Target, str, str, str]:
        project, zone, name = parse_instance(target.resource)
        if target.account and target.account != project:
            raise Refused(f"{target.resource} is in project {project}, not {target.account}")
        if project != self.clients.project:
            raise Refused(f"the GCP clients were built for project {self.clients.project}, not {project}")
        region = zone.rsplit("-", 1)[0]
        if target.region and target.region not in (region, zone):
            raise Refused(f"{target.resource} is in {zone} ({region}), not {target.region}")
        self.resolved = replace(target, cloud="gcp", account=project, region=region)
        return self.resolved, project, zone, name

    def _instance(self, project: str, zone: str, name: str) -> Any:
        try:
            return self.clients.instances.get(project=project, zone=zone, instance=name)
        except Exception as exc:
            if _is_not_found(exc):
                raise Refused(f"no Compute Engine instance {name} in {project}/{zone}") from exc
            raise

    def _wait_zone(self, project: str, zone: str, op: Any) -> dict[str, Any]:
        while True:
            if op.status == op.Status.DONE or str(op.status).endswith("DONE"):
                break
            op = self.clients.zone_operations.wait(project=project, zone=zone, operation=op.name)
        return _check(op)

    def _wait_region(self, project: str, region: str, op: Any) -> dict[str, Any]:
        while True:
            if op.status == op.Status.DONE or str(op.status).endswith("DONE"):
                break
            op = self.clients.region_operations.wait(project=project, region=region, operation=op.name)
        return _check(op)

    def _wait_global(self, project: str, op: Any) -> dict[str, Any]:
        while True:
            if op.status == op.Status.DONE or str(op.status).endswith("DONE"):
                break
            op = self.clients.global_operations.wait(project=project, operation=op.name)
        return _check(op)


def _check(op: Any) -> dict[str, Any]:
    errors = list(op.error.errors) if op.error else []
    if errors:
        raise RuntimeError(f"operation {op.name} failed: " + "; ".join(f"{e.code}: {e.message}" for e in errors))
    return {"operation": op.name}


class GcpQuarantine(_GcpMixin, QuarantineAction):
    """Isolate a Compute Engine instance with deny-all firewall rules on a network tag, reversibly.

    Steps, in order (each shown by the dry run, audited, and recorded for `release`):

    1. on each network of the instance, make sure the shared rules `spendwatch-quarantine-deny-ingress`,
       `-deny-egress` (0.0.0.0/0) and `-deny-ingress-v6`, `-deny-egress-v6` (::/0) exist: priority 0, deny all
       protocols, target tag `spendwatch-quarantine` (a deny wins over an allow of equal priority). A rule of
       that name on another network gets the network's name appended;
    2. add the network tag `spendwatch-quarantine` (setTags with the tags fingerprint read by the plan: if the
       tags changed since, Compute answers 412 and the step fails, reported; nothing is overwritten);
    3. label it `spendwatch-quarantine=<finding id or manual>` (setLabels with the label fingerprint);
    4. snapshot every attached persistent disk, zonal or regional (evidence; release keeps them);
    5. only with `stop=True` (CLI `--stop`): stop the instance (memory evidence is lost; release starts it).

    Refused (nothing changed): protected instances (label `spendwatch-protected=true`, or the instance's relative
    name or bare name in the allow-list), instances already quarantined, and clients for another project.

    Example::

        clients = GcpClients.build("ml-prod")
        action = GcpQuarantine(clients=clients, store=store, actor="cli:alice")
        execute(action, Target("gcp", "projects/ml-prod/zones/us-central1-a/instances/train-1"), apply=True)
    """

    name: ClassVar[str] = "gcp.quarantine"
    cloud: ClassVar[str] = "gcp"
    permissions: ClassVar[tuple[str, ...]] = (
        "compute.instances.get",
        "compute.instances.setTags",
        "compute.instances.setLabels",
        "compute.instances.stop",
        "compute.firewalls.get",
        "compute.firewalls.create",
        "compute.networks.updatePolicy",  # firewalls.insert on a network needs it
        "compute.disks.createSnapshot",  # zonal and regional disks alike
        "compute.snapshots.create",
        "compute.zoneOperations.get",
        "compute.regionOperations.get",
        "compute.globalOperations.get",
    )

    def __init__(self, *, clients: GcpClients, store: Any, actor: str, settings: ActionSettings | None = None,
                 stop: bool = False, now: Any = now_utc) -> None:
        super().__init__(store=store, actor=actor, settings=settings, now=now)
        self.clients = clients
        self.stop = stop

    def plan(self, target: Target) -> list[Step]:
        t, project, zone, name = self._resolve(target)
        inst = self._instance(project, zone, name)
        labels = dict(inst.labels)
        if (labels.get(PROTECTED_LABEL, "").strip().lower() == "true" or t.resource in self.settings.protected_ids
                or name in self.settings.protected_ids):
            why = (f"label {PROTECTED_LABEL}=true" if labels.get(PROTECTED_LABEL, "").strip().lower() == "true"
                   else "it is in the protected allow-list")
            raise Refused(f"{t.resource} is protected ({why}); spendwatch never touches protected resources")
        tags = list(inst.tags.items)
        stored = self.store.active_quarantine(cloud="gcp", account=project, resource=t.resource)
        if QUARANTINE_TAG in tags or QUARANTINE_LABEL in labels or stored is not None:
            raise Refused(f"{t.resource} is already quarantined"
                          f"{'' if stored is None else f' (record {stored.id})'}; release it first")
        if inst.status in ("STOPPING", "TERMINATED", "SUSPENDED") and self.stop:
            raise Refused(f"{t.resource} is {inst.status}; --stop has nothing to stop (run without it)")
        networks = sorted({n.network for n in inst.network_interfaces if n.network})
        if not networks:
            raise Refused(f"{t.resource} has no network interface; spendwatch cannot isolate it")
        marker = t.finding_id or "manual"
        tag_fp, label_fp = inst.tags.fingerprint, inst.label_fingerprint
        self.record = {
            "instance": t.resource, "project": project, "zone": zone, "finding": t.finding_id,
            "tags_before": tags, "tag_added": False, "labels_before": labels, "labels_added": {},
            "firewalls": [], "snapshots": [], "stopped": False,
        }
        rec = self.record
        steps: list[Step] = []

        for network in networks:
            for base, direction, cidr in DENY_RULES:
                rule, exists = self._rule_name(project, base, network, direction, cidr)
                if exists:
                    steps.append(Step("firewall", f"firewall rule {rule} on {_last(network)} already denies "
                                      f"{direction.lower()} {cidr} for tag {QUARANTINE_TAG} (reused)"))
                    rec["firewalls"].append(rule)
                    continue

                def create(rule: str = rule, direction: str = direction, network: str = network,
                           cidr: str = cidr) -> dict[str, Any]:
                    done = self._create_rule(project, rule, direction, network, cidr)
                    rec["firewalls"].append(rule)
                    return {"firewall": rule, **done}

                steps.append(Step(
                    "firewall",
                    f"create firewall rule {rule} on network {_last(network)}: {direction.lower()} {cidr}, deny all, "
                    f"priority 0, target tag {QUARANTINE_TAG} (shared by every quarantined instance; kept on release)",
                    ("compute.firewalls.create", "compute.networks.updatePolicy", "compute.globalOperations.get"),
                    create,
                ))

        def tag() -> dict[str, Any]:
            from google.cloud import compute_v1

            op = self.clients.instances.set_tags_unary(
                project=project, zone=zone, instance=name,
                tags_resource=compute_v1.Tags(items=[*tags, QUARANTINE_TAG], fingerprint=tag_fp))
            done = self._wait_zone(project, zone, op)
            rec["tag_added"] = True
            return {"tags": [*tags, QUARANTINE_TAG], "fingerprint": tag_fp, **done}

        steps.append(Step("tag", f"add network tag {QUARANTINE_TAG} to {name} (tags fingerprint {tag_fp}; a change "
                          "since this plan fails the step with 412, nothing is overwritten)",
                          ("compute.instances.setTags", "compute.zoneOperations.get"), tag))

        added = {QUARANTINE_LABEL: _label_value(marker)}

        def label() -> dict[str, Any]:
            from google.cloud import compute_v1

            current = self._instance(project, zone, name)  # the tag step moved nothing but be exact
            fp = current.label_fingerprint or label_fp
            op = self.clients.instances.set_labels_unary(
                project=project, zone=zone, instance=name,
                instances_set_labels_request_resource=compute_v1.InstancesSetLabelsRequest(
                    labels={**dict(current.labels), **added}, label_fingerprint=fp))
            done = self._wait_zone(project, zone, op)
            rec["labels_added"] = dict(added)
            return {"labels": added, "fingerprint": fp, **done}

        steps.append(Step("label", f"label {name} {QUARANTINE_LABEL}={added[QUARANTINE_LABEL]}",
                          ("compute.instances.get", "compute.instances.setLabels", "compute.zoneOperations.get"),
                          label))

        stamp = self.now().strftime("%Y%m%d%H%M%S")
        description = f"spendwatch quarantine of {t.resource} ({marker})"
        for disk in inst.disks:
            source = disk.source or ""
            where = _disk_location(source, project)
            if where is None:
                steps.append(Step("snapshot", f"disk {disk.device_name or source} is not a persistent disk of "
                                  f"project {project}: not snapshotted (snapshot it yourself)"))
                continue
            scope, location, disk_name = where
            snap = f"sw-{stamp}-{disk_name}"[:_NAME_MAX].rstrip("-")

            def snapshot(scope: str = scope, location: str = location, disk_name: str = disk_name,
                         snap: str = snap) -> dict[str, Any]:
                from google.cloud import compute_v1

                resource = compute_v1.Snapshot(name=snap, description=description)
                if scope == "zones":
                    done = self._wait_zone(project, location, self.clients.disks.create_snapshot_unary(
                        project=project, zone=location, disk=disk_name, snapshot_resource=resource))
                else:  # a regional persistent disk, replicated across two zones of the region
                    done = self._wait_region(project, location, self.clients.region_disks.create_snapshot_unary(
                        project=project, region=location, disk=disk_name, snapshot_resource=resource))
                rec["snapshots"].append(snap)
                return {"disk": f"{scope}/{location}/disks/{disk_name}", "snapshot": snap, **done}

            kind = "regional disk" if scope == "regions" else "disk"
            steps.append(Step("snapshot", f"snapshot {kind} {disk_name} ({location}) as {snap} (kept on release)",
                              ("compute.disks.createSnapshot", "compute.snapshots.create",
                               "compute.zoneOperations.get" if scope == "zones" else "compute.regionOperations.get"),
                              snapshot))

        if self.stop:
            def stop() -> dict[str, Any]:
                done = self._wait_zone(project, zone, self.clients.instances.stop_unary(
                    project=project, zone=zone, instance=name))
                rec["stopped"] = True
                return done

            steps.append(Step("stop", f"stop {name} (memory evidence is lost; release starts it)",
                              ("compute.instances.stop", "compute.zoneOperations.get"), stop))
        return steps

    def _rule_name(self, project: str, base: str, network: str, direction: str, cidr: str) -> tuple[str, bool]:
        """The rule to use on `network` and whether it already exists there in the right shape."""
        for rule in (base, f"{base}-{_last(network)}"[:_NAME_MAX].rstrip("-")):
            try:
                fw = self.clients.firewalls.get(project=project, firewall=rule)
            except Exception as exc:
                if _is_not_found(exc):
                    return rule, False
                raise
            if _last(fw.network) != _last(network):
                continue  # same name, other network: try the network-specific name
            denies_all = any(d.I_p_protocol == "all" and not list(d.ports) for d in fw.denied)
            ranges = list(fw.source_ranges if direction == "INGRESS" else fw.destination_ranges)
            if (fw.priority != 0 or fw.disabled or not denies_all or list(fw.target_tags) != [QUARANTINE_TAG]
                    or fw.direction != direction or ranges != [cidr]):
                raise Refused(f"firewall rule {rule} exists but is not spendwatch's deny-all rule ({direction.lower()} "
                              f"{cidr}, priority 0, deny all, target tag {QUARANTINE_TAG}, enabled); fix or delete "
                              "it, then run again")
            return rule, True
        raise Refused(f"firewall rules {base} and {base}-{_last(network)} both belong to other networks")

    def _create_rule(self, project: str, rule: str, direction: str, network: str, cidr: str) -> dict[str, Any]:
        from google.cloud import compute_v1

        fw = compute_v1.Firewall(
            name=rule, network=network, direction=direction, priority=0,
            denied=[compute_v1.Denied(I_p_protocol="all")], target_tags=[QUARANTINE_TAG],
            description="spendwatch quarantine: deny all traffic of instances tagged spendwatch-quarantine",
        )
        if direction == "INGRESS":
            fw.source_ranges = [cidr]
        else:
            fw.destination_ranges = [cidr]
        return self._wait_global(project, self.clients.firewalls.insert_unary(project=project, firewall_resource=fw))


class GcpRelease(_GcpMixin, ReleaseAction):
    """Undo a `gcp.quarantine`, exactly, from the record it left in the state database.

    Starts the instance if the quarantine stopped it, removes the `spendwatch-quarantine` network tag and the
    labels the quarantine added (restoring any value they replaced), each with the current fingerprint so
    changes made since the quarantine are kept. Snapshots are kept (evidence), and so are the shared firewall
    rules: they only match instances carrying the tag, and other instances may still be quarantined.
    Refuses an instance spendwatch did not quarantine.

    Example::

        spendwatch release projects/ml-prod/zones/us-central1-a/instances/train-1 --cloud gcp --apply
    """

    name: ClassVar[str] = "gcp.release"
    cloud: ClassVar[str] = "gcp"
    permissions: ClassVar[tuple[str, ...]] = (
        "compute.instances.get",
        "compute.instances.setTags",
        "compute.instances.setLabels",
        "compute.instances.start",
        "compute.zoneOperations.get",
    )

    def __init__(self, *, clients: GcpClients, store: Any, actor: str, settings: ActionSettings | None = None,
                 now: Any = now_utc) -> None:
        super().__init__(store=store, actor=actor, settings=settings, now=now)
        self.clients = clients

    def plan(self, target: Target) -> list[Step]:
        t, project, zone, name = self._resolve(target)
        rec = self.load(t, account=project)
        if t.finding_id is None and rec.get("finding"):
            self.resolved = t = replace(t, finding_id=rec["finding"])
        self._instance(project, zone, name)
        steps: list[Step] = []

        if rec.get("stopped"):
            def start() -> dict[str, Any]:
                done = self._wait_zone(project, zone, self.clients.instances.start_unary(
                    project=project, zone=zone, instance=name))
                rec["stopped"] = False
                return done

            steps.append(Step("start", f"start {name} (the quarantine stopped it)",
                              ("compute.instances.start", "compute.zoneOperations.get"), start))

        if rec.get("labels_added"):
            added: dict[str, str] = dict(rec["labels_added"])
            before: dict[str, str] = dict(rec.get("labels_before", {}))

            def unlabel() -> dict[str, Any]:
                from google.cloud import compute_v1

                current = self._instance(project, zone, name)
                labels = {k: v for k, v in dict(current.labels).items() if k not in added}
                labels.update({k: before[k] for k in added if k in before})
                op = self.clients.instances.set_labels_unary(
                    project=project, zone=zone, instance=name,
                    instances_set_labels_request_resource=compute_v1.InstancesSetLabelsRequest(
                        labels=labels, label_fingerprint=current.label_fingerprint))
                done = self._wait_zone(project, zone, op)
                rec["labels_added"] = {}
                return {"labels": labels, **done}

            steps.append(Step("unlabel", f"remove label(s) {', '.join(added)} from {name}",
                              ("compute.instances.get", "compute.instances.setLabels", "compute.zoneOperations.get"),
                              unlabel))

        if rec.get("tag_added"):
            def untag() -> dict[str, Any]:
                from google.cloud import compute_v1

                current = self._instance(project, zone, name)
                items = [i for i in current.tags.items if i != QUARANTINE_TAG]
                op = self.clients.instances.set_tags_unary(
                    project=project, zone=zone, instance=name,
                    tags_resource=compute_v1.Tags(items=items, fingerprint=current.tags.fingerprint))
                done = self._wait_zone(project, zone, op)
                rec["tag_added"] = False
                return {"tags": items, **done}

            steps.append(Step("untag", f"remove network tag {QUARANTINE_TAG} from {name} (the deny-all rules stop "
                              "applying to it)", ("compute.instances.get", "compute.instances.setTags",
                                                  "compute.zoneOperations.get"), untag))

        if rec.get("firewalls"):
            steps.append(Step("keep-firewalls", f"keep firewall rules {', '.join(sorted(set(rec['firewalls'])))}: "
                              "shared, they match only tagged instances, and others may still be quarantined"))
        if rec.get("snapshots"):
            steps.append(Step("keep-snapshots", f"keep snapshots {', '.join(rec['snapshots'])} (evidence; delete "
                              "them yourself when the incident is closed)"))
        return steps
