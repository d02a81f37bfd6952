"""The live Azure scan through the real azure-storage-blob and azure-mgmt clients against local fakes: the same
findings as the files scan of the same exports, an appended hour blob read again, a killed run, paging,
throttling, denied and missing containers, and a role that grants exactly the calls made."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fakes.azure_arm import arm_handler, nic, vm
from fakes.azure_blob import FakeBlobStorage
from fakes.azure_cost import FakeCostManagement, beside_arm
from fakes.azure_metrics import FakeAzureMetrics
from fakes.raw_http import serve
from fakes.tls import LocalTls, local_tls

from spendwatch.config import ConfigError
from spendwatch.connectors.azure import AzureConfig, BlobLocation, blobs
from spendwatch.connectors.azure.live import scan
from spendwatch.connectors.azure.permissions import CALLS, DATA_CALLS, role
from spendwatch.connectors.live import Listed, plan_by_time
from spendwatch.pipeline import ScanResult, scan_directory, scan_live
from spendwatch.report import RunReport
from spendwatch.simulate import Truth
from spendwatch.simulate.azure import ACCOUNT, COST, SUB, simulate_azure
from spendwatch.store import Store, Watermark, Watermarks

OTHER = "9d0e8f7a-0000-4000-8000-00000000abcd"  # a subscription with no diagnostic settings anywhere


class _Token:
    """A token credential, as DefaultAzureCredential would give; the fakes only check a bearer is sent."""

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken("fake-token", int(time.time()) + 3600)


@dataclass
class Sim:
    root: Path
    truth: Truth
    reference: ScanResult


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Sim:
    root = tmp_path_factory.mktemp("azure-sim")
    truth = simulate_azure(root, seed=7, days=1.0, instances=12, write_truth=False)
    return Sim(root, truth, scan_directory(root, store=None, keep_tables=True))


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> LocalTls:
    return local_tls(tmp_path_factory.mktemp("tls"))


@dataclass
class Blobs:
    store: FakeBlobStorage
    url: str
    config: AzureConfig


@pytest.fixture
def fake(sim: Sim, tls: LocalTls) -> Iterator[Blobs]:
    store = FakeBlobStorage()
    store.upload_tree(sim.root / ACCOUNT, ACCOUNT)
    store.upload_tree(sim.root / COST, COST)
    with serve(store, tls.context) as url:
        config = AzureConfig(subscriptions=(SUB,), logs=(BlobLocation.parse(f"{url}/{ACCOUNT}"),),
                             cost=(BlobLocation.parse(f"{url}/{COST}/exports/daily/"),), inventory=False,
                             ca_bundle=str(tls.ca_file), backoff_s=0.01, backoff_base=0.01)
        yield Blobs(store, url, config)


def _verdicts(result: ScanResult) -> list[tuple[str, int, tuple[str, ...]]]:
    return sorted((f.id, int(f.severity), tuple(sorted(f.rules))) for f in result.findings)


def _live(config: AzureConfig, state: Store | None = None) -> ScanResult:
    return scan_live({"azure": config}, store=state, keep_tables=True, credentials={"azure": _Token()})


def test_live_scan_finds_what_the_files_scan_finds(sim: Sim, fake: Blobs) -> None:
    fake.store.throttle = 2  # 503 ServerBusy twice: retried by the client
    result = _live(fake.config)
    assert fake.store.throttle == 0
    assert _verdicts(result) == _verdicts(sim.reference)
    assert result.report.tables == sim.reference.report.tables
    assert len(result.report.sources) == len(sim.reference.report.sources) and not result.report.problems
    assert not result.report.gaps
    flagged = {f.resource for f in result.findings if f.severity.label in ("high", "critical")}
    for incident in sim.truth.incidents:
        assert set(incident.resources) <= flagged, incident.name
    for f in result.findings:
        if f.resource in sim.truth.legit_gpu:
            assert f.severity.label in ("info", "low"), f


def test_an_appended_hour_blob_is_read_again_and_nothing_is_doubled(sim: Sim, fake: Blobs, tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as state:
        first = _live(fake.config, state)
        assert _live(fake.config, state).report.sources == []  # nothing new
        container = fake.store.accounts[ACCOUNT]["insights-activity-logs"]
        hour = sorted(container)[-1]
        record = container[hour].data.splitlines(keepends=True)[-1]
        fake.store.append(ACCOUNT, "insights-activity-logs", hour, record)  # the same record again, as a retry
        again = _live(fake.config, state)
        assert [s.path for s in again.report.sources] == [f"{fake.url}/{ACCOUNT}/insights-activity-logs/{hour}"]
        assert state.count() == len(first.findings)  # findings upserted by their id: none doubled
        assert _live(fake.config, state).report.sources == []
        mark = Watermarks(state).load("azure")[("azure", SUB, "", "activity",
                                                 f"{fake.url}/{ACCOUNT}/insights-activity-logs/resourceId="
                                                 f"/SUBSCRIPTIONS/{SUB.upper()}/")]
        assert mark.position and any(e.endswith(hour[len(f"resourceId=/SUBSCRIPTIONS/{SUB.upper()}/"):])
                                     and e.startswith(container[hour].etag) for e in mark.seen)


def test_a_killed_run_resumes_with_nothing_lost_or_doubled(sim: Sim, fake: Blobs, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    class Killed(BaseException):
        """Like a SIGKILL: nothing in the connector may catch it."""

    real = blobs.download
    fetched = [0]

    def dying(*args: Any) -> tuple[bytes, str]:
        fetched[0] += 1
        if fetched[0] > 30:
            raise Killed
        return real(*args)

    with Store(tmp_path / "state.db") as state:
        monkeypatch.setattr(blobs, "download", dying)
        with pytest.raises(Killed):
            _live(fake.config, state)
        assert state.count() == 0 and not Watermarks(state).load("azure")
        monkeypatch.setattr(blobs, "download", real)
        resumed = _live(fake.config, state)
        assert resumed.report.tables == sim.reference.report.tables
        assert _verdicts(resumed) == _verdicts(sim.reference)
        again = _live(fake.config, state)
        assert not again.report.sources and sum(again.report.tables.values()) == 0
        assert state.count() == len(resumed.findings)


def test_denied_and_missing_containers_are_gaps_that_say_where(sim: Sim, fake: Blobs, tls: LocalTls) -> None:
    fake.store.denied.add(f"{ACCOUNT}/insights-logs-flowlogflowevent")
    fake.store.container("acmeflowswest", "insights-activity-logs")  # an account with nothing for anyone
    logs = (*fake.config.logs, BlobLocation.parse(f"{fake.url}/acmeflowswest"))
    config = replace(fake.config, subscriptions=(SUB, OTHER), logs=logs)
    report = RunReport()
    got = scan(config, report, credential=_Token())
    gaps = {g.source: g.reason for g in report.gaps}
    assert set(gaps) == {f"azure/{SUB}/flows", f"azure/{OTHER}/flows", f"azure/{OTHER}/activity",
                         f"azure/{OTHER}/utilization"}
    assert "access denied" in gaps[f"azure/{SUB}/flows"] and "insights-logs-flowlogflowevent" in \
        gaps[f"azure/{SUB}/flows"] and "blobs/read" in gaps[f"azure/{SUB}/flows"]
    assert f"no blobs under {fake.url}/acmeflowswest/insights-activity-logs/resourceId=/SUBSCRIPTIONS/" \
           f"{OTHER.upper()}/" in gaps[f"azure/{OTHER}/activity"]
    assert f"{fake.url}/acmeflowswest has no container insights-metrics-pt1m" in gaps[f"azure/{OTHER}/utilization"]
    assert len(got.tables.flows) == 0 and len(got.tables.activity) == len(sim.reference.tables.activity)


def test_listing_pages_past_5000_blobs(fake: Blobs) -> None:
    for i in range(5003):
        fake.store.put("many", "c", f"resourceId=/SUBSCRIPTIONS/X/h={i:05d}/PT1H.json", b"")
    loc = BlobLocation.parse(f"{fake.url}/many")
    container = blobs.service(loc, _Token(), fake.config).get_container_client("c")
    before = len(fake.store.log)
    plan = plan_by_time(blobs.list_prefix(container, "resourceId=/SUBSCRIPTIONS/X/"), "resourceId=/SUBSCRIPTIONS/X/",
                        Watermark("azure", "x", "", "activity", "s", ""))
    assert len(plan.new) == 5003 and len(fake.store.log) - before == 2  # two pages


def test_inventory_and_the_role_cover_exactly_the_calls_made(sim: Sim, fake: Blobs, tls: LocalTls) -> None:
    nic_id = f"/subscriptions/{SUB}/resourceGroups/RG/providers/Microsoft.Network/networkInterfaces/idle-nic"
    base: dict[str, str] = {}
    metrics, cost = FakeAzureMetrics(), FakeCostManagement()
    arm = arm_handler(base, {SUB: [[vm(SUB, "idle-nd", "Standard_ND96asr_v4", nic_id)]]},
                      {SUB: [nic(nic_id, "10.9.0.4")]})
    arm_log: list[str] = []

    def logged_arm(method: str, path: str, query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        arm_log.append(path)
        return arm(method, path, query)

    with serve(beside_arm(logged_arm, cost)) as arm_url, serve(metrics, tls.context) as metrics_url:
        base["url"] = cost.base_url = arm_url
        config = replace(fake.config, inventory=True, arm_endpoint=arm_url, allow_http=True, metrics_api=True,
                         metrics_endpoint=metrics_url + "/{region}", cost_api=True)
        result = _live(config)
    assert result.tables is not None
    inv = result.tables.inventory.set_index("resource")
    idle = inv.loc[f"/subscriptions/{SUB}/resourcegroups/rg/providers/microsoft.compute/virtualmachines/idle-nd"]
    assert (idle["gpus"], idle["private_ips"]) == (8, "10.9.0.4")
    assert len(inv) == len(sim.reference.tables.inventory) + 1
    used = {DATA_CALLS["ContainerClient.list_blobs"] if q.get("comp") == "list" else
            DATA_CALLS["ContainerClient.download_blob"] for _, _, q in fake.store.log}
    used |= {CALLS["virtual_machines.list_all"] if p.endswith("virtualMachines") else
             CALLS["network_interfaces.list_all"] for p in arm_log}
    assert [(region, len(ids)) for region, _, ids, _ in metrics.calls] == [("eastus", 1)]
    used.add(CALLS["MetricsClient.query_resources"])  # the metrics fake serves metrics:getBatch only
    assert [sub for sub, _, _ in cost.calls] == [SUB]
    used.add(CALLS["query.usage"])  # and the cost fake the query API only
    body = role()
    assert sorted(used) == sorted([*body["Actions"], *body["DataActions"]])


def test_config_from_toml_tables() -> None:
    cfg = AzureConfig.from_dict({"subscriptions": [SUB.upper()], "logs": ["https://acmelogs.blob.core.windows.net/"],
                                 "cost": ["https://acmecost.blob.core.windows.net/exports/daily/acme-actual"]})
    assert cfg.subscriptions == (SUB,)
    assert cfg.logs[0] == BlobLocation("https://acmelogs.blob.core.windows.net", "acmelogs")
    assert cfg.cost[0] == BlobLocation("https://acmecost.blob.core.windows.net", "acmecost", "exports",
                                       "daily/acme-actual/")
    assert BlobLocation.parse("https://127.0.0.1:10000/devlogs/c/p").account_url == "https://127.0.0.1:10000/devlogs"
    with pytest.raises(ConfigError, match=r"\[azure\] subscriptions: is required"):
        AzureConfig.from_dict({"logs": ["https://acmelogs.blob.core.windows.net/"]})
    with pytest.raises(ConfigError, match=r"\[azure\] cost: .* names no container"):
        AzureConfig.from_dict({"subscriptions": [SUB], "cost": ["https://acmecost.blob.core.windows.net/"]})
    with pytest.raises(ConfigError, match=r"\[azure\] logs: 'bad_name' is not a storage account"):
        AzureConfig.from_dict({"subscriptions": [SUB], "logs": ["https://Bad_Name.blob.core.windows.net/"]})


def test_plan_by_time_skips_what_is_older_than_the_look_back() -> None:
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2026, 11, 20, tzinfo=UTC)
    old = Listed("p/a", 1, "e1", t0 - timedelta(days=5))
    new = Listed("p/b", 1, "e2", t0)
    first = plan_by_time([old, new], "p/", Watermark("azure", "s", "", "activity", "x", ""))
    mark = first.advanced(set(), lookback_days=2)
    assert mark.position == (t0 - timedelta(days=2)).isoformat() and mark.seen == frozenset({"e2:b"})
    assert not plan_by_time([old, new], "p/", mark).new
    appended = Listed("p/b", 2, "e3", t0 + timedelta(minutes=5))
    assert plan_by_time([old, appended], "p/", mark).new == [appended]
    failed = plan_by_time([old, appended], "p/", mark).advanced({"p/b"}, 2)
    assert failed.position == mark.position and failed.seen == frozenset()  # read again next run


def test_scan_config_file_with_an_azure_table(sim: Sim, fake: Blobs, tmp_path: Path) -> None:
    from spendwatch.aws_cli import run_config_scan

    conf = tmp_path / "spendwatch.toml"
    conf.write_text(f'''[azure]
subscriptions = ["{SUB}"]
logs = ["{fake.url}/{ACCOUNT}/"]
cost = ["{fake.url}/{COST}/exports/daily/"]
inventory = false
ca_bundle = "{fake.config.ca_bundle}"
backoff_s = 0.01
''')
    with Store(tmp_path / "s.db") as state:
        result = run_config_scan(str(conf), store=state, strict=False, credentials={"azure": _Token()})
        assert _verdicts(result) == _verdicts(sim.reference) and not result.report.gaps
        assert Watermarks(state).load("azure")
    conf.write_text(f'[azure]\nsubscriptions = ["{SUB}"]\nlogs = ["ftp://acmelogs/"]\n')
    with pytest.raises(ConfigError, match=r"spendwatch.toml: \[azure\] logs: not a blob endpoint URL"):
        run_config_scan(str(conf), store=None, strict=False)
