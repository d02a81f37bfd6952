"""flat-utilization: throttled miners hold one mid level flat for hours; web load drifts; training dips."""

from __future__ import annotations

import numpy as np

from spendwatch.models.rules import FlatUtilizationRule


def test_throttled_gpu_at_55_percent_fires(build):
    rng = np.random.default_rng(1)
    util = build.util("i-t", 55 + rng.uniform(-0.3, 0.3, 12 * 60), step_min=1)
    hits = FlatUtilizationRule().run(build.tables(utilization=util))
    assert [h.resource for h in hits] == ["i-t"]
    assert hits[0].family == "saturation" and hits[0].belief == 0.25
    assert 54 < hits[0].facts["level_pct"] < 56 and hits[0].facts["hours"] >= 8


def test_drifting_web_load_short_plateaus_and_pegged_series_do_not_fire(build):
    rng = np.random.default_rng(2)
    t = np.arange(24 * 60)
    web = 34 + 14 * np.cos(2 * np.pi * t / 1440) + rng.normal(0, 2.5, len(t))  # diurnal web host
    short = np.r_[np.full(5 * 60, 50.0), np.full(7 * 60, 10.0)]  # flat but only five hours
    pegged = np.full(12 * 60, 99.5)  # the saturation rules' business
    util = build.util("i-web", web, metric="cpu_util")
    import pandas as pd

    util = pd.concat([util, build.util("i-short", short), build.util("i-peg", pegged)], ignore_index=True)
    assert FlatUtilizationRule().run(build.tables(utilization=util)) == []
