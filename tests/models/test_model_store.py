"""The organisation's baseline model: range novelty, the baseline policy, the stored model that detect() uses."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spendwatch.findings import Finding, Severity
from spendwatch.models import detect
from spendwatch.models.features import WINDOW_FEATURES, Features, resource_windows
from spendwatch.models.forest import ResourceHourForest
from spendwatch.models.iforest import FEATURE_UNITS, IForestConfig, anomaly_hits, telemetry_time
from spendwatch.models.model_store import (
    MODEL_FILE,
    StoredModel,
    baseline_model,
    excluded_resources,
    is_fresh,
    load_model,
    save_model,
    to_matrix,
)
from spendwatch.store import Store


def test_novelty_counts_units_beyond_the_baseline_range() -> None:
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.uniform(0, 10, 2000), np.zeros(2000)])  # the second feature never moved
    model = ResourceHourForest(random_state=0, novelty_units=(1.0, 0.1), novelty_floor=2.0).fit(X)
    nov = model.novelty(np.array([[5.0, 0.0], [13.0, 0.0], [5.0, 0.35], [-2.0, 0.2]]))
    assert nov[0] == 0.0
    assert nov[1] == pytest.approx(13.0 - X[:, 0].max())
    assert nov[2] == pytest.approx(3.5)  # a feature constant in the baseline: isolation trees cannot split on it
    assert nov[3] == pytest.approx((X[:, 0].min() + 2.0) + 2.0)
    assert model.novelty_threshold_ >= 2.0
    alert = model.alert_score(np.array([[5.0, 0.0], [5.0, 1.0]]))
    assert alert[0] < 0.5 <= alert[1] and alert.max() <= 1.0
    with pytest.raises(ValueError, match="novelty_units"):
        ResourceHourForest(novelty_units=(1.0,)).fit(X)


def test_the_held_out_novelty_threshold_spends_the_budget() -> None:
    rng = np.random.default_rng(1)
    X = rng.lognormal(0, 1, (4000, 3))
    tight = ResourceHourForest(random_state=0, novelty_floor=1e-6, alert_budget=1.0).fit(X)
    loose = ResourceHourForest(random_state=0, novelty_floor=1e-6, alert_budget=500.0).fit(X)
    assert tight.novelty_threshold_ > loose.novelty_threshold_ > 0  # a larger budget allows more novelty through
    fresh = rng.lognormal(0, 1, (40_000, 3))
    share = (tight.novelty(fresh) >= tight.novelty_threshold_).mean()
    assert share < 0.01  # new ordinary rows rarely pass it


# ---- on a simulated organisation: two days of history, then a day with an unknown-signature incident -----------

@pytest.fixture(scope="module")
def org(tmp_path_factory):
    from spendwatch.connectors.files import read_directory
    from spendwatch.report import RunReport
    from spendwatch.simulate.scenarios import run_scenario

    truth = run_scenario("proxyjacking-tunnel", tmp_path_factory.mktemp("org") / "data")
    tables = read_directory(truth.root, RunReport())
    rows = resource_windows(Features(tables), "1h")
    return truth, tables, rows


def test_baseline_policy_ends_a_day_before_and_leaves_out_what_it_is_told(org) -> None:
    truth, _, rows = org
    cfg = IForestConfig()
    model = baseline_model(rows, now=truth.end, config=cfg)
    assert model is not None and model.features == WINDOW_FEATURES
    assert model.window_end == truth.end - timedelta(hours=24) and model.trained_at == truth.end
    assert model.window_start == model.window_end - timedelta(days=14)
    host = truth.incidents[0].resources[0]
    times = rows["window"]
    in_window = rows[(times > pd.Timestamp(model.window_start)) & (times <= pd.Timestamp(model.window_end))]
    assert model.rows == len(in_window)
    without = baseline_model(rows, now=truth.end, config=cfg, exclude={("aws", truth.incidents[0].account, host)})
    assert without is not None and without.excluded == 1
    assert without.rows == model.rows - (in_window["resource"] == host).sum()
    assert list(without.estimator.units_) == [FEATURE_UNITS[n] for n in WINDOW_FEATURES]
    # not enough history before the holdout: no baseline
    assert baseline_model(rows, now=truth.start + timedelta(hours=25), config=cfg) is None


def test_the_model_finds_the_incident_only_against_the_baseline(org) -> None:
    truth, tables, rows = org
    host = truth.incidents[0].resources[0]
    model = baseline_model(rows, now=truth.end)
    hits = anomaly_hits(Features(tables), model=model, now=truth.end)
    assert [h.resource for h in hits if h.belief >= 0.45] == [host]
    top = next(h for h in hits if h.resource == host)
    assert top.facts["hours"] >= 3 and top.facts["alert_score"] >= IForestConfig().full_alert_score
    assert "unlike this account's baseline" in top.evidence and "above anything in this account's baseline" \
        in top.evidence
    # the scan's own rows as the "baseline" (one day of data): weak hits at most, whatever they are
    last_day = tables.flows["start"] >= pd.Timestamp(truth.end - timedelta(days=1))
    day = dataclasses.replace(tables, flows=tables.flows[last_day])
    assert all(h.belief <= 0.25 for h in anomaly_hits(Features(day), now=truth.end,
                                                        config=IForestConfig(min_baseline_rows=10**9)))


def test_stored_model_is_trained_when_absent_then_loaded_then_retrained_when_stale(org, tmp_path: Path) -> None:
    truth, _, rows = org
    source = StoredModel(tmp_path / MODEL_FILE)
    first = source.resolve(rows, now=truth.end)
    assert source.last == "trained" and first is not None and (tmp_path / MODEL_FILE).exists()
    again = StoredModel(tmp_path / MODEL_FILE)
    loaded = again.resolve(rows, now=truth.end + timedelta(hours=3))
    assert again.last == "loaded" and loaded is not None and loaded.trained_at == first.trained_at
    X = to_matrix(rows.head(500), WINDOW_FEATURES)
    assert np.array_equal(loaded.estimator.alert_score(X), first.estimator.alert_score(X))
    assert np.array_equal(loaded.estimator.novelty(X), first.estimator.novelty(X))
    later = StoredModel(tmp_path / MODEL_FILE)
    renewed = later.resolve(rows, now=truth.end + timedelta(hours=25))
    assert later.last == "trained" and renewed is not None and renewed.trained_at == truth.end + timedelta(hours=25)
    # too little history to retrain (an incremental scan's rows): the stale model is kept, not dropped
    kept = StoredModel(tmp_path / MODEL_FILE).resolve(rows.head(0), now=truth.end + timedelta(days=3))
    assert kept is not None and kept.trained_at == renewed.trained_at


def test_freshness_is_judged_by_scan_time_and_feature_list(org) -> None:
    truth, _, rows = org
    model = baseline_model(rows, now=truth.end)
    assert model is not None
    assert is_fresh(model, truth.end) and is_fresh(model, truth.end + timedelta(hours=24))
    assert not is_fresh(model, truth.end + timedelta(hours=25))
    assert is_fresh(model, truth.end - timedelta(minutes=59))  # the newest record moves a little between scans
    assert not is_fresh(model, truth.end - timedelta(hours=2))  # trained for a later scan: it has seen the future
    assert not is_fresh(dataclasses.replace(model, features=model.features[:-1]), truth.end)
    assert not is_fresh(dataclasses.replace(model, trained_at=None), truth.end)


def test_detect_scores_with_the_stored_model(org, tmp_path: Path) -> None:
    """A model trained on a different baseline, stored and fresh, is what detect() scores with."""
    truth, tables, rows = org
    host = truth.incidents[0].resources[0]
    path = tmp_path / MODEL_FILE
    newest = telemetry_time(tables)  # what detect() judges the baseline by
    own = baseline_model(rows, now=newest)
    # another baseline: the same organisation with a far wider tolerance for range novelty
    other = baseline_model(rows, now=newest, config=IForestConfig(novelty_floor=400.0))
    assert own is not None and other is not None

    def iforest_hit(model_on_disk) -> object:
        save_model(model_on_disk, path)
        source = StoredModel(path)
        found = detect(tables, now=truth.end, model=source)
        assert source.last == "loaded"
        return next((f for f in found if f.resource == host), None)

    with_own = iforest_hit(own)
    assert with_own is not None and "iforest" in with_own.rules and with_own.severity >= Severity.MEDIUM
    with_other = iforest_hit(other)
    assert with_other is None or "iforest" not in with_other.rules or with_other.score < with_own.score
    hot = rows[(rows["resource"] == host) & (rows["window"] > pd.Timestamp(own.window_end))]
    scores = load_model(path).estimator.alert_score(to_matrix(hot, WINDOW_FEATURES))
    assert scores.max() < own.estimator.alert_score(to_matrix(hot, WINDOW_FEATURES)).max()


def test_a_scan_with_a_file_store_keeps_the_model_beside_it(org, tmp_path: Path) -> None:
    from spendwatch.pipeline import scan_directory

    truth, tables, _ = org
    with Store(tmp_path / "state.db") as store:
        scan_directory(truth.root, store=store, now=truth.end)
    saved = load_model(tmp_path / MODEL_FILE)
    # judged by the newest data (a scan of exports at a later wall time scores their last day, not nothing)
    assert saved.trained_at == telemetry_time(tables) and saved.features == WINDOW_FEATURES
    stamp = (tmp_path / MODEL_FILE).read_bytes()
    with Store(tmp_path / "state.db") as store:
        second = scan_directory(truth.root, store=store, now=truth.end + timedelta(hours=1))
    assert (tmp_path / MODEL_FILE).read_bytes() == stamp  # fresh: loaded, not retrained
    host = truth.incidents[0].resources[0]
    assert any(f.resource == host and "iforest" in f.rules and f.severity >= Severity.MEDIUM for f in second.findings)


def _finding(resource: str | None, severity: Severity, *, related: tuple[str, ...] = (),
             principal: str | None = None) -> Finding:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    return Finding(id=f"sw-{resource}-{principal}", cloud="aws", account="1", region=None, resource=resource,
                   principal=principal, severity=severity, score=0.5, rules=["x"], evidence=[], first_seen=t,
                   last_seen=t, detected_at=t, hourly_cost_usd=None, summary="", related=list(related))


def test_excluded_resources_are_incidents_and_expected_not_weak_signs(tmp_path: Path) -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    with Store(tmp_path / "s.db") as store:
        store.upsert([_finding("i-incident", Severity.HIGH), _finding("i-weak", Severity.LOW),
                      _finding("i-expected", Severity.LOW),
                      _finding(None, Severity.MEDIUM, related=("i-a", "i-b"), principal="arn:p")], now=t)
        assert store.set_finding_status("sw-i-expected-None", "expected", now=t)
        assert excluded_resources(store) == {("aws", "1", "i-incident"), ("aws", "1", "i-expected"),
                                             ("aws", "1", "i-a"), ("aws", "1", "i-b")}
        assert StoredModel.beside(store) == StoredModel(tmp_path / MODEL_FILE, frozenset(excluded_resources(store)))
    with Store(":memory:") as memory:
        assert StoredModel.beside(memory) is None


def test_the_baseline_is_judged_by_telemetry_not_by_a_launch_of_this_minute(build) -> None:
    util = build.util("i-a", [50.0] * 90, metric="cpu_util")
    inv = build.inventory([{"resource": "i-new", "launched_at": build.at(60 * 24 * 4)}])
    tables = build.tables(utilization=util, inventory=inv)
    assert telemetry_time(tables) == build.at(89)
    assert telemetry_time(build.tables(inventory=inv)) is None
