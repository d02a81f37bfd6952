"""`spendwatch quarantine`, `release` and `audit` end to end against the moto server."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from spendwatch.cli import main
from spendwatch.findings import Finding, Severity, finding_id
from spendwatch.store import Store

from .conftest import ROLE, World


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def state(tmp_path: Path) -> str:
    return str(tmp_path / "state.db")


def test_dry_run_prints_the_plan_and_apply_then_release(world: World, state: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    iid = world.launch()
    before = world.state(iid)
    base = [iid, "--state", state, "--endpoint-url", world.endpoint, "--region", "us-east-1"]

    code, out, _ = run(capsys, "quarantine", *base)
    assert code == 0 and out.startswith(f"DRY RUN aws.quarantine {iid}") and "isolate-interface" in out
    assert "needs: ec2:ModifyNetworkInterfaceAttribute" in out and "add --apply" in out
    assert world.state(iid) == before

    code, out, _ = run(capsys, "quarantine", *base, "--apply", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] and doc["outcomes"][0]["status"] == "applied"
    assert doc["outcomes"][0]["account"] == "123456789012" and doc["outcomes"][0]["finding"] is None
    assert dict(world.state(iid)["tags"])["spendwatch:quarantine"] == "manual"

    code, out, err = run(capsys, "quarantine", *base, "--apply")
    assert code == 1 and "already quarantined" in err

    code, out, _ = run(capsys, "release", *base, "--apply", "--json")
    assert code == 0 and json.loads(out)["outcomes"][0]["status"] == "applied"
    assert world.state(iid)["enis"] == before["enis"]

    code, out, err = run(capsys, "release", *base, "--apply")
    assert code == 1 and "no active quarantine" in err

    code, out, _ = run(capsys, "audit", "--state", state, "--json", "--resource", iid)
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and {e["action"] for e in lines} == {"aws.quarantine", "aws.release"}
    assert {e["dry_run"] for e in lines} == {True, False}
    assert {"planned", "ok", "applied", "refused"} <= {e["outcome"] for e in lines}
    code, out, _ = run(capsys, "audit", "--state", state)
    assert code == 0 and "aws.release" in out and "(dry-run)" in out


def test_protected_and_unquarantined_exit_1(world: World, state: str, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    tagged, listed = world.launch(tags={"spendwatch:protected": "true"}), world.launch()
    monkeypatch.setenv("SPENDWATCH_PROTECTED_IDS", f"i-somethingelse,{listed}")
    for iid in (tagged, listed):
        code, _, err = run(capsys, "quarantine", iid, "--state", state, "--endpoint-url", world.endpoint, "--apply")
        assert code == 1 and "protected" in err
    code, _, err = run(capsys, "release", tagged, "--state", state, "--endpoint-url", world.endpoint)
    assert code == 1 and "no active quarantine" in err


def test_blast_radius_limit_from_environment(world: World, state: str, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPENDWATCH_MAX_QUARANTINES_PER_HOUR", "2")
    ids = [world.launch(second_eni=False, profile=False) for _ in range(3)]
    codes = [run(capsys, "quarantine", i, "--state", state, "--endpoint-url", world.endpoint, "--apply")[0]
             for i in ids]
    assert codes == [0, 0, 1]
    monkeypatch.setenv("SPENDWATCH_MAX_QUARANTINES_PER_HOUR", "lots")
    code, _, err = run(capsys, "quarantine", ids[2], "--state", state, "--endpoint-url", world.endpoint)
    assert code == 1 and "not a whole number" in err


def test_finding_links_region_id_and_principal(world: World, state: str, capsys: pytest.CaptureFixture[str]) -> None:
    iid = world.launch()
    now = datetime(2026, 11, 1, 12, tzinfo=UTC)
    principal = f"arn:aws:sts::123456789012:assumed-role/{ROLE}/agent-7"
    fid = finding_id("aws", "123456789012", iid)
    with Store(state) as store:
        store.upsert([Finding(
            id=fid, cloud="aws", account="123456789012", region="us-east-1", resource=iid, principal=principal,
            severity=Severity.CRITICAL, score=0.9, rules=["r"], evidence=["e"], first_seen=now, last_seen=now,
            detected_at=now, hourly_cost_usd=3.0, summary="s")], now=now)
    code, out, _ = run(capsys, "quarantine", iid, "--state", state, "--endpoint-url", world.endpoint,
                       "--principal", "--apply", "--json")
    doc = json.loads(out)
    assert code == 0, doc
    assert [o["action"] for o in doc["outcomes"]] == ["aws.quarantine", "aws.contain-principal"]
    assert all(o["finding"] == fid for o in doc["outcomes"])
    assert dict(world.state(iid)["tags"])["spendwatch:quarantine"] == fid
    policies = set(world.iam.list_role_policies(RoleName=ROLE)["PolicyNames"])
    assert {"spendwatch-contain-principal", f"spendwatch-revoke-older-sessions-{iid}"} <= policies
    with Store(state) as store:
        assert store.get(fid).status == "quarantined"  # type: ignore[union-attr]

    code, out, _ = run(capsys, "release", iid, "--state", state, "--endpoint-url", world.endpoint,
                       "--principal", "--apply", "--json")
    assert code == 0 and [o["status"] for o in json.loads(out)["outcomes"]] == ["applied", "applied"]
    assert world.iam.list_role_policies(RoleName=ROLE)["PolicyNames"] == []
    with Store(state) as store:
        assert store.get(fid).status == "open"  # type: ignore[union-attr]


def test_usage_errors_exit_2(world: World, state: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["quarantine", "i-1", "--cloud", "oracle"])
    assert exc.value.code == 2
    code, _, err = run(capsys, "quarantine", "i-1", "--cloud", "gcp", "--state", state)
    assert code == 2 and "projects/P/zones/Z/instances/N" in err  # not a GCP instance name
    code, _, err = run(capsys, "quarantine", "arn:aws:iam::123456789012:user/x", "--stop", "--state", state)
    assert code == 2 and "--stop" in err
    iid = world.launch()
    before = world.state(iid)
    code, _, err = run(capsys, "quarantine", iid, "--principal", "--apply", "--state", state,
                       "--endpoint-url", world.endpoint)
    assert code == 2 and "pass --principal ARN" in err
    assert world.state(iid) == before  # checked before the instance was touched


def test_wrong_account_exit_1(world: World, state: str, capsys: pytest.CaptureFixture[str]) -> None:
    iid = world.launch()
    code, _, err = run(capsys, "quarantine", iid, "--account", "999999999999", "--state", state,
                       "--endpoint-url", world.endpoint, "--apply")
    assert code == 1 and "not 999999999999" in err
