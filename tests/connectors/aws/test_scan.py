"""The live AWS connector on the simulated organisation in moto: same incidents as the files connector,
incremental runs, late files, a killed run, pagination, and the IAM policy."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from moto_kit import Org, client, recorder

from spendwatch.cli import main
from spendwatch.connectors.aws import AwsConfig, S3Location, permissions
from spendwatch.pipeline import ScanResult, scan_aws
from spendwatch.store import Store, Watermarks


def _verdicts(result: ScanResult) -> list[tuple[str, int, tuple[str, ...]]]:
    return sorted((f.id, int(f.severity), tuple(sorted(f.rules))) for f in result.findings)


def test_scan_finds_the_same_incidents_as_the_files_connector(org: Org) -> None:
    ref, files = org.reference, org.files
    assert _verdicts(ref) == _verdicts(files)
    flagged = {f.resource for f in ref.findings if f.severity.name in ("HIGH", "CRITICAL")}
    for incident in org.truth.incidents:
        assert set(incident.resources) <= flagged, incident.name
    assert ref.tables is not None and files.tables is not None
    for name in ("spend", "activity", "dns", "utilization"):
        assert len(getattr(ref.tables, name)) == len(getattr(files.tables, name)), name
    # Both scans reduce flow records to per-window aggregates while they read (spendwatch.engine) and keep the
    # rows the rules read one by one: the same records give the same rows; both reports count the records read.
    assert ref.report.tables["flows"] == files.report.tables["flows"]
    assert len(ref.tables.flows) == len(files.tables.flows) < ref.report.tables["flows"]
    # Every simulated account was reached by assume-role; the EC2 API added what CloudTrail cannot know of.
    assert org.calls.count("sts:AssumeRole") == len(org.truth.accounts)
    inv = ref.tables.inventory.set_index("resource")
    assert inv.loc[org.gpu_instance, "gpus"] == 1 and inv.loc[org.gpu_instance, "state"] == "running"
    assert len(inv) == len(files.tables.inventory) + 1
    assert not ref.report.problems
    assert {g.source for g in ref.report.gaps} == {"aws/456789012345/*/vpcflowlogs",
                                                   "aws/456789012345/*/vpcdnsquerylogs"}  # none in the data


def test_a_killed_run_resumes_with_nothing_lost_or_doubled(org: Org, tmp_path: Path) -> None:
    class Killed(BaseException):
        """Like a SIGKILL: nothing in the connector may catch it."""

    fetched = [0]

    def kill_after(**_: Any) -> None:
        fetched[0] += 1
        if fetched[0] > 400:
            raise Killed

    with Store(tmp_path / "state.db") as store:
        with pytest.raises(Killed):
            scan_aws(org.config, store=store, hooks=[("before-call.s3.GetObject", kill_after)])
        assert store.count() == 0 and not Watermarks(store).load("aws")
        resumed = scan_aws(org.config, store=store, keep_tables=True)
        assert resumed.tables is not None and org.reference.tables is not None
        assert resumed.report.tables == org.reference.report.tables
        assert _verdicts(resumed) == _verdicts(org.reference)
        again = scan_aws(org.config, store=store)  # nothing new: nothing read, nothing changed
        # Inventory is what EC2 shows now, read every run; every other table only grows with new files.
        assert sum(n for t, n in again.report.tables.items() if t != "inventory") == 0
        assert not again.report.problems and not again.report.sources
        assert store.count() == len(resumed.findings)


def test_iam_policy_grants_exactly_the_declared_calls(org: Org, capsys: pytest.CaptureFixture[str]) -> None:
    made = {permissions.CALLS[tuple(c.split(":"))] for c in org.calls}  # type: ignore[index]
    assert made <= set(permissions.declared())
    assert main(["iam-policy", "aws"]) == 0
    printed = json.loads(capsys.readouterr().out)
    granted = [a for s in printed["Statement"] for a in s["Action"]]
    assert sorted(granted) == permissions.declared() and len(granted) == len(set(granted))
    assert all(s["Effect"] == "Allow" for s in printed["Statement"])
    assert all(a.split(":")[1].startswith(("List", "Get", "Describe", "Filter", "Assume")) for a in granted)


def test_an_undeclared_call_is_refused(org: Org) -> None:
    from spendwatch.connectors.aws.clients import Clients

    s3 = Clients(org.config).base("s3")
    with pytest.raises(permissions.UndeclaredCall):
        s3.list_buckets()


def _late_bucket(org: Org, bucket: str) -> tuple[AwsConfig, list[Path]]:
    """A bucket with one account's flow logs for one region: a few files, changed by the test at will."""
    s3 = client(org.endpoint, "s3")
    s3.create_bucket(Bucket=bucket)
    folder = org.root / "acme-flow-logs/AWSLogs/234567890123/vpcflowlogs/ap-southeast-1"
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    cfg = AwsConfig(accounts=("234567890123",), role_name="spendwatch-read", regions=("ap-southeast-1",),
                    flow_logs=S3Location(bucket), endpoint_url=org.endpoint, metrics_api=False, max_attempts=5)
    return cfg, files


def _put(org: Org, bucket: str, path: Path, key: str | None = None) -> str:
    key = key or "AWSLogs/" + str(path).split("/AWSLogs/", 1)[1]
    client(org.endpoint, "s3").put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    return key


def test_incremental_runs_read_only_new_files_and_late_ones(org: Org, tmp_path: Path) -> None:
    cfg, files = _late_bucket(org, "late-flows")
    late, first, later = files[5], files[:5] + files[6:30], files[30:40]
    for p in first:
        _put(org, "late-flows", p)
    with Store(tmp_path / "s.db") as store:
        one = scan_aws(cfg, store=store)
        assert len(one.report.sources) == len(first)
        for p in [*later, late]:  # `late` sorts before keys already read: delivered late
            _put(org, "late-flows", p)
        two = scan_aws(cfg, store=store)
        assert sorted(s.path for s in two.report.sources) == sorted(
            "s3://late-flows/AWSLogs/" + str(p).split("/AWSLogs/", 1)[1] for p in [*later, late])
        assert len(scan_aws(cfg, store=store).report.sources) == 0
        (mark,) = Watermarks(store).load("aws").values()
        assert mark.source == "flows" and mark.account == "234567890123" and mark.region == "ap-southeast-1"


def test_more_than_1000_objects_are_paginated(org: Org) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from spendwatch.connectors.aws import s3 as incremental
    from spendwatch.connectors.aws.clients import Clients
    from spendwatch.store import Watermark

    s3 = client(org.endpoint, "s3")
    s3.create_bucket(Bucket="many-keys")
    prefix = "AWSLogs/234567890123/vpcflowlogs/ap-southeast-1/"
    keys = [f"{prefix}2026/11/{19 + i // 1000}/f{i:05d}.log.gz" for i in range(1205)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket="many-keys", Key=k, Body=b""), keys))
    calls: list[str] = []
    listing = Clients(replace(org.config, role_name=None), hooks=[recorder(calls)]).base("s3")
    first = incremental.plan(listing, "many-keys", prefix, Watermark("aws", "a", "r", "flows", "s", ""))
    assert [o.key for o in first.new] == keys and calls.count("s3:ListObjectsV2") == 2  # two pages
    mark = first.advanced(set(), lookback_days=0)
    assert mark.position == prefix + "2026/11/20/" and len(mark.seen) == 205  # 19th is behind the look-back
    assert not incremental.plan(listing, "many-keys", prefix, mark).new


def test_scan_config_on_the_command_line(org: Org, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, files = _late_bucket(org, "cli-flows")
    for p in files[:3]:
        _put(org, "cli-flows", p)
    conf = tmp_path / "spendwatch.toml"
    conf.write_text(f'''[aws]
accounts = ["234567890123"]
role_name = "spendwatch-read"
regions = ["ap-southeast-1"]
flow_logs = "s3://cli-flows/"
metrics_api = false
endpoint_url = "{org.endpoint}"
''')
    report = tmp_path / "report.json"
    code = main(["scan", "--config", str(conf), "--state", str(tmp_path / "s.db"), "--json",
                 "--report", str(report)])
    assert code == 0
    got = json.loads(report.read_text())
    assert got["files_read"] == 3 and got["complete"] is False  # trail, DNS and billing are not configured
    assert {g["source"] for g in got["gaps"]} >= {"aws/*/*/cloudtrail", "aws/*/*/dns", "aws/*/*/billing"}
    conf.write_text("[aws]\nnot_a_key = 1\n")
    assert main(["scan", "--config", str(conf), "--state", str(tmp_path / "s.db")]) == 1
    assert "unknown key" in capsys.readouterr().err


def test_config_loads_from_toml(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text('[aws]\naccounts = ["012345678901"]\ntrail = "s3://b/logs"\nregions = ["eu-west-1"]\n')
    cfg = AwsConfig.load(str(conf))
    assert cfg.accounts == ("012345678901",) and cfg.trail == S3Location("b", "logs/")
    assert cfg.regions == ("eu-west-1",) and cfg.role_name is None
    assert replace(cfg, role_name="r").role_arn("012345678901") == "arn:aws:iam::012345678901:role/r"
