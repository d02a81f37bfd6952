"""One live scan over GCP and Azure with utilisation and spend from the clouds' APIs (Cloud Monitoring through the
real google-cloud-monitoring client, the billing export table through google-cloud-bigquery, Azure Monitor's
metrics:getBatch through azure-monitor-querymetrics, Cost Management's query through azure-mgmt-costmanagement)
and the logs from the sinks' buckets: the GCP agent's GPU miner and Azure's CPU miner are found on the APIs'
series, the legitimate GPU training stays at low or below, and a second run reads from the saved watermarks."""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from pathlib import Path

from azure.core.credentials import AccessToken

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fakes.azure_arm import arm_handler, vm
from fakes.azure_blob import FakeBlobStorage
from fakes.azure_cost import FakeCostManagement, beside_arm
from fakes.azure_metrics import FakeAzureMetrics
from fakes.bigquery import FakeBigQuery
from fakes.gcp_monitoring import FakeMonitoring, serve_monitoring
from fakes.gcs import FakeGcs
from fakes.raw_http import serve
from fakes.tls import local_tls

from spendwatch.connectors.azure import AzureConfig, BlobLocation
from spendwatch.connectors.gcp import GcpConfig, GcsLocation
from spendwatch.findings import Severity
from spendwatch.pipeline import scan_live
from spendwatch.simulate import DEFAULT_END
from spendwatch.simulate import gcp as gsim
from spendwatch.simulate.azure import ACCOUNT, COST, SUB, simulate_azure
from spendwatch.store import Store, Watermarks


class _Token:
    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken("fake-token", int(time.time()) + 3600)


def test_miners_are_found_on_utilisation_read_from_the_metrics_apis(tmp_path: Path) -> None:
    root = tmp_path / "exports"
    truths = [gsim.simulate_gcp(root, seed=11, days=1.0, instances=12, write_truth=False),
              simulate_azure(root, seed=11, days=1.0, instances=12, write_truth=False)]
    incidents = [i for t in truths for i in t.incidents]
    legit = {r for t in truths for r in t.legit_gpu}
    gcs, blobs, tls = FakeGcs(), FakeBlobStorage(), local_tls(tmp_path / "tls")
    gcs.upload_tree(root / gsim.LOGS, gsim.LOGS)  # no Monitoring or billing bucket: those come from the APIs
    blobs.upload_tree(root / ACCOUNT, ACCOUNT)  # no cost exports either
    table = "acme-billing.billing_export.gcp_billing_export_resource_v1_01A2B3_C4D5E6_F7A8B9"
    bigquery, cost = FakeBigQuery(table), FakeCostManagement()
    for path in (root / gsim.BILLING).rglob("*.json"):
        bigquery.add_export(path)
    for path in (root / COST).rglob("*.csv"):
        cost.add_export(path)
    monitoring = FakeMonitoring()
    monitoring.add_simulated(root / gsim.MONITORING)
    metrics = FakeAzureMetrics()
    vm_ids = metrics.add_simulated(root / ACCOUNT / "insights-metrics-pt1m", "eastus")
    arm_vms = [{**vm(SUB, rid.rsplit("/", 1)[-1].lower(), "Standard_NC24ads_A100_v4" if "/GPU-" in rid
                     else "Standard_D4s_v5", f"{rid}-nic"), "id": rid} for rid in vm_ids]
    base: dict[str, str] = {}
    with serve(gcs) as gcs_url, serve(blobs, tls.context) as blob_url, serve(metrics, tls.context) as metrics_url, \
            serve_monitoring(monitoring) as monitoring_target, serve(bigquery) as bigquery_url, \
            serve(beside_arm(arm_handler(base, {SUB: [arm_vms]}, {SUB: []}), cost)) as arm_url, \
            Store(tmp_path / "s.db") as state:
        base["url"] = cost.base_url = arm_url
        configs = {
            "gcp": GcpConfig(projects=(gsim.ML, gsim.WEB), logs=(GcsLocation(gsim.LOGS),), billing_table=table,
                             bigquery_endpoint=bigquery_url, monitoring_api=True, monitoring_endpoint=monitoring_target,
                             storage_endpoint=gcs_url, anonymous=True, inventory=False),
            "azure": AzureConfig(subscriptions=(SUB,), logs=(BlobLocation.parse(f"{blob_url}/{ACCOUNT}"),),
                                 cost_api=True, metrics_api=True, metrics_endpoint=metrics_url + "/{region}",
                                 arm_endpoint=arm_url, allow_http=True, ca_bundle=str(tls.ca_file)),
        }
        result = scan_live(configs, store=state, credentials={"azure": _Token()}, now=DEFAULT_END, keep_tables=True)
        assert result.report.complete and not result.report.gaps, result.report.gaps
        assert result.tables is not None
        util = result.tables.utilization
        gcp_miner = next(i for i in incidents if i.cloud == "gcp")
        pegged = util[util["resource"].isin(gcp_miner.resources) & (util["metric"] == "gpu_util")]
        assert len(pegged) > 600 and pegged["value"].mean() > 99  # the miner's GPUs, from Cloud Monitoring
        assert any(n.startswith("gcp monitoring:") for n in result.report.notes)
        assert any(n.startswith("gcp billing: 1 BigQuery query") for n in result.report.notes)
        assert any(n.startswith("azure cost management: 1 query call(s)") for n in result.report.notes)
        assert {"gcp", "azure"} <= set(result.tables.spend["cloud"])
        assert any(n.startswith("azure metrics: 1 metrics:getBatch call(s)") for n in result.report.notes)
        findings = {(f.cloud, f.resource): f for f in result.findings}
        for incident in incidents:
            for resource in incident.resources:
                found = findings.get((incident.cloud, resource))
                assert found is not None and found.severity >= Severity.MEDIUM, (incident.name, resource)
                assert found.principal == incident.principal
        for (cloud, found_on), f in findings.items():
            if found_on in legit:
                assert f.severity <= Severity.LOW, (cloud, found_on, f.severity.label)
        saved = {(m.cloud, m.account, m.scope): m.position for cloud in ("gcp", "azure")
                 for m in Watermarks(state).load(cloud).values() if m.source in ("utilization", "billing")}
        assert saved == {("gcp", gsim.ML, "monitoring"): DEFAULT_END.isoformat(),
                         ("gcp", gsim.WEB, "monitoring"): DEFAULT_END.isoformat(),
                         ("gcp", "*", f"bigquery:{table}"): DEFAULT_END.isoformat(),
                         ("azure", SUB, "metrics:getBatch"): DEFAULT_END.isoformat(),
                         ("azure", SUB, "costmanagement:query"): DEFAULT_END.date().isoformat()}
        before = len(monitoring.calls)
        later = scan_live(configs, store=state, credentials={"azure": _Token()}, now=DEFAULT_END + timedelta(hours=1))
        assert later.report.complete
        assert {c.start for c in monitoring.calls[before:]} == {int((DEFAULT_END - timedelta(minutes=10)).timestamp())}
        assert metrics.calls[-1][3]["starttime"].startswith("2026-11-20T11:50:00")
