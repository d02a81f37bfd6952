"""Azure utilisation from Azure Monitor's metrics:getBatch through the real azure-monitor-querymetrics client
against a local fake on 127.0.0.1 (TLS, the client trusting a throwaway CA): the minutes the diagnostic setting's
blobs hold, batches of 50 by subscription and region with GPU VMs first, the call cap as a gap, a throttled call
retried after Retry-After, a denied subscription as a gap, and the live scan reading the API instead of the
insights-metrics-pt1m container."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from azure.core.credentials import AccessToken

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fakes.azure_arm import arm_handler, nic, vm
from fakes.azure_blob import FakeBlobStorage
from fakes.azure_metrics import FakeAzureMetrics
from fakes.http import serve as serve_json
from fakes.raw_http import serve
from fakes.tls import LocalTls, local_tls

from spendwatch.config import ConfigError
from spendwatch.connectors.azure import AzureConfig, BlobLocation
from spendwatch.connectors.azure.live import scan
from spendwatch.connectors.azure.metrics import BATCH, LATE, MetricsOptions, Vm, batches, read_utilization
from spendwatch.connectors.files import read_directory
from spendwatch.report import RunReport
from spendwatch.simulate import DEFAULT_END
from spendwatch.simulate.azure import ACCOUNT, SUB, simulate_azure
from spendwatch.store import Watermark

LOCKED, BUSY = "22222222-bbbb-4bbb-8bbb-222222222222", "33333333-cccc-4ccc-8ccc-333333333333"


class _Token:
    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken("fake-token", int(time.time()) + 3600)


@dataclass
class World:
    root: Path
    ids: list[str]  # the simulated VMs' ARM ids, as the service writes them
    saved: pd.DataFrame  # what the files connector reads from the insights-metrics-pt1m blobs
    tls: LocalTls


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("azure-metrics")
    simulate_azure(root, seed=7, days=1.0, instances=12, write_truth=False)
    ids = FakeAzureMetrics().add_simulated(root / ACCOUNT / "insights-metrics-pt1m", "eastus")
    saved = read_directory(root / ACCOUNT / "insights-metrics-pt1m", RunReport()).utilization
    return World(root, ids, saved, local_tls(tmp_path_factory.mktemp("tls")))


@pytest.fixture
def api(world: World) -> Iterator[tuple[FakeAzureMetrics, MetricsOptions]]:
    fake = FakeAzureMetrics()
    fake.add_simulated(world.root / ACCOUNT / "insights-metrics-pt1m", "eastus")
    with serve(fake, world.tls.context) as url:
        yield fake, MetricsOptions(_Token(), url + "/{region}", connection_verify=str(world.tls.ca_file),
                                   retry_backoff_factor=0.01)


def _vm_id(sub: str, name: str) -> str:
    return f"/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{name}"


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    cols = ["time", "cloud", "account", "resource", "metric", "value"]
    return frame[cols].sort_values(cols[:5]).reset_index(drop=True)


def test_the_api_gives_the_minutes_the_diagnostic_blobs_hold(world: World, api: tuple[FakeAzureMetrics,
                                                                                       MetricsOptions]) -> None:
    fake, options = api
    vms = [Vm(i.lower(), SUB, "eastus", 1 if "GPU" in i else 0) for i in world.ids]
    report = RunReport()
    got = read_utilization(vms, [SUB], report, options, marks={}, now=DEFAULT_END)
    assert not report.gaps and not report.problems and got.calls == 1
    start = pd.Timestamp(DEFAULT_END - timedelta(hours=24))
    expected = world.saved[world.saved["time"] >= start]
    assert len(expected) > 4000
    pd.testing.assert_frame_equal(_sorted(got.utilization), _sorted(expected))
    assert set(got.utilization["region"]) == {"eastus"}
    (region, sub, _, query), = fake.calls
    assert (region, sub, query["interval"], query["metricnames"]) == ("eastus", SUB, "PT1M", "Percentage CPU")
    assert [m.position for m in got.marks] == [DEFAULT_END.isoformat()]


def test_batches_of_50_by_region_gpus_first_a_cap_a_throttle_and_a_denied_subscription(
        world: World, api: tuple[FakeAzureMetrics, MetricsOptions]) -> None:
    fake, options = api
    end = int(DEFAULT_END.timestamp())
    vms = [Vm(_vm_id(SUB, f"web-{i:03}").lower(), SUB, "eastus", 0) for i in range(120)]
    vms += [Vm(_vm_id(SUB, "gpu-1").lower(), SUB, "eastus", 8)]
    vms += [Vm(_vm_id(SUB, f"eu-{i}").lower(), SUB, "westeurope", 0) for i in range(3)]
    vms += [Vm(_vm_id(LOCKED, "locked-1").lower(), LOCKED, "eastus", 1),
            Vm(_vm_id(BUSY, "busy-1").lower(), BUSY, "eastus", 0)]
    for v in vms:
        fake.add(_vm_id(v.account, v.resource.rsplit("/", 1)[-1]), v.region, [(end - 120, 50.0), (end - 60, 51.0)])
    plan = batches(vms)
    # GPU batches first (the locked subscription's GPU VM, then SUB's eastus VMs with its GPU VM leading),
    # then the rest by subscription and region.
    assert [len(b) for b in plan] == [1, 50, 1, 50, 21, 3]
    assert plan[0][0].account == LOCKED and plan[1][0].resource.endswith("/gpu-1") and plan[2][0].account == BUSY
    assert all(len({(v.account, v.region) for v in b}) == 1 and len(b) <= BATCH for b in plan)

    fake.denied.add(LOCKED)
    fake.throttle = 1  # the first call served answers 429 with Retry-After: 1, then its retry is answered
    report = RunReport()
    got = read_utilization(vms, [SUB, LOCKED, BUSY], report, replace(options, max_calls=5), marks={},
                           now=DEFAULT_END)
    assert fake.throttle == 0 and got.calls == 5
    assert [(c[0], c[1], len(c[2])) for c in fake.calls] == [
        ("eastus", LOCKED, 1), ("eastus", SUB, 50), ("eastus", SUB, 50), ("eastus", BUSY, 1), ("eastus", SUB, 50),
        ("eastus", SUB, 21)]  # denied, throttled and retried, then three more: the westeurope batch is capped
    gaps = {g.source: g.reason for g in report.gaps}
    assert set(gaps) == {f"azure/{LOCKED}/utilization", f"azure/{SUB}/utilization"}
    assert "Microsoft.Insights/Metrics/Read" in gaps[f"azure/{LOCKED}/utilization"]
    assert gaps[f"azure/{SUB}/utilization"].startswith("3 VM(s) not read: the cap of 5")
    assert [m.account for m in got.marks] == [BUSY]  # capped and denied subscriptions keep their watermarks
    assert got.vms_read == 122 and got.vms_skipped == 3 and len(got.utilization) == 2 * 122


def test_each_run_reads_from_its_watermark_less_the_late_margin(api: tuple[FakeAzureMetrics,
                                                                            MetricsOptions], world: World) -> None:
    fake, options = api
    vms = [Vm(i.lower(), SUB, "eastus", 0) for i in world.ids]
    mark = Watermark("azure", SUB, "", "utilization", "metrics:getBatch",
                     (DEFAULT_END - timedelta(hours=1)).isoformat())
    got = read_utilization(vms, [SUB], RunReport(), options, marks={mark.key: mark},
                           now=DEFAULT_END + timedelta(seconds=42))
    query = fake.calls[-1][3]
    assert pd.Timestamp(query["starttime"]) == pd.Timestamp(DEFAULT_END - timedelta(hours=1) - LATE)
    assert pd.Timestamp(query["endtime"]) == pd.Timestamp(DEFAULT_END)
    assert len(got.utilization) == len(world.ids) * 70 and got.marks[0].position == DEFAULT_END.isoformat()


def test_the_live_scan_reads_the_api_not_the_container(world: World, api: tuple[FakeAzureMetrics,
                                                                                MetricsOptions]) -> None:
    _, options = api
    blobs = FakeBlobStorage()
    blobs.upload_tree(world.root / ACCOUNT, ACCOUNT)
    arm_vms = []
    for rid in world.ids:
        name = rid.rsplit("/", 1)[-1].lower()
        size = "Standard_NC24ads_A100_v4" if name.startswith("gpu") else "Standard_D4s_v5"
        nic_id = f"{rid}-nic"
        arm_vms.append({**vm(SUB, name, size, nic_id), "id": rid})
    base: dict[str, str] = {}
    with serve(blobs, world.tls.context) as blob_url, \
            serve_json(arm_handler(base, {SUB: [arm_vms]}, {SUB: [nic(f"{world.ids[0]}-nic", "10.1.0.4")]},
                                   denied=frozenset({LOCKED}))) as (arm_url, _):
        base["url"] = arm_url
        config = AzureConfig(subscriptions=(SUB, LOCKED), logs=(BlobLocation.parse(f"{blob_url}/{ACCOUNT}"),),
                             metrics_api=True, metrics_endpoint=options.endpoint, arm_endpoint=arm_url,
                             allow_http=True, ca_bundle=str(world.tls.ca_file), backoff_s=0.01, backoff_base=0.01)
        report = RunReport()
        got = scan(config, report, credential=_Token(), now=DEFAULT_END)
    listed = {path.split("/")[2] for _, path, q in blobs.log if q.get("comp") == "list"}
    assert "insights-metrics-pt1m" not in listed and "insights-activity-logs" in listed
    assert any("insights-metrics-pt1m containers are not read" in n for n in report.notes)
    util = got.tables.utilization
    assert len(util) == len(world.saved[world.saved["time"] >= pd.Timestamp(DEFAULT_END - timedelta(hours=24))])
    assert set(util["resource"]) == {i.lower() for i in world.ids}
    gaps = {g.source: g.reason for g in report.gaps}
    assert f"azure/{LOCKED}/inventory" in gaps and "no VM list" in gaps[f"azure/{LOCKED}/utilization"]
    assert f"azure/{SUB}/utilization" not in gaps
    assert {(m.account, m.scope) for m in got.marks if m.source == "utilization"} == {(SUB, "metrics:getBatch")}


def test_config_keys() -> None:
    cfg = AzureConfig.from_dict({"subscriptions": [SUB], "metrics_api": True, "metrics_max_calls": 20,
                                 "initial_hours": 3})
    assert (cfg.metrics_api, cfg.metrics_max_calls, cfg.initial_hours) == (True, 20, 3)
    assert cfg.metrics_endpoint == "https://{region}.metrics.monitor.azure.com"
    with pytest.raises(ConfigError, match=r"\[azure\] metrics_api: needs inventory = true"):
        AzureConfig.from_dict({"subscriptions": [SUB], "metrics_api": True, "inventory": False})
    with pytest.raises(ConfigError, match=r"\[azure\] metrics_max_calls: must be an integer 1 or more"):
        AzureConfig.from_dict({"subscriptions": [SUB], "metrics_max_calls": 0})
