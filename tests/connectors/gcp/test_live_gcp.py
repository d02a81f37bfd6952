"""Live GCP inventory through the real google-cloud-compute REST client against a local fake on 127.0.0.1."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fakes.gcp_compute import compute_handler, instance
from fakes.http import serve

from spendwatch.connectors.gcp.inventory import GcpOptions, list_inventory
from spendwatch.connectors.gcp.permissions import permissions, role_yaml
from spendwatch.report import RunReport


def test_inventory_pages_retries_and_reports_denied_projects() -> None:
    pages = {"ml": [{"us-central1-a": [instance("train-1", "us-central1-a", "a2-highgpu-1g")]},
                    {"europe-west4-b": [instance("t4-box", "europe-west4-b", "n1-standard-4", gpus=2, ip="10.1.0.9")]}],
             "web": [{"us-central1-a": [instance("web-1", "us-central1-a", "n1-standard-4")]}]}
    handler = compute_handler(pages, denied=frozenset({"locked"}), throttle_once=frozenset({"web"}))
    report = RunReport()
    with serve(handler) as (url, log):
        inv = list_inventory(["ml", "locked", "web"], report,
                             GcpOptions(endpoint=url, anonymous=True, backoff_s=0.01))
    rows = inv.set_index("resource")
    assert list(rows.index) == ["projects/ml/zones/us-central1-a/instances/train-1",
                                "projects/ml/zones/europe-west4-b/instances/t4-box",
                                "projects/web/zones/us-central1-a/instances/web-1"]
    train = rows.loc["projects/ml/zones/us-central1-a/instances/train-1"]
    assert (train["cloud"], train["account"], train["region"], train["gpus"], train["vcpus"]) == \
        ("gcp", "ml", "us-central1", 1, 12)
    t4 = rows.loc["projects/ml/zones/europe-west4-b/instances/t4-box"]
    assert (t4["gpus"], t4["spot"], t4["private_ips"]) == (2, True, "10.1.0.9")
    assert [q.get("pageToken") for _, p, q in log if p.endswith("/ml/aggregated/instances")] == [None, "1"]
    assert sum(p.endswith("/web/aggregated/instances") for _, p, _ in log) == 2  # 429, then retried
    assert [g.source for g in report.gaps] == ["gcp/locked/inventory"]
    assert "access denied" in report.gaps[0].reason


def test_denied_machine_types_fall_back_to_the_catalogue() -> None:
    pages = {"ml": [{"us-central1-a": [instance("train-1", "us-central1-a", "a2-highgpu-1g")]}]}
    report = RunReport()
    with serve(compute_handler(pages, deny_types=True)) as (url, _):
        inv = list_inventory(["ml"], report, GcpOptions(endpoint=url, anonymous=True, backoff_s=0.01))
    assert (inv.iloc[0]["gpus"], inv.iloc[0]["vcpus"]) == (1, 12)
    assert not report.gaps and any("catalogue" in n for n in report.notes)


def test_role_lists_exactly_the_declared_permissions() -> None:
    assert "compute.instances.list" in permissions()
    text = role_yaml()
    assert text.startswith("title:") and all(f"- {p}\n" in text for p in permissions())
