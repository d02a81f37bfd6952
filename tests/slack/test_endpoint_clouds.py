"""The Slack buttons on GCP and Azure findings, and principal containment, clicked through signed requests.

GCP and Azure act through the real google-cloud-compute and azure-mgmt clients against the stateful fakes in
tests/fakes (the endpoint builds them itself from the finding, as in production: project from the instance's
name, subscription from the VM's id); principal containment acts on moto's IAM. Each test checks the cloud's
state, the store (quarantine record, finding status, audit) and the alert as the fake Slack holds it.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from google.auth.credentials import AnonymousCredentials

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fakes.azure_arm_write import ArmWorld, rid, serve_arm
from fakes.gcp_compute_write import ComputeWorld, serve_compute

from spendwatch.actions.aws import PRINCIPAL_POLICY
from spendwatch.actions.azure import QUARANTINE_TAG as AZURE_TAG
from spendwatch.actions.azure import nsg_name
from spendwatch.actions.gcp import QUARANTINE_TAG as GCP_TAG

from .conftest import ACCOUNT, ALICE, CAROL, MALLORY, ROLE, Endpoint, Instance, make_finding

P, Z = "ml-prod", "us-central1-a"
GCP_VM = f"projects/{P}/zones/{Z}/instances/train-1"
SUB, RG = "22222222-bbbb-4bbb-8bbb-222222222222", "GPU-RG"
APP_NSG = rid(SUB, RG, "Microsoft.Network", "networkSecurityGroups", "app-nsg")


def wait(ep: Endpoint) -> None:
    assert ep.app.wait_idle(20), "the endpoint's work did not finish"


class _Token:
    """A bearer token for the local ARM fake (it checks none)."""

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken("fake-token", int(time.time()) + 3600)


@pytest.fixture
def gcp(served: Any) -> Iterator[tuple[ComputeWorld, Endpoint]]:
    world = ComputeWorld()
    world.add_instance(P, Z, "train-1", tags=["gpu"], labels={"team": "ml"}, disks=["train-1-boot"])
    with serve_compute(world) as url:
        finding = make_finding(GCP_VM, cloud="gcp", account=P, region="us-central1", principal_type="role",
                               principal="serviceAccount:ci@ml-prod.iam.gserviceaccount.com")
        build = served(finding, gcp_endpoint_url=url, gcp_credentials=AnonymousCredentials())
        yield world, build()


@pytest.fixture
def azure(served: Any) -> Iterator[tuple[ArmWorld, Endpoint]]:
    world = ArmWorld()
    world.add({"id": APP_NSG, "name": "app-nsg", "location": "eastus", "properties": {"securityRules": []}})
    vm = world.add_vm(SUB, RG, "gpu-1", nsg=APP_NSG, tags={"workload": "training"})
    with serve_arm(world) as url:
        finding = make_finding(vm.lower(), cloud="azure", account=SUB, region="eastus", principal="ci@example.com")
        build = served(finding, azure_endpoint_url=url, azure_credential=_Token())
        yield world, build()


def _audit(ep: Endpoint) -> list[Any]:
    with ep.store() as store:
        return store.audit_log(limit=None)


def test_quarantine_click_on_a_gcp_finding_isolates_it_and_release_undoes_it(gcp: Any) -> None:
    world, ep = gcp
    assert "sw_quarantine" in ep.button_ids()  # the GCP alert offers it
    assert "firewall rules" in json.dumps(ep.message()["blocks"])  # and its dialog says what it does on GCP

    status, _, seconds = ep.click("sw_quarantine", user=ALICE)
    assert status == 200 and seconds < 2.5
    wait(ep)
    inst = world.instance(P, Z, "train-1")
    assert inst["tags"]["items"] == ["gpu", GCP_TAG] and set(inst["labels"]) == {"team", "spendwatch-quarantine"}
    assert len(world.firewalls) == 4 and len(world.snapshots) == 1
    with ep.store() as store:
        [q] = store.quarantines()
        assert (q.action, q.state, q.actor, q.finding_id) == ("gcp.quarantine", "active", f"slack:{ALICE}",
                                                               ep.finding.id)
        assert store.get(ep.finding.id).status == "quarantined"  # type: ignore[union-attr]
    audit = _audit(ep)
    assert [e.outcome for e in audit if e.action == "slack.quarantine"] == ["applied"]
    assert any(e.action == "gcp.quarantine" and e.step == "tag" and e.outcome == "ok" for e in audit)
    assert {e.actor for e in audit} == {f"slack:{ALICE}"}
    text = json.dumps(ep.message()["blocks"])
    assert "Quarantined" in text and f"<@{ALICE}>" in text
    assert "sw_release" in ep.button_ids() and "sw_quarantine" not in ep.button_ids()

    assert ep.click("sw_release", user=CAROL)[0] == 200
    wait(ep)
    inst = world.instance(P, Z, "train-1")
    assert inst["tags"]["items"] == ["gpu"] and inst["labels"] == {"team": "ml"}
    with ep.store() as store:
        assert store.quarantines(active_only=True) == []
        assert store.get(ep.finding.id).status == "open"  # type: ignore[union-attr]
    assert [e.outcome for e in _audit(ep) if e.action == "slack.release"] == ["applied"]
    assert "Released" in json.dumps(ep.message()["blocks"]) and "sw_quarantine" in ep.button_ids()


def test_gcp_double_click_acts_once_and_unauthorised_clicks_change_nothing(gcp: Any) -> None:
    world, ep = gcp
    for action in ("sw_quarantine", "sw_release"):
        assert ep.click(action, user=MALLORY)[0] == 200
    wait(ep)
    assert world.mutations == []
    assert [e.outcome for e in _audit(ep)] == ["refused", "refused"]

    threads = [threading.Thread(target=ep.click, args=("sw_quarantine",)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait(ep)
    assert sum(r.path.endswith("/setTags") for r in world.mutations) == 1
    assert sorted(e.outcome for e in _audit(ep) if e.action == "slack.quarantine") == ["applied", "ignored",
                                                                                       "refused"]


def test_quarantine_click_on_an_azure_finding_isolates_it_and_release_undoes_it(azure: Any) -> None:
    world, ep = azure
    nic = rid(SUB, RG, "Microsoft.Network", "networkInterfaces", "gpu-1-nic")
    vm = rid(SUB, RG, "Microsoft.Compute", "virtualMachines", "gpu-1")
    assert "sw_quarantine" in ep.button_ids()
    assert "network security group" in json.dumps(ep.message()["blocks"])

    assert ep.click("sw_quarantine", user=CAROL)[0] == 200  # allowed through the user group
    wait(ep)
    quarantine_nsg = rid(SUB, RG, "Microsoft.Network", "networkSecurityGroups", nsg_name("eastus"))
    assert world.get(nic)["properties"]["networkSecurityGroup"]["id"].lower() == quarantine_nsg.lower()
    assert world.get(vm)["tags"] == {"workload": "training", AZURE_TAG: ep.finding.id}
    assert any(m == "PUT" and "/snapshots/" in p for m, p, _ in world.log)
    with ep.store() as store:
        [q] = store.quarantines()
        assert (q.action, q.state, q.actor) == ("azure.quarantine", "active", f"slack:{CAROL}")
        assert store.get(ep.finding.id).status == "quarantined"  # type: ignore[union-attr]
    audit = _audit(ep)
    assert [e.outcome for e in audit if e.action == "slack.quarantine"] == ["applied"]
    assert any(e.action == "azure.quarantine" and e.step == "attach-nsg" and e.outcome == "ok" for e in audit)
    assert "Quarantined" in json.dumps(ep.message()["blocks"]) and "sw_release" in ep.button_ids()

    assert ep.click("sw_release", user=ALICE)[0] == 200
    wait(ep)
    assert world.get(nic)["properties"]["networkSecurityGroup"]["id"] == APP_NSG
    assert world.get(vm)["tags"] == {"workload": "training"}
    with ep.store() as store:
        assert store.quarantines(active_only=True) == []
        assert store.get(ep.finding.id).status == "open"  # type: ignore[union-attr]
    assert "Released" in json.dumps(ep.message()["blocks"]) and "sw_quarantine" in ep.button_ids()


def test_azure_click_by_someone_not_allowed_changes_nothing(azure: Any) -> None:
    world, ep = azure
    assert ep.click("sw_quarantine", user=MALLORY)[0] == 200
    wait(ep)
    assert world.mutations() == []
    [note] = ep.fake.ok_calls("chat.postEphemeral")
    assert note.args["user"] == MALLORY and "Not done" in note.args["text"]
    assert ep.fake.ok_calls("chat.update") == []


def test_contain_principal_button_denies_its_sessions_and_release_principal_undoes_it(
        endpoint: Endpoint, instance: Instance) -> None:
    ep = endpoint
    assert "sw_contain_principal" in ep.button_ids()
    groups = instance.security_groups()

    threads = [threading.Thread(target=ep.click, args=("sw_contain_principal",)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait(ep)
    assert instance.role_policies() == [PRINCIPAL_POLICY]
    assert instance.security_groups() == groups  # the instance itself is untouched
    with ep.store() as store:
        [q] = store.quarantines()
        assert (q.action, q.resource, q.actor) == ("aws.contain-principal", f"arn:aws:iam::{ACCOUNT}:role/{ROLE}",
                                                   f"slack:{ALICE}")
        assert q.record["linked_to"] == instance.iid and q.finding_id == ep.finding.id
        assert store.get(ep.finding.id).status == "open"  # the resource is not quarantined by this
    audit = _audit(ep)
    assert sorted(e.outcome for e in audit if e.action == "slack.contain-principal") == ["applied", "ignored"]
    assert any(e.action == "aws.contain-principal" and e.step == "deny-older-sessions" for e in audit)
    [note] = ep.fake.ok_calls("chat.postEphemeral")
    assert "already contained" in note.args["text"] and ROLE in note.args["text"]
    text = json.dumps(ep.message()["blocks"])
    assert "Principal contained" in text and f"<@{ALICE}>" in text
    ids = ep.button_ids()
    assert "sw_release_principal" in ids and "sw_contain_principal" not in ids and "sw_quarantine" in ids

    assert ep.click("sw_release_principal", user=MALLORY)[0] == 200  # not allowed: refused, policy stays
    wait(ep)
    assert instance.role_policies() == [PRINCIPAL_POLICY]

    assert ep.click("sw_release_principal", user=CAROL)[0] == 200
    wait(ep)
    assert instance.role_policies() == []
    with ep.store() as store:
        assert store.quarantines(active_only=True) == []
    outcomes = [(e.actor, e.outcome) for e in _audit(ep) if e.action == "slack.release-principal"]
    assert outcomes == [(f"slack:{MALLORY}", "refused"), (f"slack:{CAROL}", "applied")]
    assert "Principal released" in json.dumps(ep.message()["blocks"]) and "sw_contain_principal" in ep.button_ids()


def test_quarantine_and_principal_containment_are_independent(endpoint: Endpoint, instance: Instance) -> None:
    ep = endpoint
    ep.click("sw_contain_principal")
    wait(ep)
    ep.click("sw_quarantine")
    wait(ep)
    ids = ep.button_ids()
    assert "sw_release" in ids and "sw_release_principal" in ids
    ep.click("sw_release")
    wait(ep)
    assert instance.role_policies() == [PRINCIPAL_POLICY]  # releasing the instance leaves the principal contained
    with ep.store() as store:
        assert [q.action for q in store.quarantines(active_only=True)] == ["aws.contain-principal"]
        assert store.get(ep.finding.id).status == "open"  # type: ignore[union-attr]
