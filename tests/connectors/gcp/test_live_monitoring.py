"""GCP utilisation from the Cloud Monitoring API through the real google-cloud-monitoring client (gRPC) against a
local MetricService on 127.0.0.1: the same rows as the saved series the files connector reads, paging by points,
a throttled call retried, a denied project as a gap, the agent's CPU as 100 - idle, and the watermark's window."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fakes.gcp_monitoring import FakeMonitoring, Series, serve_monitoring
from fakes.gcs import FakeGcs
from fakes.raw_http import serve

from spendwatch.config import ConfigError
from spendwatch.connectors.files import read_directory
from spendwatch.connectors.gcp import GcpConfig, GcsLocation
from spendwatch.connectors.gcp.live import scan
from spendwatch.connectors.gcp.monitoring import LATE, MonitoringOptions, read_utilization, window
from spendwatch.report import RunReport
from spendwatch.simulate import DEFAULT_END
from spendwatch.simulate.gcp import ML, MONITORING, WEB, simulate_gcp
from spendwatch.store import Watermark

LOCKED = "acme-locked-prod"
KEY = ("gcp", ML, "", "utilization", "monitoring")


@dataclass
class World:
    root: Path
    saved: pd.DataFrame  # what the files connector reads from the simulator's saved series


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("gcp-monitoring")
    simulate_gcp(root, seed=7, days=1.0, instances=12, write_truth=False)
    tables = read_directory(root / MONITORING, RunReport())
    return World(root, tables.utilization)


@pytest.fixture
def api(world: World) -> Iterator[tuple[FakeMonitoring, MonitoringOptions]]:
    fake = FakeMonitoring()
    fake.add_simulated(world.root / MONITORING)
    with serve_monitoring(fake) as target:
        yield fake, MonitoringOptions(endpoint=target, anonymous=True, backoff_s=0.01, retry_deadline_s=30)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    cols = ["time", "cloud", "account", "region", "resource", "metric", "device", "value"]
    return frame[cols].sort_values(cols[:7]).reset_index(drop=True)


def test_the_api_gives_the_rows_the_saved_series_give(world: World, api: tuple[FakeMonitoring,
                                                                               MonitoringOptions]) -> None:
    fake, options = api
    fake.page_points = 2000  # the API pages by points: make it page, a series running on into the next page
    fake.throttle = 2  # RESOURCE_EXHAUSTED twice: retried with back-off
    report = RunReport()
    got = read_utilization([ML, WEB], report, options, marks={}, now=DEFAULT_END)
    assert fake.throttle == 0 and not report.gaps and not report.problems
    start = DEFAULT_END - timedelta(hours=24)
    expected = world.saved[world.saved["time"] > pd.Timestamp(start)]  # the API's interval is (start, end]
    assert len(expected) > 5000 and set(expected["metric"]) == {"cpu_util", "gpu_util"}
    pd.testing.assert_frame_equal(_sorted(got.utilization), _sorted(expected), check_exact=False, rtol=1e-9)
    ml_gpu = [c for c in fake.calls if c.project == ML and "gpu" in c.filter]
    assert [c.page_token for c in ml_gpu] == ["", "", "", "2000"]  # throttled twice, then both pages
    assert all(c.period == 60 and "metadata.system_labels.name" in c.group_by for c in fake.calls)
    assert got.calls == len(fake.calls) - 2  # the two throttled attempts are retries, not calls of their own
    assert [m.position for m in got.marks] == [DEFAULT_END.isoformat()] * 2


def test_a_denied_project_is_a_gap_and_keeps_its_watermark(api: tuple[FakeMonitoring, MonitoringOptions]) -> None:
    fake, options = api
    fake.denied.add(LOCKED)
    report = RunReport()
    old = Watermark("gcp", LOCKED, "", "utilization", "monitoring", (DEFAULT_END - timedelta(hours=1)).isoformat())
    got = read_utilization([ML, LOCKED, WEB], report, options, marks={old.key: old}, now=DEFAULT_END)
    assert [g.source for g in report.gaps] == [f"gcp/{LOCKED}/utilization"]
    assert "monitoring.timeSeries.list" in report.gaps[0].reason and "access denied" in report.gaps[0].reason
    assert sorted(m.account for m in got.marks) == [ML, WEB]  # the locked project's watermark is not moved
    assert set(got.utilization["account"]) == {ML, WEB}


def test_the_agents_cpu_is_100_minus_idle_and_replaces_the_hypervisors() -> None:
    fake = FakeMonitoring()
    end = int(DEFAULT_END.timestamp())
    minutes = list(range(end - 600 + 60, end + 1, 60))
    res = {"project_id": ML, "zone": "us-central1-a", "instance_id": "42"}
    for cpu, idle in (("0", 20.0), ("1", 40.0)):  # two CPUs: 80 % and 60 % busy -> 70 % for the instance
        for state, value in (("idle", idle), ("user", 100.0 - idle)):
            fake.add(Series(ML, "agent.googleapis.com/cpu/utilization", {"cpu_number": cpu, "cpu_state": state},
                            res, {"name": "box"}, [(t, value) for t in minutes]))
    fake.add(Series(ML, "compute.googleapis.com/instance/cpu/utilization", {"instance_name": "box"}, res,
                    {"name": "box"}, [(t, 0.55) for t in minutes]))
    fake.add(Series(ML, "compute.googleapis.com/instance/cpu/utilization", {"instance_name": "plain"},
                    {**res, "instance_id": "43"}, {"name": "plain"}, [(t, 0.25) for t in minutes]))
    fake.add(Series(ML, "agent.googleapis.com/gpu/utilization", {"gpu_number": "0"}, {**res, "instance_id": "44"},
                    {}, [(t, 99.0) for t in minutes]))  # no name anywhere: cannot be joined
    report = RunReport()
    with serve_monitoring(fake) as target:
        got = read_utilization([ML], report, MonitoringOptions(endpoint=target, anonymous=True, period_s=300),
                               marks={}, now=DEFAULT_END + timedelta(seconds=30))
    cpu = got.utilization.set_index(["resource", "time"])["value"]
    box, plain = (f"projects/{ML}/zones/us-central1-a/instances/{n}" for n in ("box", "plain"))
    assert cpu.loc[box].tolist() == [70.0, 70.0]  # two 5-minute means, the agent's only
    assert cpu.loc[plain].tolist() == [25.0, 25.0]  # no agent: the hypervisor's, as a percentage
    assert [p.reason.split(" names")[0] for p in report.problems] == ["series of instance id 44"]
    assert report.problems[0].records == 2


def test_each_run_reads_from_its_watermark_less_the_late_margin(api: tuple[FakeMonitoring,
                                                                            MonitoringOptions]) -> None:
    fake, options = api
    first = read_utilization([ML], RunReport(), options, marks={}, now=DEFAULT_END - timedelta(hours=2))
    mark = first.marks[0]
    later = DEFAULT_END - timedelta(minutes=59, seconds=30)
    second = read_utilization([ML], RunReport(), options, marks={mark.key: mark}, now=later)
    calls = [c for c in fake.calls if c.page_token == ""]
    assert datetime.fromtimestamp(calls[-1].start, UTC) == DEFAULT_END - timedelta(hours=2) - LATE
    assert datetime.fromtimestamp(calls[-1].end, UTC) == DEFAULT_END - timedelta(hours=1)
    times = second.utilization["time"]
    assert times.min() > pd.Timestamp(DEFAULT_END - timedelta(hours=2) - LATE) and \
        times.max() == pd.Timestamp(DEFAULT_END - timedelta(hours=1))
    assert second.marks[0].position == (DEFAULT_END - timedelta(hours=1)).isoformat()
    assert window(second.marks[0], DEFAULT_END - timedelta(hours=1), 60, 24)[0] == \
        DEFAULT_END - timedelta(hours=1) - LATE


def test_the_api_is_preferred_to_the_bucket_and_the_config_says_so(world: World, api: tuple[FakeMonitoring,
                                                                                          MonitoringOptions]) -> None:
    _, options = api
    gcs = FakeGcs()
    gcs.upload_tree(world.root / MONITORING, MONITORING)
    with serve(gcs) as url:
        config = GcpConfig(projects=(ML, WEB), monitoring=(GcsLocation(MONITORING, "timeseries/"),),
                           monitoring_api=True, monitoring_endpoint=options.endpoint, storage_endpoint=url,
                           anonymous=True, inventory=False, backoff_s=0.01)
        report = RunReport()
        got = scan(config, report, now=DEFAULT_END)
    assert not gcs.log  # the bucket was not listed
    assert any("monitoring is not read" in n for n in report.notes)
    assert any(n.startswith("gcp monitoring: 6 timeSeries.list call(s)") for n in report.notes)
    assert len(got.tables.utilization) == len(world.saved) - world.saved["time"].eq(
        pd.Timestamp(DEFAULT_END - timedelta(hours=24))).sum()
    assert {m.scope for m in got.marks} == {"monitoring"} and "gcp/*/utilization" not in \
        {g.source for g in report.gaps}
    cfg = GcpConfig.from_dict({"projects": [ML], "monitoring_api": True, "monitoring_period_s": 300,
                               "initial_hours": 6})
    assert (cfg.monitoring_api, cfg.monitoring_period_s, cfg.initial_hours) == (True, 300, 6)
    with pytest.raises(ConfigError, match=r"\[gcp\] monitoring_api: needs projects"):
        GcpConfig.from_dict({"logs": ["gs://acme-logs/"], "monitoring_api": True})
    with pytest.raises(ConfigError, match=r"\[gcp\] monitoring_period_s: must be 60 or 300"):
        GcpConfig.from_dict({"projects": [ML], "monitoring_period_s": 120})
    unconfigured = RunReport()
    scan(replace(config, monitoring=(), monitoring_api=False, projects=()), unconfigured, now=DEFAULT_END)
    assert any(g.source == "gcp/*/utilization" and "monitoring_api = true" in g.reason for g in unconfigured.gaps)
