"""The span of history a baseline was trained on: recorded, stored, and required before a model-only medium.

A baseline of a few hours ("the first model of a replay") knows too little of the organisation for "unlike this
organisation" to page on its own: below `IForestConfig.min_baseline_hours` its hits stay weak.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spendwatch.findings import Severity
from spendwatch.models import detect
from spendwatch.models.config import DetectionConfig
from spendwatch.models.features import Features, resource_windows
from spendwatch.models.iforest import IForestConfig, anomaly_hits
from spendwatch.models.model_store import (
    ModelFileError,
    _document,
    _metadata,
    baseline_model,
    baseline_span,
    load_model,
    model_bytes,
    model_from_bytes,
    save_model,
    train_baseline,
)

SHORT = IForestConfig(baseline_days=6 / 24, min_baseline_rows=10)  # a baseline of the 6 hours before the holdout


@pytest.fixture(scope="module")
def org(tmp_path_factory):
    """An unknown-signature incident the rules miss (a TLS proxy tunnel) after two days of history."""
    from spendwatch.connectors.files import read_directory
    from spendwatch.report import RunReport
    from spendwatch.simulate.scenarios import run_scenario

    truth = run_scenario("proxyjacking-tunnel", tmp_path_factory.mktemp("span") / "data")
    tables = read_directory(truth.root, RunReport())
    return truth, tables, resource_windows(Features(tables), "1h")


def _severities(findings) -> dict[str, Severity]:
    return {f.resource: f.severity for f in findings if f.resource}


def test_a_baseline_of_hours_gives_weak_hits_where_one_of_days_gives_medium(org) -> None:
    truth, tables, rows = org
    host = truth.incidents[0].resources[0]
    days = baseline_model(rows, now=truth.end)
    hours = baseline_model(rows, now=truth.end, config=SHORT)
    assert days is not None and hours is not None
    # two days before the holdout: 48 hours, and the hour starting at the window's end (windows are (start, end])
    assert days.history_hours == 49.0 and baseline_span(days) == (49.0, False)
    assert hours.history_hours == 6.0

    assert _severities(detect(tables, now=truth.end, model=days)) == {host: Severity.MEDIUM}
    # The six-hour baseline would page on the incident and on two ordinary hosts it has not seen enough of ...
    uncapped = DetectionConfig().with_overrides({"iforest": {"min_baseline_hours": 0}})
    loud = _severities(detect(tables, now=truth.end, model=hours, config=uncapped))
    assert loud[host] == Severity.MEDIUM and sum(s >= Severity.MEDIUM for s in loud.values()) == 3
    # ... and by default says only "unusual", for the same three, with the reason in the evidence
    quiet = _severities(detect(tables, now=truth.end, model=hours))
    assert set(quiet) == {r for r, s in loud.items() if s >= Severity.MEDIUM}
    assert all(s < Severity.MEDIUM for s in quiet.values())
    hits = anomaly_hits(Features(tables), model=hours, now=truth.end)
    cfg = IForestConfig()
    assert hits and all(h.belief <= cfg.belief_max for h in hits)
    top = next(h for h in hits if h.resource == host)
    assert top.belief == pytest.approx(cfg.belief_max)  # full strength on the weak scale: the order is kept
    assert top.facts["baseline_hours"] == 6.0 and top.facts["baseline_hours_estimated"] is False
    assert top.evidence.endswith("The baseline covers only 6 h of history; needs 24 h before it can raise medium "
                                 "on its own")
    long_hits = anomaly_hits(Features(tables), model=days, now=truth.end)
    assert all("needs 24 h" not in h.evidence for h in long_hits)
    assert next(h for h in long_hits if h.resource == host).facts["baseline_hours"] == 49.0


def test_the_threshold_is_a_setting(org) -> None:
    truth, tables, rows = org
    host = truth.incidents[0].resources[0]
    days = baseline_model(rows, now=truth.end)
    assert days is not None
    stricter = IForestConfig(min_baseline_hours=72)
    hits = anomaly_hits(Features(tables), stricter, model=days, now=truth.end)
    assert all(h.belief <= stricter.belief_max for h in hits)
    assert "covers only 49 h of history; needs 72 h" in next(h for h in hits if h.resource == host).evidence


def test_the_span_counts_hours_with_data_not_the_window(tmp_path: Path) -> None:
    """Three hours at each end of a week's window are six hours of history: what the baseline has seen."""
    start = pd.Timestamp("2026-03-01", tz="UTC")
    hours = [*pd.date_range(start, periods=3, freq="h"), *pd.date_range(start + pd.Timedelta(hours=165), periods=3,
                                                                         freq="h")]
    rng = np.random.default_rng(0)
    rows = pd.DataFrame([{"cloud": "aws", "account": "012345678901", "resource": f"i-{r:02d}", "hour": h,
                          "cpu_mean": rng.uniform(10, 60), "cpu_std": rng.uniform(2, 15)}
                         for r in range(40) for h in hours])
    trained = train_baseline(rows, days=7, features=("cpu_mean", "cpu_std"), random_state=0)
    assert (trained.window_end - trained.window_start).days == 7 and trained.history_hours == 6.0
    assert load_model(save_model(trained, tmp_path / "m.skops")).history_hours == 6.0


def _as_saved_before_the_span(trained, path: Path) -> Path:
    """Write `trained` exactly as spendwatch did before the span was recorded: the same document, no span."""
    import skops.io as sio

    doc = _document(trained)
    del doc["history_hours"]
    sio.dump(doc, path)
    return path


def test_a_model_saved_before_the_span_loads_with_a_lower_bound(org, tmp_path: Path) -> None:
    """Rows per resource is never more than the hours the rows cover: a long baseline still reads as long (and is
    used as before), a short one as short (weak hits, saying the span was not recorded)."""
    truth, tables, rows = org
    host = truth.incidents[0].resources[0]
    days = baseline_model(rows, now=truth.end)
    hours = baseline_model(rows, now=truth.end, config=SHORT)
    assert days is not None and hours is not None

    old_days = load_model(_as_saved_before_the_span(days, tmp_path / "days.skops"))
    assert old_days.history_hours is None and "history_hours" not in old_days.meta
    span, estimated = baseline_span(old_days)
    assert estimated and 24 <= span <= days.history_hours and span == pytest.approx(days.rows / days.resources)
    assert _severities(detect(tables, now=truth.end, model=old_days)) == {host: Severity.MEDIUM}

    old_hours = load_model(_as_saved_before_the_span(hours, tmp_path / "hours.skops"))
    assert baseline_span(old_hours) == (pytest.approx(hours.rows / hours.resources), True)
    hits = anomaly_hits(Features(tables), model=old_hours, now=truth.end)
    assert hits and all(h.belief <= IForestConfig().belief_max for h in hits)
    top = next(h for h in hits if h.resource == host)
    assert top.facts["baseline_hours_estimated"] is True
    assert "span was not recorded (saved by an older version) and its rows show at least 6 h" in top.evidence
    assert all(f.severity < Severity.MEDIUM for f in detect(tables, now=truth.end, model=old_hours))


def test_the_span_is_kept_in_the_state_table_bytes_and_metadata(org) -> None:
    truth, _, rows = org
    hours = baseline_model(rows, now=truth.end, config=SHORT)
    assert hours is not None
    assert model_from_bytes(model_bytes(hours), source="test").history_hours == 6.0
    assert _metadata(_document(hours))["history_hours"] == 6.0  # what a person reading the models table sees


@pytest.mark.parametrize("damaged", [-3.0, "six", True])
def test_a_damaged_span_is_refused(org, tmp_path: Path, damaged: object) -> None:
    import skops.io as sio

    truth, _, rows = org
    hours = baseline_model(rows, now=truth.end, config=SHORT)
    assert hours is not None
    doc = {**_document(hours), "history_hours": damaged}
    sio.dump(doc, tmp_path / "bad.skops")
    with pytest.raises(ModelFileError, match=r"bad.skops: spendwatch model is damaged \(history_hours is"):
        load_model(tmp_path / "bad.skops")


@pytest.mark.parametrize("value", [-1, "24h", float("nan"), float("inf"), None, True])
def test_the_setting_is_validated_with_an_error_naming_it(value: object) -> None:
    with pytest.raises(ValueError, match=r"^detection config: iforest\.min_baseline_hours: must be a number of hours"):
        DetectionConfig().with_overrides({"iforest": {"min_baseline_hours": value}})
    with pytest.raises(ValueError, match=r"^iforest\.min_baseline_hours"):
        IForestConfig(min_baseline_hours=value)  # type: ignore[arg-type]


def test_the_setting_is_read_from_overrides_with_its_default() -> None:
    assert IForestConfig().min_baseline_hours == 24.0
    assert DetectionConfig().with_overrides({"iforest": {"min_baseline_hours": 48}}).iforest.min_baseline_hours == 48
    assert DetectionConfig().with_overrides({"iforest": {"min_baseline_hours": 0}}).iforest.min_baseline_hours == 0


def test_model_show_prints_the_span(org, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from spendwatch.cli import main
    from spendwatch.model_cli import describe
    from spendwatch.models.model_store import MODEL_FILE
    from spendwatch.store import Store

    truth, _, rows = org
    hours = baseline_model(rows, now=truth.end, config=SHORT)
    assert hours is not None
    assert describe(hours, "x")["history_hours"] == 6.0 and not describe(hours, "x")["history_hours_estimated"]
    with Store(tmp_path / "state.db"):
        pass
    _as_saved_before_the_span(hours, tmp_path / MODEL_FILE)
    assert main(["model", "show", "--state", str(tmp_path / "state.db"), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["history_hours"] == 6.0 and shown["history_hours_estimated"] is True
    assert main(["model", "show", "--state", str(tmp_path / "state.db")]) == 0
    assert "holding at least 6 h of history" in capsys.readouterr().out


def test_a_short_baseline_is_retrained_within_the_hour_a_long_one_within_the_day(org) -> None:
    """While a baseline cannot page on its own, scans retrain it as the history grows instead of keeping it a day."""
    from datetime import timedelta

    from spendwatch.models.model_store import is_fresh

    truth, _, rows = org
    days = baseline_model(rows, now=truth.end)
    hours = baseline_model(rows, now=truth.end, config=SHORT)
    assert days is not None and hours is not None
    later = truth.end + timedelta(hours=2)
    assert is_fresh(days, later) and not is_fresh(hours, later)
    assert is_fresh(hours, truth.end + timedelta(minutes=45))
    assert is_fresh(hours, later, IForestConfig(min_baseline_hours=0))  # the check off: a day, as before
