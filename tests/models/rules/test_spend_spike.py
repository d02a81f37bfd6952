"""spend-spike: hourly spend far above its own baseline names the resources that drove it."""

from __future__ import annotations

import pandas as pd

from spendwatch.models.rules import SpendSpikeRule


def test_new_gpu_instances_drive_an_account_spike(build):
    base = pd.concat([build.spend("i-web", 0.4, 24, "m5.xlarge")], ignore_index=True)
    spike = []
    for k in range(4):  # four g5.2xlarge appear at hour 18 (regions without flow logs: only the bill sees them)
        part = build.spend(f"i-g{k}", 1.21, 6, "g5.2xlarge")
        part["hour"] = part["hour"] + pd.Timedelta(hours=18)
        spike.append(part)
    hits = SpendSpikeRule().run(build.tables(spend=pd.concat([base, *spike], ignore_index=True)))
    assert sorted(h.resource for h in hits) == ["i-g0", "i-g1", "i-g2", "i-g3"]
    assert all(h.family == "spend" and h.belief == 0.3 for h in hits)
    assert "first billed in the spike" in hits[0].evidence


def test_steady_spend_small_increases_and_short_history_do_not_fire(build):
    steady = build.spend("i-web", 0.4, 48, "m5.xlarge")
    small = build.spend("i-small", 0.5, 6, "m5.large")  # doubles the account, but only by $0.5/h
    small["hour"] = small["hour"] + pd.Timedelta(hours=30)
    assert SpendSpikeRule().run(build.tables(spend=pd.concat([steady, small], ignore_index=True))) == []
    young = build.spend("i-g", 5.0, 3)  # three hours of history: no baseline, no verdict
    assert SpendSpikeRule().run(build.tables(spend=young)) == []
