"""Security Hub through boto3 against moto's server: create, update in place, archive when resolved.

moto implements BatchImportFindings (upsert by Id; it checks that Resources is a non-empty list) and
GetFindings (no filters); the tests read back what arrived with get_findings.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import boto3

from spendwatch.delivery import SinkConfig, enqueue, flush
from spendwatch.findings import Severity
from spendwatch.sinks.securityhub import SecurityHubSink, product_arn, to_asff
from spendwatch.store import Outbox, Store
from tests.fakes.findings import T0, make_finding


def _findings(endpoint: str) -> list[dict]:
    client = boto3.client("securityhub", region_name="ap-southeast-1", endpoint_url=endpoint)
    return client.get_findings()["Findings"]


def test_asff_document_shape() -> None:
    f = make_finding()
    doc = to_asff(f, region="ap-southeast-1", account="012345678901", updated_at=T0)
    assert doc["ProductArn"] == "arn:aws:securityhub:ap-southeast-1:012345678901:product/012345678901/default"
    assert doc["Id"] == f"spendwatch/{f.id}" and doc["AwsAccountId"] == "012345678901"
    assert doc["Severity"]["Label"] == "CRITICAL" and doc["RecordState"] == "ACTIVE"
    assert all(t.split("/")[0] in {"TTPs", "Effects", "Unusual Behaviors"} and t.count("/") == 2
               for t in doc["Types"])
    assert doc["Resources"][0]["Id"] == "arn:aws:ec2:ap-southeast-1:012345678901:instance/i-0abc"
    assert doc["FirstObservedAt"].endswith("Z") and doc["CreatedAt"] <= doc["UpdatedAt"]
    info = to_asff(replace(f, severity=Severity.INFO), region="r", account="1", updated_at=T0)
    assert info["Severity"]["Label"] == "INFORMATIONAL"


def test_create_update_archive_in_moto(aws: str, tmp_path: Path) -> None:
    c = SinkConfig("hub", "securityhub", {"endpoint_url": aws})
    f = make_finding()
    hub = SecurityHubSink(endpoint_url=aws)
    with Store(tmp_path / "s.db") as store:
        enqueue([f], [c], store, T0)
        assert flush(store, [c], T0, sinks={"hub": hub}).sinks["hub"].delivered == 1
        first = _findings(aws)
        assert len(first) == 1
        got = first[0]
        assert got["Id"] == f"spendwatch/{f.id}"
        assert got["ProductArn"] == product_arn("ap-southeast-1", "012345678901")
        assert got["Severity"]["Label"] == "CRITICAL" and got["RecordState"] == "ACTIVE"
        assert got["Resources"][0]["Type"] == "AwsEc2Instance"
        assert "gulf.moneroocean.stream" in got["Description"]

        t1 = T0 + timedelta(hours=1)
        worse = replace(f, last_seen=t1, hourly_cost_usd=11.0, severity=Severity.HIGH)
        enqueue([worse], [c], store, t1)
        flush(store, [c], t1, sinks={"hub": hub})
        second = _findings(aws)
        assert len(second) == 1  # updated in place, same Id
        assert second[0]["UpdatedAt"] > got["UpdatedAt"] and second[0]["Severity"]["Label"] == "HIGH"
        assert second[0]["LastObservedAt"] > got["LastObservedAt"]

        t2 = T0 + timedelta(hours=2)
        enqueue([replace(worse, status="resolved")], [c], store, t2)
        flush(store, [c], t2, sinks={"hub": hub})
        third = _findings(aws)
        assert len(third) == 1
        assert third[0]["RecordState"] == "ARCHIVED" and third[0]["Workflow"]["Status"] == "RESOLVED"
        assert [i.activity for i in Outbox(store).items("hub")] == ["create", "update", "close"]


def test_securityhub_down_then_back(aws: str, tmp_path: Path) -> None:
    c = SinkConfig("hub", "securityhub", {})
    findings = [make_finding(f"i-{n}") for n in range(3)]
    with Store(tmp_path / "s.db") as store:
        enqueue(findings, [c], store, T0)
        # Nothing listens on port 9 of loopback: the endpoint is down.
        res = flush(store, [c], T0, sinks={"hub": SecurityHubSink(endpoint_url="http://127.0.0.1:9")})
        assert res.sinks["hub"].failed == 1 and not _findings(aws)
        t = T0 + timedelta(minutes=5)
        res = flush(store, [c], t, sinks={"hub": SecurityHubSink(endpoint_url=aws)})
        assert res.sinks["hub"].delivered == 3
        assert sorted(x["Id"] for x in _findings(aws)) == sorted(f"spendwatch/{f.id}" for f in findings)
