"""GCP Security Command Center (REST client) and Sentinel (Logs Ingestion client) against local fakes."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from google.cloud.securitycenter_v1 import Finding

from spendwatch.delivery import SinkConfig, enqueue, flush
from spendwatch.sinks.scc import SccSink, scc_finding_id
from spendwatch.sinks.sentinel import COLUMNS, SentinelSink
from spendwatch.store import Outbox, Store
from tests.fakes.findings import T0, make_finding
from tests.fakes.receiver import Receiver, Request

SOURCE = "organizations/123/sources/456"


class FakeScc:
    """Just enough of SCC v1 REST: create (409 when it exists) and patch (creates when missing)."""

    def __init__(self) -> None:
        self.findings: dict[str, dict[str, Any]] = {}

    def __call__(self, req: Request) -> tuple[int, Any]:
        doc = req.json()
        if req.method == "POST" and req.path == f"/v1/{SOURCE}/findings":
            name = f"{SOURCE}/findings/{req.query['findingId']}"
            if name in self.findings:
                return 409, {"error": {"code": 409, "message": "exists", "status": "ALREADY_EXISTS"}}
            self.findings[name] = {**doc, "name": name}
            return 200, self.findings[name]
        if req.method == "PATCH" and req.path.startswith(f"/v1/{SOURCE}/findings/"):
            name = req.path[len("/v1/"):]
            self.findings[name] = {**self.findings.get(name, {}), **doc}
            return 200, self.findings[name]
        return 404, {"error": {"code": 404, "message": f"no route {req.method} {req.path}", "status": "NOT_FOUND"}}


def test_scc_create_update_and_outage(tmp_path: Path) -> None:
    fake = FakeScc()
    f = make_finding(cloud="gcp", account="ml-prod", region="us-central1",
                     resource="projects/ml-prod/zones/us-central1-a/instances/train-7")
    c = SinkConfig("scc", "scc", {"source": SOURCE})
    with Receiver(fake) as rx, Store(tmp_path / "s.db") as store:
        sink = SccSink(SOURCE, api_endpoint=rx.url)
        enqueue([f], [c], store, T0)
        assert flush(store, [c], T0, sinks={"scc": sink}).sinks["scc"].delivered == 1
        name = f"{SOURCE}/findings/{scc_finding_id(f)}"
        got = fake.findings[name]
        # The REST transport sends enums as numbers (protobuf JSON accepts both): read them back by name.
        assert got["category"] == "RESOURCE_HIJACKING_CRYPTOMINING"
        assert Finding.Severity(got["severity"]).name == "CRITICAL"
        assert Finding.State(got["state"]).name == "ACTIVE"
        assert Finding.FindingClass(got["findingClass"]).name == "THREAT"
        assert got["resourceName"] == "//compute.googleapis.com/projects/ml-prod/zones/us-central1-a/instances/train-7"
        assert got["sourceProperties"]["spendwatch_id"] == f.id
        assert got["sourceProperties"]["evidence"] == f.evidence
        assert got["eventTime"].startswith("2026-11-20T10:00:00")
        # Down for a while (503), then back: the resolved state arrives once, as an update of the same name.
        rx.status = 503
        t1 = T0 + timedelta(hours=1)
        enqueue([replace(f, status="resolved", last_seen=t1)], [c], store, t1)
        assert flush(store, [c], t1, sinks={"scc": sink}).sinks["scc"].failed == 1
        rx.status = None
        assert flush(store, [c], t1 + timedelta(minutes=5), sinks={"scc": sink}).sinks["scc"].delivered == 1
        assert list(fake.findings) == [name] and Finding.State(fake.findings[name]["state"]).name == "INACTIVE"
        patches = [r for r in rx.accepted if r.method == "PATCH"]
        assert len(patches) == 1


class FakeCredential:
    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken("fake-token", int(T0.timestamp()) + 10**9)

    def get_token_info(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessTokenInfo

        return AccessTokenInfo("fake-token", int(T0.timestamp()) + 10**9)


def test_sentinel_rows_arrive_once_after_an_outage(tmp_path: Path) -> None:
    rule, stream = "dcr-0123456789abcdef", "Custom-SpendwatchFindings_CL"
    findings = [make_finding(f"i-{n}") for n in range(3)]
    c = SinkConfig("sentinel", "sentinel", {})
    rx = Receiver(lambda req: (204, None))
    with Store(tmp_path / "s.db") as store:
        sink = SentinelSink(rx.url, rule, stream, credential=FakeCredential(), allow_http=True)
        enqueue(findings, [c], store, T0)
        assert flush(store, [c], T0, sinks={"sentinel": sink}).sinks["sentinel"].failed == 1  # refused
        rx.up()
        try:
            rx.status = 503
            assert flush(store, [c], T0 + timedelta(seconds=40), sinks={"sentinel": sink}).sinks["sentinel"].failed == 1
            rx.status = None
            t = T0 + timedelta(minutes=2)
            for _ in range(2):
                flush(store, [c], t, sinks={"sentinel": sink})
                t += timedelta(minutes=2)
            assert Outbox(store).counts()["sentinel"] == {"delivered": 3}
        finally:
            rx.down()
    rows = [row for r in rx.accepted for row in r.json()]
    assert all(r.path == f"/dataCollectionRules/{rule}/streams/{stream}" for r in rx.accepted)
    assert all(r.headers["Authorization"] == "Bearer fake-token" for r in rx.accepted)
    assert sorted(row["FindingId"] for row in rows) == sorted(f.id for f in findings)
    assert len({row["DeliveryId"] for row in rows}) == 3
    assert set(rows[0]) == set(COLUMNS) and rows[0]["Severity"] == "critical"
