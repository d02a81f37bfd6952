"""Faults injected between boto3 and moto by an HTTP proxy: throttling and 5xx are retried; an account whose
read role cannot be assumed is a gap while the rest is scanned."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from moto_kit import REGIONS, FaultProxy, Org, client, query_error, s3_error

from spendwatch.connectors.aws import AwsConfig, S3Location
from spendwatch.pipeline import scan_aws
from spendwatch.store import Store


def _small(org: Org, bucket: str, n: int) -> AwsConfig:
    s3 = client(org.endpoint, "s3")
    s3.create_bucket(Bucket=bucket)
    folder = org.root / "acme-flow-logs/AWSLogs/234567890123/vpcflowlogs/ap-southeast-1"
    for p in sorted(p for p in folder.rglob("*") if p.is_file())[:n]:
        s3.put_object(Bucket=bucket, Key="AWSLogs/" + str(p).split("/AWSLogs/", 1)[1], Body=p.read_bytes())
    return AwsConfig(accounts=("234567890123",), role_name="spendwatch-read", regions=("ap-southeast-1",),
                     flow_logs=S3Location(bucket), metrics_api=False, max_attempts=6)


def test_throttling_and_server_errors_are_retried(org: Org, tmp_path: Path) -> None:
    cfg = _small(org, "flaky-flows", 6)
    with Store(tmp_path / "clean.db") as store:
        clean = scan_aws(replace(cfg, endpoint_url=org.endpoint), store=store)
    plan = {"get": 0, "assume": 0}

    def fault(method: str, path: str, body: bytes) -> tuple[int, bytes] | None:
        if b"Action=AssumeRole" in body and plan["assume"] < 2:
            plan["assume"] += 1
            return 400, query_error("Throttling", "Rate exceeded")
        if method == "GET" and "/flaky-flows/AWSLogs/" in path and plan["get"] < 4:
            plan["get"] += 1  # first two reads: S3's throttle, then an internal error
            return (503, s3_error("SlowDown", "Reduce your request rate.")) if plan["get"] <= 2 else \
                (500, s3_error("InternalError", "We encountered an internal error."))
        return None

    with FaultProxy(org.endpoint, fault) as proxy, Store(tmp_path / "faulty.db") as store:
        faulty = scan_aws(replace(cfg, endpoint_url=proxy.url), store=store)
    assert proxy.faults == 6
    assert not faulty.report.problems
    assert [g.source for g in faulty.report.gaps] == [g.source for g in clean.report.gaps]
    assert faulty.report.tables == clean.report.tables and len(faulty.report.sources) == 6


def test_an_access_denied_account_is_a_gap_and_the_rest_is_scanned(org: Org, tmp_path: Path) -> None:
    denied = "345678901234"

    def fault(method: str, path: str, body: bytes) -> tuple[int, bytes] | None:
        if b"Action=AssumeRole" in body and denied.encode() in body:
            return 403, query_error("AccessDenied", f"not authorized to perform sts:AssumeRole on {denied}")
        return None

    cfg = replace(org.config, regions=REGIONS[:1], flow_logs=None, dns_logs=None, metrics=None, cur=None,
                  metrics_api=False)
    with FaultProxy(org.endpoint, fault) as proxy, Store(tmp_path / "s.db") as store:
        result = scan_aws(replace(cfg, endpoint_url=proxy.url), store=store, keep_tables=True)
    gaps = {g.source: g.reason for g in result.report.gaps}
    for region in REGIONS[:1]:
        reason = gaps[f"aws/{denied}/{region}/inventory"]
        assert "access denied" in reason and "AccessDenied" in reason and denied in reason
    assert not any("access denied" in reason for source, reason in gaps.items() if denied not in source)
    # The reachable account runs an instance but delivers no flow logs to CloudWatch: that is a gap too.
    assert "DescribeFlowLogs found none" in gaps["aws/234567890123/us-east-1/flows"]
    assert not result.report.complete
    assert result.tables is not None
    inv_accounts = set(result.tables.inventory["account"])
    assert "234567890123" in inv_accounts  # the moto instance, through the API, in a reachable account
    # The trail bucket is read with the scanner's own credentials: the denied account's events still come.
    assert denied in set(result.tables.activity["account"])
    with Store(tmp_path / "s.db") as store:
        (run,) = store.runs()
        assert not run.complete
