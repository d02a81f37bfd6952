"""`spendwatch replay`: delivery lags honoured, ticks on the clock, injected incidents found within a tick + lag."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from spendwatch.cli import main
from spendwatch.connectors.files import read_directory
from spendwatch.findings import Severity
from spendwatch.models import detect
from spendwatch.models.model_store import StoredModel
from spendwatch.replay import LAGS, DeliveredTables, replay, ticks
from spendwatch.replay_cli import parse_every
from spendwatch.report import RunReport
from spendwatch.simulate import simulate
from spendwatch.simulate.scenarios import run_scenario

EVERY = timedelta(minutes=15)


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory):
    """The classic scenario (an agent's GPU miners, a web host's CPU miner): one simulated day, read once."""
    truth = run_scenario("classic-miners", tmp_path_factory.mktemp("replay") / "data")
    return truth, read_directory(truth.root, RunReport())


@pytest.fixture(scope="module")
def result(org):
    """Replay at 15 min around the incidents only (each scan is a full detect(), about a second)."""
    truth, tables = org
    start = min(i.started for i in truth.incidents) - timedelta(minutes=30)
    return replay(tables, every=EVERY, start=start, end=max(i.started for i in truth.incidents) + timedelta(hours=1),
                  landing=False)


def test_tables_at_a_tick_hold_only_what_was_delivered(org) -> None:
    _, tables = org
    delivered = DeliveredTables(tables)
    t = pd.Timestamp(tables.flows["end"].median()).to_pydatetime()
    seen = delivered.at(t)
    for name, (column, lag, _) in LAGS.items():
        frame, visible = getattr(tables, name), getattr(seen, name)
        times = pd.to_datetime(frame[column], utc=True)
        expected = int(((times + lag <= pd.Timestamp(t)) | times.isna()).sum())
        assert len(visible) == expected, name
        if len(visible):
            assert (pd.to_datetime(visible[column], utc=True).dropna() + lag <= pd.Timestamp(t)).all(), name
    assert 0 < len(seen.flows) < len(tables.flows)


def test_ticks_and_intervals() -> None:
    grid = ticks(pd.Timestamp("2026-11-20T05:07Z").to_pydatetime(), pd.Timestamp("2026-11-20T06:00Z").to_pydatetime(),
                 EVERY)
    assert [t.strftime("%H:%M") for t in grid] == ["05:15", "05:30", "05:45", "06:00"]
    assert parse_every("15m") == EVERY and parse_every("1h") == timedelta(hours=1) and parse_every("90s").seconds == 90


def test_findings_appear_after_their_lag_on_tick_boundaries_and_within_one_interval_plus_lag(org, result) -> None:
    truth, _ = org
    tick_set = set(result.ticks)
    assert result.findings
    min_lag = min(lag for _, lag, _ in LAGS.values() if lag > timedelta(0))
    for tr in result.findings:
        assert tr.detected_at in tick_set and tr.detected_at.timestamp() % EVERY.total_seconds() == 0
        assert tr.detected_at >= tr.finding.first_seen + min_lag  # nothing is seen before it is delivered
        assert tr.alerted_at is None or tr.alerted_at in tick_set
    worst_lag = max(lag for name, (_, lag, _) in LAGS.items() if name != "spend")  # billing is not needed to alert
    for incident in truth.incidents:
        alerts = [tr.alerted_at for tr in result.findings if tr.alerted_at is not None
                  and (tr.finding.resource in incident.resources or tr.finding.principal == incident.principal)]
        assert alerts, incident.name
        assert min(alerts) - incident.started <= EVERY + worst_lag, incident.name


def test_evidence_landing_lies_within_the_interval_before_the_reported_severity(org, result) -> None:
    from spendwatch.replay import evidence_landing

    _, tables = org
    tr = next(t for t in result.findings if t.severity >= Severity.MEDIUM and t.previous_tick is not None)
    landed = evidence_landing(DeliveredTables(tables), tr, None)
    assert landed is not None and tr.previous_tick < landed <= tr.reached_at
    assert tr.reached_at - landed <= EVERY


def test_replay_command_json(org, capsys) -> None:
    truth, _ = org
    start = min(i.started for i in truth.incidents)
    code = main(["replay", "--data", str(Path(truth.root)), "--every", "30m", "--start", start.isoformat(),
                 "--end", (start + timedelta(hours=1)).isoformat(), "--no-landing", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["every_min"] == 30 and out["ticks"] == 2 and out["lags_min"]["activity"] == 15
    for f in out["findings"]:
        assert f["detected_at"].endswith((":00:00Z", ":30:00Z"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    """`spendwatch demo`'s organisation (its defaults: seed 7, 3 days, 60 instances), read once."""
    truth = simulate(tmp_path_factory.mktemp("demo") / "data", seed=7, days=3.0, instances=60)
    return truth, read_directory(truth.root, RunReport())


def test_demo_replay_pages_no_legitimate_resource_the_night_after_the_retrain(demo) -> None:
    """The full demo replay (--every 15m) once paged the legitimate training job at 2026-11-20 03:15: its model,
    retrained at the 11-19 14:30 tick on a baseline that ended (24 h hold-out) before the job began, saw every
    billed hour of the p4d as just beyond that baseline (low, rightly), and the in-progress 03:00 hour, 12 minutes
    holding one of the job's dips, as far beyond it; that one hour gave the model's hit full strength. Here the
    same model (the replay's in-memory one, trained by the same call at the same tick) scores the ticks of that
    hour, as the full replay did."""
    truth, tables = demo
    assert truth.end == datetime(2026, 11, 20, 12, tzinfo=UTC), "the demo's history moved: re-derive the ticks"
    delivered = DeliveredTables(tables)
    model = StoredModel()
    retrain = datetime(2026, 11, 19, 14, 30, tzinfo=UTC)  # the full replay's daily retrain before 11-20 03:15
    detect(delivered.at(retrain), now=retrain, model=model)
    assert model.last == "trained" and model.current is not None
    trained = model.current
    result = replay(tables, every=EVERY, start=datetime(2026, 11, 20, 3, tzinfo=UTC),
                    end=datetime(2026, 11, 20, 4, tzinfo=UTC), model=model, landing=False)
    assert model.current is trained  # no retrain inside the window: every tick scored with that model
    assert len(result.ticks) == 5
    legit = set(truth.legit_gpu)
    paged = {t.finding.resource: t.severity.label for t in result.findings
             if t.finding.resource in legit and t.severity >= Severity.MEDIUM}
    assert not paged, f"legitimate resources paged: {paged}"
    # Not vacuous: the model did score the training job as unlike the baseline (a low finding), and the miners
    # running then are still found.
    assert any(t.finding.resource in legit and "iforest" in t.finding.rules for t in result.findings)
    found = {t.finding.resource: t.severity for t in result.findings}
    for incident in truth.incidents:
        for resource in incident.resources:
            assert found.get(resource, Severity.INFO) >= Severity.HIGH, f"{incident.name}: {resource}"
