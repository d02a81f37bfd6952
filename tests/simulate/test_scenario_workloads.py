"""Issue 4's simulated workloads, read back through the files connector: tunnels, varying caps, nightly backups."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from spendwatch.connectors.files import read_directory
from spendwatch.models.features import Features
from spendwatch.report import RunReport
from spendwatch.simulate.scenarios import SCENARIOS, TUNNEL_VPS, run_scenario


def _read(name: str, root):
    truth = run_scenario(name, root / "data")
    return truth, read_directory(truth.root, RunReport())


@pytest.fixture(scope="module")
def proxyjack(tmp_path_factory):
    return _read("proxyjacking-tunnel", tmp_path_factory.mktemp("px"))


def test_scenarios_have_history_before_the_scanned_day(proxyjack) -> None:
    truth, _ = proxyjack
    sc = SCENARIOS["proxyjacking-tunnel"]
    assert truth.end - truth.start == timedelta(days=sc.days + sc.history_days)
    scan_start = truth.end - timedelta(days=sc.days)
    assert all(i.started >= scan_start for i in truth.incidents)


def test_the_tunnel_is_one_long_lived_bulk_connection_in_every_window(proxyjack) -> None:
    truth, tables = proxyjack
    host = truth.incidents[0].resources[0]
    fl = Features(tables).flows
    tunnel = fl[(fl["resource"] == host) & (fl["remote"] == TUNNEL_VPS)]
    start = pd.Timestamp(truth.incidents[0].started)
    assert len(tunnel) and (tunnel["start"] >= start).all()
    windows = tunnel["start"].dt.floor("10min").unique()
    expected = pd.date_range(start.ceil("10min"), pd.Timestamp(truth.end) - pd.Timedelta(minutes=10), freq="10min")
    assert set(expected) <= set(windows)  # present in every interval (re-opened every few hours)
    assert ((tunnel["end"] - tunnel["start"]).dt.total_seconds() >= 500).mean() > 0.9
    per_packet = tunnel["bytes"].sum() / tunnel["packets"].sum()
    assert 900 < per_packet < 1400  # bulk, not a Stratum trickle of ~125-byte packets
    assert (tunnel["remote_port"] == 443).all()
    answers = tables.dns["answers"].dropna()
    assert not answers.str.contains(TUNNEL_VPS, regex=False).any()  # reached by address: no lookup names it


def test_the_miner_cap_varies_below_the_ceiling(proxyjack) -> None:
    truth, tables = proxyjack
    host = truth.incidents[0].resources[0]
    cpu = Features(tables).utilization("cpu_util")
    after = cpu[(cpu["resource"] == host) & (cpu["time"] >= pd.Timestamp(truth.incidents[0].started))]
    hourly = after.set_index("time")["value"].resample("1h").mean().dropna()
    assert after["value"].between(68, 92).all() and after["value"].max() < 95
    assert hourly.max() - hourly.min() > 4  # not one flat plateau


def test_nightly_backup_runs_every_night_of_the_history(tmp_path) -> None:
    truth, tables = _read("nightly-backup-s3", tmp_path)
    db = truth.negatives[0].resources[0]
    fl = Features(tables).flows
    out = fl[(fl["resource"] == db) & ~fl["inbound"]]
    by_night = out.groupby(out["start"].dt.floor("D"))["bytes"].sum()
    heavy = by_night[by_night > 20e9]
    assert len(heavy) >= 3  # two nights of history and the scanned one
    assert np.all(out.loc[out["bytes"] > 1e8, "remote_port"] == 443)
