"""One live scan over GCP and Azure at once (Cloud Storage and Blob storage fakes, the real SDK clients): each
cloud's incident is found with its principal, their legitimate GPU work stays at low or below, and each cloud's
watermarks are saved under its own name."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from azure.core.credentials import AccessToken

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fakes.azure_blob import FakeBlobStorage
from fakes.gcs import FakeGcs
from fakes.raw_http import serve
from fakes.tls import local_tls

from spendwatch.connectors.azure import AzureConfig, BlobLocation
from spendwatch.connectors.gcp import GcpConfig, GcsLocation
from spendwatch.findings import Severity
from spendwatch.pipeline import scan_live
from spendwatch.simulate import gcp as gsim
from spendwatch.simulate.azure import ACCOUNT, COST, SUB, simulate_azure
from spendwatch.store import Store, Watermarks


class _Token:
    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken("fake-token", int(time.time()) + 3600)


def test_one_live_scan_over_gcp_and_azure(tmp_path: Path) -> None:
    root = tmp_path / "exports"
    truths = [gsim.simulate_gcp(root, seed=11, days=1.0, instances=12, write_truth=False),
              simulate_azure(root, seed=11, days=1.0, instances=12, write_truth=False)]
    incidents = [i for t in truths for i in t.incidents]
    legit = {r for t in truths for r in t.legit_gpu}
    assert any(r.startswith("projects/") for r in legit) and any(r.startswith("/subscriptions/") for r in legit)
    gcs, blobs, tls = FakeGcs(), FakeBlobStorage(), local_tls(tmp_path / "tls")
    for bucket in (gsim.LOGS, gsim.BILLING, gsim.MONITORING):
        gcs.upload_tree(root / bucket, bucket)
    blobs.upload_tree(root / ACCOUNT, ACCOUNT)
    blobs.upload_tree(root / COST, COST)
    with serve(gcs) as gcs_url, serve(blobs, tls.context) as blob_url, Store(tmp_path / "s.db") as state:
        configs = {
            "gcp": GcpConfig(logs=(GcsLocation(gsim.LOGS),), billing=(GcsLocation(gsim.BILLING, "billing_export/"),),
                             monitoring=(GcsLocation(gsim.MONITORING, "timeseries/"),), storage_endpoint=gcs_url,
                             anonymous=True, inventory=False),
            "azure": AzureConfig(subscriptions=(SUB,), logs=(BlobLocation.parse(f"{blob_url}/{ACCOUNT}"),),
                                 cost=(BlobLocation.parse(f"{blob_url}/{COST}/exports/"),), inventory=False,
                                 ca_bundle=str(tls.ca_file)),
        }
        result = scan_live(configs, store=state, credentials={"azure": _Token()})
        assert result.report.complete and not result.report.gaps
        findings = {(f.cloud, f.resource): f for f in result.findings}
        assert {i.cloud for i in incidents} == {"gcp", "azure"}
        for incident in incidents:
            for resource in incident.resources:
                found = findings.get((incident.cloud, resource))
                assert found is not None and found.severity >= Severity.MEDIUM, (incident.name, resource)
                assert found.principal == incident.principal
        for (cloud, resource), f in findings.items():
            if resource in legit:
                assert f.severity <= Severity.LOW, (cloud, resource, f.severity.label)
        assert Watermarks(state).load("gcp") and Watermarks(state).load("azure")
        assert not scan_live(configs, store=state, credentials={"azure": _Token()}).report.sources
