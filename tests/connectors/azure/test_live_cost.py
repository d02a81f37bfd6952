"""Azure spend from the Cost Management query API through the real azure-mgmt-costmanagement client against a
local fake on 127.0.0.1: the same hourly spend as the cost export of the same days, paging by `$skiptoken`, a
throttled call retried, a denied subscription as a gap, the watermark's revision window, and the live scan
reading the API instead of the exports."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
from azure.core.credentials import AccessToken

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fakes.azure_arm import arm_handler
from fakes.azure_blob import FakeBlobStorage
from fakes.azure_cost import FakeCostManagement, beside_arm
from fakes.raw_http import serve
from fakes.tls import local_tls

from spendwatch.connectors.azure import AzureConfig, BlobLocation
from spendwatch.connectors.azure.costs import REVISE, read_spend, window
from spendwatch.connectors.azure.inventory import AzureOptions
from spendwatch.connectors.azure.live import scan
from spendwatch.connectors.files import read_directory
from spendwatch.report import RunReport
from spendwatch.simulate import DEFAULT_END
from spendwatch.simulate.azure import ACCOUNT, COST, SUB, simulate_azure
from spendwatch.store import Watermark

LOCKED = "22222222-bbbb-4bbb-8bbb-222222222222"


class _Token:
    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken("fake-token", int(time.time()) + 3600)


@dataclass
class World:
    root: Path
    exported: pd.DataFrame  # the files connector's spend from the simulated cost export


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("azure-cost")
    simulate_azure(root, seed=7, days=1.0, instances=12, write_truth=False)
    return World(root, read_directory(root / COST, RunReport()).spend)


@pytest.fixture
def api(world: World) -> Iterator[tuple[FakeCostManagement, AzureOptions]]:
    fake = FakeCostManagement()
    for path in (world.root / COST).rglob("*.csv"):
        fake.add_export(path)
    with serve(fake) as url:
        fake.base_url = url
        yield fake, AzureOptions(_Token(), url, allow_http=True, retry_backoff_factor=0.01)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    cols = ["hour", "account", "resource", "service", "cost_usd"]
    return frame[cols].sort_values(cols[:4]).reset_index(drop=True)


def test_the_api_gives_the_spend_the_export_gives(world: World, api: tuple[FakeCostManagement,
                                                                           AzureOptions]) -> None:
    fake, options = api
    fake.page_rows = 2  # make it page
    fake.throttle = 1  # a 429 first, retried after Retry-After
    report = RunReport()
    got = read_spend([SUB], report, options, marks={}, now=DEFAULT_END, initial_hours=24)
    assert not report.gaps and not report.problems and fake.throttle == 0
    assert len(world.exported) >= 24 * 4
    pd.testing.assert_frame_equal(_sorted(got.spend), _sorted(world.exported), check_exact=False, rtol=1e-6)
    tokens = [token for _, _, token in fake.calls]
    assert tokens[:3] == ["", "", "2"] and got.calls == len(fake.calls) - 1  # the 429's retry is not a call
    _, body, _ = fake.calls[0]
    assert [g["name"] for g in body["dataset"]["grouping"]] == ["ResourceId", "MeterCategory"]  # type: ignore
    assert [(m.account, m.position) for m in got.marks] == [(SUB, DEFAULT_END.date().isoformat())]


def test_a_denied_subscription_is_a_gap_and_the_revision_window(api: tuple[FakeCostManagement,
                                                                           AzureOptions]) -> None:
    fake, options = api
    fake.denied.add(LOCKED)
    mark = Watermark("azure", SUB, "", "billing", "costmanagement:query", "2026-11-19")
    report = RunReport()
    got = read_spend([LOCKED, SUB], report, options, marks={mark.key: mark}, now=DEFAULT_END, initial_hours=24)
    assert [g.source for g in report.gaps] == [f"azure/{LOCKED}/billing"]
    assert "Microsoft.CostManagement/query/read" in report.gaps[0].reason
    assert [m.account for m in got.marks] == [SUB]
    period = fake.calls[-1][1]["timePeriod"]
    assert period["from"].startswith(str(date(2026, 11, 19) - timedelta(days=REVISE)))  # type: ignore[index]
    assert window(mark, DEFAULT_END, 24) == (date(2026, 11, 16), date(2026, 11, 20))


def test_the_live_scan_reads_the_api_not_the_exports(world: World, tmp_path: Path) -> None:
    cost = FakeCostManagement()
    for path in (world.root / COST).rglob("*.csv"):
        cost.add_export(path)
    blobs, tls = FakeBlobStorage(), local_tls(tmp_path / "tls")
    blobs.upload_tree(world.root / ACCOUNT, ACCOUNT)
    blobs.upload_tree(world.root / COST, COST)
    base: dict[str, str] = {}
    with serve(blobs, tls.context) as blob_url, serve(beside_arm(arm_handler(base, {}, {}), cost)) as arm_url:
        base["url"] = cost.base_url = arm_url
        config = AzureConfig(subscriptions=(SUB,), logs=(BlobLocation.parse(f"{blob_url}/{ACCOUNT}"),),
                             cost=(BlobLocation.parse(f"{blob_url}/{COST}/exports/"),), cost_api=True,
                             inventory=False, arm_endpoint=arm_url, allow_http=True, ca_bundle=str(tls.ca_file),
                             backoff_s=0.01, backoff_base=0.01)
        report = RunReport()
        got = scan(config, report, credential=_Token(), now=DEFAULT_END)
    listed = {path.split("/")[1] for _, path, q in blobs.log if q.get("comp") == "list"}
    assert COST not in listed and ACCOUNT in listed
    assert any("cost exports are not read" in n for n in report.notes) and not report.gaps
    assert got.tables.spend["cost_usd"].sum() == pytest.approx(world.exported["cost_usd"].sum())
    assert {(m.scope, m.source) for m in got.marks if m.source == "billing"} == {("costmanagement:query", "billing")}
    assert AzureConfig.from_dict({"subscriptions": [SUB], "cost_api": True}).cost_api
    off = replace(config, cost=(), cost_api=False)
    unconfigured = RunReport()
    scan(replace(off, logs=()), unconfigured, credential=_Token(), now=DEFAULT_END)
    assert any(g.source == "azure/*/billing" and "cost_api = true" in g.reason for g in unconfigured.gaps)
