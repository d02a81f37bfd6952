"""The forest trained on a baseline: calibration to an alert budget, explanations in words, skops persistence."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spendwatch.models.features import RESOURCE_HOUR_FEATURES
from spendwatch.models.forest import ResourceHourForest
from spendwatch.models.iforest import explain_in_words, percentile_words
from spendwatch.models.model_store import ModelFileError, load_model, save_model, to_matrix, train_baseline

NAMES = list(RESOURCE_HOUR_FEATURES)


def fleet(resources: int = 60, hours: int = 24 * 10, seed: int = 0) -> pd.DataFrame:
    """Resource-hours of an ordinary fleet: busy web hosts, a few peers each, no GPU."""
    rng = np.random.default_rng(seed)
    n = resources * hours
    start = pd.Timestamp("2026-03-01", tz="UTC")
    return pd.DataFrame({
        "cloud": "aws", "account": "012345678901",
        "resource": np.repeat([f"i-{i:03d}" for i in range(resources)], hours),
        "hour": np.tile(pd.date_range(start, periods=hours, freq="h"), resources),
        "cpu_mean": rng.uniform(10, 60, n), "cpu_std": rng.uniform(2, 15, n),
        "gpu_mean": 0.0, "gpu_std": 0.0, "flatness": rng.uniform(0.2, 0.8, n),
        "bytes_in": rng.lognormal(15, 1, n), "bytes_out": rng.lognormal(14, 1, n),
        "bytes_per_packet": rng.uniform(300, 1200, n), "peers": rng.integers(5, 60, n).astype(float),
        "top_peer_share": rng.uniform(0.05, 0.4, n), "spend_rate": rng.uniform(0.1, 0.5, n),
    })


def miner_row() -> np.ndarray:
    row = {"cpu_mean": 99.0, "cpu_std": 0.2, "gpu_mean": 0.0, "gpu_std": 0.0, "flatness": 0.99,
           "bytes_in": 2e5, "bytes_out": 2e5, "bytes_per_packet": 120.0, "peers": 1.0, "top_peer_share": 1.0,
           "spend_rate": 0.3}
    return to_matrix(pd.DataFrame([row]))[0]


@pytest.fixture(scope="module")
def trained():
    rows = fleet()
    return train_baseline(rows, days=7, exclude={("aws", "012345678901", "i-000")}, random_state=0,
                          alert_budget=2.0), rows


def test_baseline_window_and_exclusions(trained) -> None:
    model, rows = trained
    assert model.window_end == rows["hour"].max().to_pydatetime()
    assert (model.window_end - model.window_start).days == 7
    assert model.resources == 59 and model.excluded == 1 and model.rows == 59 * 24 * 7
    with pytest.raises(ValueError, match="no baseline rows"):
        train_baseline(rows, end=datetime(2020, 1, 1, tzinfo=UTC))


def test_threshold_spends_the_alert_budget_on_the_baseline(trained) -> None:
    model, rows = trained
    est = model.estimator
    base = rows[rows["hour"] > pd.Timestamp(model.window_start)]
    base = base[base["resource"] != "i-000"]
    X = to_matrix(base)
    # 2 findings per day per 1,000 resources over hourly windows: 2 / 24,000 of resource-hours.
    assert est.alert_rate_ == pytest.approx(2.0 / 24_000)
    share = (est.score_samples(X) >= est.threshold_).mean()
    assert share <= 3 * est.alert_rate_ + 1 / len(X)
    cal = est.calibrated_score(X)
    assert cal.min() >= 0 and cal.max() <= 1
    assert np.array_equal(np.argsort(cal, kind="stable")[-50:], np.argsort(est.score_samples(X), kind="stable")[-50:])
    assert ((cal >= 0.5) == (est.score_samples(X) >= est.threshold_)).all()
    assert est.calibrated_score(miner_row()[None, :])[0] > 0.5
    with pytest.raises(ValueError):
        ResourceHourForest(alert_budget=0).fit(X[:100])


def test_explanation_names_the_odd_features_against_the_baseline(trained) -> None:
    est = trained[0].estimator
    words = explain_in_words(est, miner_row(), NAMES, top=3)
    # beyond the baseline's range, furthest first in each feature's unit (FEATURE_UNITS): CPU 39 points above
    # its maximum is 7.8 units, the top peer's share 0.6 above is 6, one peer against at least five is 2.2
    assert words == ["CPU at 99% on average: above anything in this account",
                     "100% of traffic to the top peer: above anything in this account",
                     "1 distinct external peer(s): below anything in this account"]
    rows = trained[1]
    typical = to_matrix(rows[(rows["resource"] == "i-001") & (rows["hour"] > pd.Timestamp(trained[0].window_start))])[0]
    assert not any("anything" in w for w in explain_in_words(est, typical, NAMES, top=3))  # inside the range
    assert percentile_words(50.0).startswith("typical for this account")
    assert percentile_words(99.3) == "above the 99th percentile of this account"


def test_save_and_load_give_identical_scores_and_keep_the_record(trained, tmp_path: Path) -> None:
    model, rows = trained
    path = save_model(model, tmp_path / "forest.skops")
    loaded = load_model(path)
    X = to_matrix(rows.head(5000))
    assert np.array_equal(loaded.estimator.score_samples(X), model.estimator.score_samples(X))
    assert np.array_equal(loaded.estimator.calibrated_score(X), model.estimator.calibrated_score(X))
    assert loaded.features == tuple(NAMES) and loaded.rows == model.rows
    assert loaded.window_start == model.window_start and loaded.window_end == model.window_end
    assert loaded.meta["format"] == "spendwatch-model" and loaded.meta["spendwatch_version"]
    assert b"pickle" not in path.read_bytes()[:4]  # a zip archive (skops), not a pickle stream


def test_a_saved_model_names_the_forest_where_every_version_finds_it(trained, tmp_path: Path) -> None:
    # The class lives in models/forest.py (scikit-learn is imported only with it), but saved files keep naming
    # it spendwatch.models.iforest.ResourceHourForest, the address models saved before the move carry: files
    # written by this version load in earlier ones, and earlier files load here.
    import skops.io as sio

    import spendwatch.models.iforest as iforest

    path = save_model(trained[0], tmp_path / "forest.skops")
    assert set(sio.get_untrusted_types(file=path)) == {"sklearn.tree._tree.Tree",
                                                        "spendwatch.models.iforest.ResourceHourForest"}
    assert iforest.ResourceHourForest is ResourceHourForest
    with pytest.raises(AttributeError, match="no attribute 'Forest'"):
        _ = iforest.Forest


def test_loading_refuses_files_that_are_not_spendwatch_models(tmp_path: Path) -> None:
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    other = tmp_path / "other.skops"
    sio.dump(LogisticRegression().fit(np.random.default_rng(0).normal(size=(20, 2)), [0, 1] * 10), other)
    with pytest.raises(ModelFileError, match="not a spendwatch model"):
        load_model(other)
    garbage = tmp_path / "garbage.skops"
    garbage.write_bytes(b"\x00not a model at all" * 50)
    with pytest.raises(ModelFileError, match="not a spendwatch model"):
        load_model(garbage)
    forged = tmp_path / "forged.skops"
    sio.dump({"format": "spendwatch-model", "format_version": 1, "estimator": LogisticRegression()}, forged)
    with pytest.raises(ModelFileError):
        load_model(forged)
    with pytest.raises(ModelFileError):
        load_model(tmp_path / "missing.skops")


# ---- hits against the baseline: how far beyond it, for how long --------------------------------------------------
def scored_rows(model, resource: str, kinds: list[str]) -> pd.DataFrame:
    """Hours after the baseline window for `resource`, one per entry of `kinds`: "extreme" (CPU std 30 units past
    anything in the baseline, a bill 2.5 units past it) or "marginal" (an ordinary hour but for the bill)."""
    start = pd.Timestamp(model.window_end) + pd.Timedelta(hours=1)
    typical = {"cpu_mean": 35.0, "cpu_std": 8.0, "gpu_mean": 0.0, "gpu_std": 0.0, "flatness": 0.5,
               "bytes_in": 3e6, "bytes_out": 1e6, "bytes_per_packet": 700.0, "peers": 20.0, "top_peer_share": 0.2}
    spend = float(np.expm1(np.log1p(0.5) + 1.25))  # 2.5 units of 0.5 (log1p dollars) past the baseline's highest
    rows = [{**typical, "cloud": "aws", "account": "012345678901", "resource": resource,
             "window": start + pd.Timedelta(hours=i), "spend_rate": spend,
             **({"cpu_std": 75.0} if kind == "extreme" else {})} for i, kind in enumerate(kinds)]
    return pd.DataFrame(rows)


def test_one_extreme_hour_among_marginal_ones_stays_below_full_strength(trained) -> None:
    """Full strength (medium alone) takes full_windows hours far beyond the threshold. A legitimate training job
    paged in the demo replay that way: 25 hours just past the threshold (its bill, new to the baseline) and one
    12-minute window far past it used to give the peak's level times the 25 hours' persistence."""
    from spendwatch.models.iforest import IForestConfig, baseline_hits

    model = trained[0]
    cfg = IForestConfig()
    odd = scored_rows(model, "i-odd", ["extreme"] + ["marginal"] * 8)
    steady = scored_rows(model, "i-steady", ["extreme"] * 3)
    alert = model.estimator.alert_score(to_matrix(odd, model.features))
    assert alert[0] >= cfg.full_alert_score and (alert[1:] >= 0.5).all()  # one far beyond, the rest just past
    assert (alert[1:] < 0.5 + (cfg.full_alert_score - 0.5) / 3).all()
    hits = {h.resource: h for h in baseline_hits(pd.concat([odd, steady], ignore_index=True), model, cfg)}
    assert hits["i-steady"].belief == pytest.approx(cfg.baseline_belief_max)
    one_third = cfg.belief_min + (cfg.baseline_belief_max - cfg.belief_min) / 3
    assert hits["i-odd"].facts["hours"] == 9 and hits["i-odd"].belief == pytest.approx(one_third, abs=1e-4)
    assert hits["i-odd"].facts["alert_score"] == pytest.approx(alert.max(), abs=1e-4)
    assert hits["i-odd"].facts["held_score"] == pytest.approx(np.sort(alert)[-3], abs=1e-4)


def test_the_hour_a_scan_ends_in_is_scored_once_mostly_seen(trained) -> None:
    """Two extreme hours and a third still being filled: 12 minutes of it are not scored against whole hours of
    the baseline (two hours' strength), three quarters of it are (full strength)."""
    from spendwatch.models.iforest import IForestConfig, baseline_hits, open_windows

    model = trained[0]
    cfg = IForestConfig()
    rows = scored_rows(model, "i-new", ["extreme"] * 3)
    third = rows["window"].iloc[-1]
    early = baseline_hits(rows, model, cfg, now=(third + pd.Timedelta(minutes=12)).to_pydatetime())
    later = baseline_hits(rows, model, cfg, now=(third + pd.Timedelta(minutes=45)).to_pydatetime())
    assert early[0].facts["hours"] == 2 and early[0].belief < cfg.baseline_belief_max
    assert early[0].end == third.to_pydatetime()
    assert later[0].facts["hours"] == 3 and later[0].belief == pytest.approx(cfg.baseline_belief_max)
    windows = pd.Series(pd.to_datetime(["2026-03-02T10:00Z", "2026-03-02T11:00Z", "2026-03-02T12:00Z"]))
    now = datetime(2026, 3, 2, 12, 20, tzinfo=UTC)
    assert open_windows(windows, now, 0.5).tolist() == [False, False, True]
    assert open_windows(windows, now, 0.3).tolist() == [False, False, False]
