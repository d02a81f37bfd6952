"""The live GCP scan through the real google-cloud-storage and google-cloud-compute clients against local fakes:
the same findings as the files scan of the same exports, incremental runs with late objects, a killed run,
paging, throttling, a denied bucket, and a role that grants exactly the calls made."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fakes.bigquery import FakeBigQuery
from fakes.gcp_compute import compute_handler, instance
from fakes.gcp_monitoring import FakeMonitoring, serve_monitoring
from fakes.gcs import FakeGcs
from fakes.http import serve as serve_json
from fakes.raw_http import serve

from spendwatch.cli import main
from spendwatch.config import ConfigError
from spendwatch.connectors.gcp import GcpConfig, GcsLocation, gcs, permissions
from spendwatch.connectors.gcp.live import scan
from spendwatch.connectors.live import Listed, plan_by_name
from spendwatch.pipeline import ScanResult, scan_directory, scan_live
from spendwatch.report import RunReport
from spendwatch.simulate import Truth
from spendwatch.simulate.gcp import BILLING, LOGS, ML, MONITORING, WEB, simulate_gcp
from spendwatch.store import Store, Watermark, Watermarks

BUCKETS = (LOGS, BILLING, MONITORING)


@dataclass
class Sim:
    root: Path
    truth: Truth
    reference: ScanResult  # the files connector's scan of the same exports


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Sim:
    root = tmp_path_factory.mktemp("gcp-sim")
    truth = simulate_gcp(root, seed=7, days=1.0, instances=12)
    (root / "TRUTH.json").unlink()
    return Sim(root, truth, scan_directory(root, store=None, keep_tables=True))


def _verdicts(result: ScanResult) -> list[tuple[str, int, tuple[str, ...]]]:
    return sorted((f.id, int(f.severity), tuple(sorted(f.rules))) for f in result.findings)


def _config(url: str, **kw: Any) -> GcpConfig:
    return GcpConfig(logs=(GcsLocation(LOGS),), billing=(GcsLocation(BILLING, "billing_export/"),),
                     monitoring=(GcsLocation(MONITORING, "timeseries/"),), storage_endpoint=url, anonymous=True,
                     backoff_s=0.01, **kw)


@pytest.fixture
def fake(sim: Sim) -> Iterator[tuple[FakeGcs, str]]:
    store = FakeGcs()
    for bucket in BUCKETS:
        store.upload_tree(sim.root / bucket, bucket)
    with serve(store) as url:
        yield store, url


def test_live_scan_finds_what_the_files_scan_finds(sim: Sim, fake: tuple[FakeGcs, str]) -> None:
    store, url = fake
    store.throttle = 2  # the first two calls answer 429: retried by the client, nothing lost
    result = scan_live({"gcp": _config(url)}, store=None, keep_tables=True)
    assert store.throttle == 0
    assert _verdicts(result) == _verdicts(sim.reference)
    assert result.report.tables == sim.reference.report.tables
    assert len(result.report.sources) == len(sim.reference.report.sources)
    assert all(s.path.startswith("gs://") for s in result.report.sources)
    assert {g.source for g in result.report.gaps} == {"gcp/*/inventory"}  # no projects configured
    assert not result.report.problems
    flagged = {f.resource for f in result.findings if f.severity.label in ("high", "critical")}
    for incident in sim.truth.incidents:
        assert set(incident.resources) <= flagged, incident.name
    for f in result.findings:
        if f.resource in sim.truth.legit_gpu:
            assert f.severity.label in ("info", "low"), f


def test_incremental_runs_read_new_and_late_objects_once(sim: Sim, tmp_path: Path) -> None:
    fake = FakeGcs()
    names = sorted(p.relative_to(sim.root / LOGS).as_posix() for p in (sim.root / LOGS).rglob("*.json"))
    flows = [n for n in names if n.startswith("compute.googleapis.com/vpc_flows/")]
    late, first, later = flows[3], flows[:3] + flows[4:12], flows[12:]
    for name in first:
        fake.put(LOGS, name, (sim.root / LOGS / name).read_bytes())
    config = GcpConfig(logs=(GcsLocation(LOGS),), anonymous=True, backoff_s=0.01)
    with serve(fake) as url, Store(tmp_path / "s.db") as state:
        config = replace(config, storage_endpoint=url)
        one = scan_live({"gcp": config}, store=state)
        assert sorted(s.path for s in one.report.sources) == [f"gs://{LOGS}/{n}" for n in first]
        for name in [*later, late]:  # `late` sorts before names already read: it landed late
            fake.put(LOGS, name, (sim.root / LOGS / name).read_bytes())
        two = scan_live({"gcp": config}, store=state)
        assert sorted(s.path for s in two.report.sources) == sorted(f"gs://{LOGS}/{n}" for n in [*later, late])
        three = scan_live({"gcp": config}, store=state)
        assert not three.report.sources and not three.report.problems
        marks = Watermarks(state).load("gcp")
        flow_mark = marks[("gcp", "*", "", "flows", f"gs://{LOGS}/compute.googleapis.com/vpc_flows/")]
        assert flow_mark.position.startswith("compute.googleapis.com/vpc_flows/20")  # moved to the look-back day
        # no audit or DNS object was ever there: a gap each run, never an all clear
        assert {g.source for g in three.report.gaps} >= {"gcp/*/activity", "gcp/*/dns"}


def test_a_killed_run_resumes_with_nothing_lost_or_doubled(sim: Sim, fake: tuple[FakeGcs, str], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    class Killed(BaseException):
        """Like a SIGKILL: nothing in the connector may catch it."""

    _, url = fake
    real = gcs.download
    fetched = [0]

    def dying(*args: Any, **kwargs: Any) -> bytes:
        fetched[0] += 1
        if fetched[0] > 40:
            raise Killed
        return real(*args, **kwargs)

    with Store(tmp_path / "state.db") as state:
        monkeypatch.setattr(gcs, "download", dying)
        with pytest.raises(Killed):
            scan_live({"gcp": _config(url)}, store=state)
        assert state.count() == 0 and not Watermarks(state).load("gcp")
        monkeypatch.setattr(gcs, "download", real)
        resumed = scan_live({"gcp": _config(url)}, store=state)
        assert resumed.report.tables == sim.reference.report.tables
        assert _verdicts(resumed) == _verdicts(sim.reference)
        again = scan_live({"gcp": _config(url)}, store=state)
        assert not again.report.sources and sum(again.report.tables.values()) == 0
        assert state.count() == len(resumed.findings)


def test_a_denied_bucket_is_a_gap_and_the_others_are_read(sim: Sim, fake: tuple[FakeGcs, str]) -> None:
    store, url = fake
    store.denied.add(BILLING)
    report = RunReport()
    got = scan(_config(url), report)
    gaps = {g.source: g.reason for g in report.gaps}
    assert "access denied" in gaps["gcp/*/billing"] and f"gs://{BILLING}/" in gaps["gcp/*/billing"]
    assert "storage.objects.list" in gaps["gcp/*/billing"]
    assert len(got.tables.spend) == 0 and len(got.tables.flows) == sim.reference.report.tables["flows"]
    assert not report.complete


def test_an_object_rewritten_before_its_fetch_is_a_problem_then_read_next_run(
        fake: tuple[FakeGcs, str], monkeypatch: pytest.MonkeyPatch) -> None:
    store, url = fake
    name = sorted(n for n in store.buckets[LOGS] if "vpc_flows" in n)[0]
    real = gcs.download

    def rewritten_first(client: Any, bucket: str, obj: Listed, retry: Any) -> bytes:
        if obj.name == name and store.buckets[LOGS][name].generation == int(obj.version):
            store.put(LOGS, name, store.buckets[LOGS][name].data)  # a new generation lands meanwhile
        return real(client, bucket, obj, retry)

    monkeypatch.setattr(gcs, "download", rewritten_first)
    report = RunReport()
    first = scan(_config(url), report)
    assert [(p.source, "not found" in p.reason) for p in report.problems] == [(f"gs://{LOGS}/{name}", True)]
    monkeypatch.setattr(gcs, "download", real)
    again = RunReport()
    scan(_config(url), again, marks={m.key: m for m in first.marks})
    assert [s.path for s in again.sources] == [f"gs://{LOGS}/{name}"] and not again.problems


def test_listing_pages_past_1000_objects(fake: tuple[FakeGcs, str]) -> None:
    store, url = fake
    prefix = "compute.googleapis.com/vpc_flows/"
    for i in range(1205):
        store.put("many", f"{prefix}2026/11/{19 + i // 1000}/{i:05d}.json", b"")
    client = gcs.client(None, endpoint=url, anonymous=True)
    before = len(store.log)
    plan = plan_by_name(gcs.list_from(client, "many", prefix, "", gcs.retry(0.01, 5)), prefix,
                        Watermark("gcp", "*", "", "flows", "s", ""))
    assert len(plan.new) == 1205 and len(store.log) - before == 2  # two pages
    mark = plan.advanced(set(), lookback_days=0)
    assert mark.position == prefix + "2026/11/20/" and len(mark.seen) == 205  # the 19th is behind the look-back
    again = plan_by_name(gcs.list_from(client, "many", prefix, mark.position, gcs.retry(0.01, 5)), prefix, mark)
    assert not again.new and store.log[-1][2]["startOffset"] == prefix + "2026/11/20/"


def test_inventory_and_the_role_cover_exactly_the_calls_made(sim: Sim, fake: tuple[FakeGcs, str],
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    store, url = fake
    pages = {ML: [{"us-central1-a": [instance("idle-a2", "us-central1-a", "a2-highgpu-1g", ip="10.128.0.99")]}],
             WEB: [{}]}
    metrics = FakeMonitoring(denied={"acme-locked-prod"})
    metrics.add_simulated(sim.root / MONITORING)
    table = "acme-billing.billing_export.gcp_billing_export_resource_v1_01A2B3_C4D5E6_F7A8B9"
    bigquery = FakeBigQuery(table)
    with serve_json(compute_handler(pages, denied=frozenset({"acme-locked-prod"}))) as (compute_url, compute_log), \
            serve_monitoring(metrics) as monitoring_target, serve(bigquery) as bigquery_url:
        config = replace(_config(url), projects=(ML, WEB, "acme-locked-prod"), compute_endpoint=compute_url,
                         monitoring_api=True, monitoring_endpoint=monitoring_target, billing_table=table,
                         bigquery_endpoint=bigquery_url)
        result = scan_live({"gcp": config}, store=None, keep_tables=True, now=sim.truth.end)
    assert result.tables is not None
    inv = result.tables.inventory.set_index("resource")
    idle = inv.loc[f"projects/{ML}/zones/us-central1-a/instances/idle-a2"]
    assert (idle["gpus"], idle["state"], idle["private_ips"]) == (1, "running", "10.128.0.99")
    assert len(inv) == len(sim.reference.tables.inventory) + 1  # the API adds what the logs cannot know of
    assert [g.source for g in result.report.gaps] == ["gcp/acme-locked-prod/inventory",
                                                      "gcp/acme-locked-prod/utilization"]
    assert set(result.tables.utilization["account"]) == {ML, WEB}  # from the API: the bucket is not read
    used = set()
    for _, path, _ in store.log:
        used.add("storage.objects.get" if path.startswith("/download/") else "storage.objects.list")
    for _, path, _ in compute_log:
        used.add("compute.machineTypes.get" if "/machineTypes/" in path else "compute.instances.list")
    if metrics.calls:  # the Monitoring fake serves ListTimeSeries only
        used.add("monitoring.timeSeries.list")
    if any(method == "POST" and path.endswith("/queries") for method, path, _ in bigquery.calls):
        # A query job (its results and status are the caller's own job: no further permission) on the table.
        used |= {"bigquery.jobs.create", "bigquery.tables.getData"}
    assert sorted(used) == permissions()
    assert main(["iam-policy", "gcp"]) == 0
    printed = capsys.readouterr().out
    assert [line[2:] for line in printed.splitlines() if line.startswith("- ")] == permissions()


def test_scan_config_on_the_command_line(sim: Sim, fake: tuple[FakeGcs, str], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    _, url = fake
    conf = tmp_path / "spendwatch.toml"
    conf.write_text(f'''[gcp]
logs = ["gs://{LOGS}/"]
billing = ["gs://{BILLING}/billing_export/"]
monitoring = ["gs://{MONITORING}/timeseries/"]
storage_endpoint = "{url}"
anonymous = true
''')
    report = tmp_path / "report.json"
    code = main(["scan", "--config", str(conf), "--state", str(tmp_path / "s.db"), "--json", "--report", str(report)])
    assert code == 0
    got = json.loads(report.read_text())
    assert got["files_read"] == len(sim.reference.report.sources) and not got["problems"]
    assert [g["source"] for g in got["gaps"]] == ["gcp/*/inventory"]
    findings = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert {f["resource"] for f in findings} >= set(sim.truth.incidents[0].resources)
    conf.write_text('[gcp]\nlogs = ["s3://not-gcs/"]\n')
    assert main(["scan", "--config", str(conf), "--state", str(tmp_path / "s.db")]) == 1
    assert "[gcp] logs" in capsys.readouterr().err


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[gcp\] projects: 'Bad_Project'"):
        GcpConfig.from_dict({"projects": ["Bad_Project"]})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) bucket"):
        GcpConfig.from_dict({"logs": ["gs://acme-logs/"], "bucket": "b"})
    with pytest.raises(ConfigError, match="nothing to scan"):
        GcpConfig.from_dict({})
    cfg = GcpConfig.from_dict({"logs": ["gs://acme-logs/sink"], "projects": ["acme-ml-prod"]})
    assert cfg.logs == (GcsLocation("acme-logs", "sink/"),) and str(cfg.logs[0]) == "gs://acme-logs/sink/"


def test_listed_entries_change_with_the_generation() -> None:
    mark = Watermark("gcp", "*", "", "billing", "gs://b/x/", "")
    first = plan_by_name([Listed("x/export.json", 10, "1", None)], "x/", mark)
    assert [o.name for o in first.new] == ["x/export.json"]
    mark = first.advanced(set(), 2)
    assert not plan_by_name([Listed("x/export.json", 10, "1", None)], "x/", mark).new
    rewritten = plan_by_name([Listed("x/export.json", 12, "2", None)], "x/", mark)
    assert [o.version for o in rewritten.new] == ["2"]
    assert rewritten.advanced(set(), 2).seen == frozenset({"2:export.json"})
