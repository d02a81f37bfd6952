"""GCP quarantine and release through the real google-cloud-compute REST clients against a local fake."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fakes.gcp_compute_write import ComputeWorld, serve_compute

from spendwatch.actions import ACTIONS, ActionSettings, Target, execute
from spendwatch.actions.gcp import (
    DENY_EGRESS,
    DENY_EGRESS_V6,
    DENY_INGRESS,
    DENY_INGRESS_V6,
    QUARANTINE_TAG,
    GcpClients,
    GcpQuarantine,
    GcpRelease,
)
from spendwatch.store import Store

P, Z = "ml-prod", "us-central1-a"
RES = f"projects/{P}/zones/{Z}/instances/train-1"
ACTOR = "test:alice"


@pytest.fixture
def gcp() -> Iterator[tuple[ComputeWorld, GcpClients]]:
    from google.auth.credentials import AnonymousCredentials

    world = ComputeWorld()
    world.add_instance(P, Z, "train-1", tags=["http-server", "gpu"], labels={"team": "ml"},
                       disks=["train-1-boot", "train-1-data"])
    with serve_compute(world) as url:
        yield world, GcpClients.build(P, endpoint=url, credentials=AnonymousCredentials())


def quarantine(clients: GcpClients, store: Store, resource: str = RES, *, apply: bool = True,
               settings: ActionSettings | None = None, **kwargs: Any) -> Any:
    action = GcpQuarantine(clients=clients, store=store, actor=ACTOR, settings=settings, **kwargs)
    return execute(action, Target("gcp", resource), apply=apply)


def release(clients: GcpClients, store: Store, resource: str = RES, *, apply: bool = True) -> Any:
    return execute(GcpRelease(clients=clients, store=store, actor=ACTOR), Target("gcp", resource), apply=apply)


def test_registered_with_exact_permissions() -> None:
    assert ACTIONS["gcp.quarantine"] is GcpQuarantine and ACTIONS["gcp.release"] is GcpRelease
    assert set(GcpQuarantine.permissions) == {
        "compute.instances.get", "compute.instances.setTags", "compute.instances.setLabels", "compute.instances.stop",
        "compute.firewalls.get", "compute.firewalls.create", "compute.networks.updatePolicy",
        "compute.disks.createSnapshot", "compute.snapshots.create", "compute.zoneOperations.get",
        "compute.regionOperations.get", "compute.globalOperations.get"}
    assert set(GcpRelease.permissions) == {"compute.instances.get", "compute.instances.setTags",
                                           "compute.instances.setLabels", "compute.instances.start",
                                           "compute.zoneOperations.get"}
    for cls in (GcpQuarantine, GcpRelease):  # every step's permissions are declared
        assert "compute.firewalls.delete" not in cls.permissions


def test_dry_run_sends_nothing_mutating(gcp: tuple[ComputeWorld, GcpClients], store: Store) -> None:
    world, clients = gcp
    outcome = quarantine(clients, store, apply=False, stop=True)
    assert outcome.status == "planned", outcome.message
    assert [s.name for s in outcome.steps] == ["firewall"] * 4 + ["tag", "label", "snapshot", "snapshot", "stop"]
    assert world.log and world.mutations == []
    assert store.quarantines() == []
    declared = set(GcpQuarantine.permissions)
    assert all(set(s.permissions) <= declared for s in outcome.steps)


def test_quarantine_then_release_restores_exactly(gcp: tuple[ComputeWorld, GcpClients], store: Store) -> None:
    world, clients = gcp
    before = world.instance(P, Z, "train-1")
    tags_before, labels_before = list(before["tags"]["items"]), dict(before["labels"])
    fingerprint = before["tags"]["fingerprint"]

    outcome = quarantine(clients, store)
    assert outcome.status == "applied", outcome.message
    inst = world.instance(P, Z, "train-1")
    assert inst["tags"]["items"] == [*tags_before, QUARANTINE_TAG]
    assert inst["labels"] == {**labels_before, "spendwatch-quarantine": "manual"}
    assert inst["status"] == "RUNNING"  # no stop unless asked
    (set_tags,) = [r for r in world.log if r.path.endswith("/setTags")]
    assert set_tags.body["fingerprint"] == fingerprint  # the fingerprint read by the plan is sent
    (set_labels,) = [r for r in world.log if r.path.endswith("/setLabels")]
    assert set_labels.body["labelFingerprint"]

    rules = {k.split("/", 1)[1]: v for k, v in world.firewalls.items()}
    assert set(rules) == {DENY_INGRESS, DENY_EGRESS, DENY_INGRESS_V6, DENY_EGRESS_V6}
    for name, direction, ranges, cidr in ((DENY_INGRESS, "INGRESS", "sourceRanges", "0.0.0.0/0"),
                                          (DENY_EGRESS, "EGRESS", "destinationRanges", "0.0.0.0/0"),
                                          (DENY_INGRESS_V6, "INGRESS", "sourceRanges", "::/0"),
                                          (DENY_EGRESS_V6, "EGRESS", "destinationRanges", "::/0")):
        rule = rules[name]
        assert rule["direction"] == direction and rule["priority"] == 0
        assert rule["denied"] == [{"IPProtocol": "all"}] and rule["targetTags"] == [QUARANTINE_TAG]
        assert rule[ranges] == [cidr] and rule["network"].endswith("/global/networks/default")
        other = "destinationRanges" if ranges == "sourceRanges" else "sourceRanges"
        assert not rule.get(other)  # one family per rule: GCP refuses a rule mixing IPv4 and IPv6
    assert sorted(s["sourceDisk"].rsplit("/", 1)[-1] for s in world.snapshots.values()) == \
        ["train-1-boot", "train-1-data"]

    stored = store.active_quarantine(cloud="gcp", account=P, resource=RES)
    assert stored is not None and stored.state == "active"
    assert stored.record["tags_before"] == tags_before and stored.record["labels_before"] == labels_before
    assert len(stored.record["snapshots"]) == 2

    again = quarantine(clients, store)
    assert again.status == "refused" and "already quarantined" in again.message

    dry = release(clients, store, apply=False)
    mutations = len(world.mutations)
    assert dry.status == "planned" and len(world.mutations) == mutations

    back = release(clients, store)
    assert back.status == "applied", back.message
    inst = world.instance(P, Z, "train-1")
    assert inst["tags"]["items"] == tags_before and inst["labels"] == labels_before
    assert len(world.firewalls) == 4 and len(world.snapshots) == 2  # shared rules and evidence kept
    assert [s.name for s in back.steps] == ["unlabel", "untag", "keep-firewalls", "keep-snapshots"]
    assert not any(r.method == "DELETE" for r in world.log)
    assert store.active_quarantine(cloud="gcp", account=P, resource=RES) is None


def test_second_quarantine_reuses_the_shared_rules_and_stop_is_undone(
        gcp: tuple[ComputeWorld, GcpClients], store: Store) -> None:
    world, clients = gcp
    world.add_instance(P, Z, "train-2")
    assert quarantine(clients, store).status == "applied"
    other = f"projects/{P}/zones/{Z}/instances/train-2"
    outcome = quarantine(clients, store, other, stop=True)
    assert outcome.status == "applied", outcome.message
    assert sum(r.path.endswith("/global/firewalls") for r in world.mutations) == 4  # created once
    assert world.instance(P, Z, "train-2")["status"] == "TERMINATED"
    assert release(clients, store, other).status == "applied"
    assert world.instance(P, Z, "train-2")["status"] == "RUNNING"


def test_release_of_an_instance_spendwatch_did_not_quarantine_is_refused(
        gcp: tuple[ComputeWorld, GcpClients], store: Store) -> None:
    world, clients = gcp
    outcome = release(clients, store, apply=True)
    assert outcome.status == "refused" and "no active quarantine" in outcome.message
    assert world.mutations == []


@pytest.mark.parametrize("how", ["label", "allow-list", "allow-list-name"])
def test_protected_instance_is_refused(gcp: tuple[ComputeWorld, GcpClients], store: Store, how: str) -> None:
    world, clients = gcp
    settings = None
    if how == "label":
        world.instance(P, Z, "train-1")["labels"]["spendwatch-protected"] = "true"
    else:
        settings = ActionSettings(protected_ids=frozenset({RES if how == "allow-list" else "train-1"}))
    outcome = quarantine(clients, store, settings=settings)
    assert outcome.status == "refused" and "protected" in outcome.message
    assert world.mutations == [] and store.quarantines() == []


def test_stale_fingerprint_is_reported_not_ignored(gcp: tuple[ComputeWorld, GcpClients], store: Store) -> None:
    world, clients = gcp
    action = GcpQuarantine(clients=clients, store=store, actor=ACTOR)
    target = Target("gcp", RES)
    steps = action.plan(target)
    world.set_tags_behind_their_back(P, Z, "train-1", ["someone-else"])  # tags change between plan and apply
    outcome = action.apply(action.resolved or target, steps)
    assert outcome.status == "partial"
    failed = [s for s in outcome.steps if s.outcome == "failed"]
    assert [s.name for s in failed] == ["tag"] and "412" in failed[0].detail["error"]
    assert world.instance(P, Z, "train-1")["tags"]["items"] == ["someone-else"]  # not overwritten
    assert "spendwatch-quarantine" not in world.instance(P, Z, "train-1")["labels"]  # later steps skipped
    stored = store.active_quarantine(cloud="gcp", account=P, resource=RES)
    assert stored is not None and stored.state == "partial" and stored.record["tag_added"] is False
    # the partial quarantine can be released: nothing to undo but the shared rules are kept
    back = release(clients, store)
    assert back.status == "applied" and world.instance(P, Z, "train-1")["tags"]["items"] == ["someone-else"]


def test_malformed_or_foreign_target_is_refused(gcp: tuple[ComputeWorld, GcpClients], store: Store) -> None:
    world, clients = gcp
    assert quarantine(clients, store, "train-1").status == "refused"
    assert quarantine(clients, store, f"projects/other/zones/{Z}/instances/train-1").status == "refused"
    assert "no Compute Engine instance" in quarantine(clients, store, RES.replace("train-1", "nope")).message
    assert world.mutations == []


def test_the_cli_quarantines_and_releases_a_gcp_instance(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`spendwatch quarantine --cloud gcp`: a dry run sends nothing, --apply tags the instance, release undoes it."""
    from spendwatch.cli import main

    monkeypatch.delenv("SPENDWATCH_PROTECTED_IDS", raising=False)
    world = ComputeWorld()
    world.add_instance(P, Z, "train-1", tags=["gpu"], labels={"team": "ml"}, disks=["train-1-boot"])
    state = str(tmp_path / "s.db")
    with serve_compute(world) as url:
        base = ["--cloud", "gcp", "--endpoint-url", url, "--state", state, "--json"]
        assert main(["quarantine", RES, *base]) == 0
        assert world.instance(P, Z, "train-1")["tags"]["items"] == ["gpu"]  # the dry run changed nothing
        assert main(["quarantine", RES, *base, "--apply"]) == 0
        assert QUARANTINE_TAG in world.instance(P, Z, "train-1")["tags"]["items"]
        assert main(["release", RES, *base, "--apply"]) == 0
        assert world.instance(P, Z, "train-1")["tags"]["items"] == ["gpu"]
        assert main(["quarantine", RES, *base, "--principal", "x"]) == 2  # principals: AWS only
    capsys.readouterr()


def test_regional_disks_are_snapshotted_in_their_region(store: Store) -> None:
    from google.auth.credentials import AnonymousCredentials

    world = ComputeWorld(slow_operations=True)
    world.add_instance(P, Z, "train-3", disks=["train-3-boot"], regional_disks=["shared-data"])
    with serve_compute(world) as url:
        clients = GcpClients.build(P, endpoint=url, credentials=AnonymousCredentials())
        outcome = quarantine(clients, store, f"projects/{P}/zones/{Z}/instances/train-3")
    assert outcome.status == "applied", outcome.message
    sources = sorted(s["sourceDisk"].split("/projects/", 1)[1] for s in world.snapshots.values())
    assert sources == [f"{P}/regions/us-central1/disks/shared-data", f"{P}/zones/{Z}/disks/train-3-boot"]
    polled = {r.path.split("/")[5] for r in world.log if "/operations/" in r.path}  # /compute/v1/projects/P/<scope>
    assert polled == {"zones", "regions", "global"}  # every kind of operation was waited for, in its scope
    regional = [r for r in world.log if "/regions/" in r.path and "/operations/" in r.path]
    assert regional and all(r.path.startswith(f"/compute/v1/projects/{P}/regions/us-central1/") for r in regional)


def test_requests_made_need_exactly_the_declared_permissions(store: Store) -> None:
    """Every request an action sends maps (per the Compute API reference) to a permission it declares, and a
    full quarantine (regional disk, stop, operations polled) and release use every one of them."""
    from google.auth.credentials import AnonymousCredentials

    world = ComputeWorld(slow_operations=True)
    world.add_instance(P, Z, "train-4", disks=["train-4-boot"], regional_disks=["shared-data"])
    resource = f"projects/{P}/zones/{Z}/instances/train-4"
    with serve_compute(world) as url:
        clients = GcpClients.build(P, endpoint=url, credentials=AnonymousCredentials())
        assert quarantine(clients, store, resource, stop=True).status == "applied"
        assert world.permissions() == set(GcpQuarantine.permissions)
        world.log.clear()
        assert release(clients, store, resource).status == "applied"
        assert world.permissions() == set(GcpRelease.permissions)
