"""`spendwatch model train|show` and the retrain hook `spendwatch serve` schedules."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from spendwatch.cli import main
from spendwatch.connectors.files import read_directory
from spendwatch.model_cli import retrain
from spendwatch.models.features import WINDOW_FEATURES, Features, resource_windows
from spendwatch.models.iforest import telemetry_time
from spendwatch.models.model_store import MODEL_FILE, baseline_model, load_model
from spendwatch.report import RunReport
from spendwatch.simulate import simulate


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return simulate(tmp_path_factory.mktemp("org") / "data", seed=11, days=2.0, instances=16).root


def test_train_then_show(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state.db"
    assert main(["model", "train", "--data", str(data), "--state", str(state), "--json"]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["features"] == list(WINDOW_FEATURES) and trained["rows"] > 200
    assert trained["format_version"] == 1 and trained["spendwatch_version"] and trained["sklearn_version"]
    start, end = trained["training_window"]
    assert end < trained["trained_at"] and start < end  # the newest day is held out
    saved = load_model(state.with_name(MODEL_FILE))
    assert saved.rows == trained["rows"] and saved.window_end.isoformat() == end
    assert main(["model", "show", "--state", str(state)]) == 0
    text = capsys.readouterr().out
    assert f"{trained['rows']:,} resource-hours" in text and "features" in text


def test_the_config_files_serve_state_is_the_default_state(data: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """`model train|show --config FILE` keep the model with the state `serve` uses for the same file."""
    for name in ("SPENDWATCH_STATE", "SPENDWATCH_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SPENDWATCH_HOME", str(tmp_path / "home"))
    state = tmp_path / "served" / "state.db"
    state.parent.mkdir()
    assert main(["model", "train", "--data", str(data), "--state", str(state)]) == 0
    config = tmp_path / "spendwatch.toml"
    config.write_text(f"[serve]\nstate = '{state}'\n")
    capsys.readouterr()
    assert main(["model", "show", "--config", str(config), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(state.with_name(MODEL_FILE))
    config.write_text("[serve]\nstate = 3\n")
    assert main(["model", "show", "--config", str(config)]) == 1
    assert "[serve] state: must be a non-empty string, not 3" in capsys.readouterr().err


def test_train_refuses_what_it_cannot_use(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state.db"
    assert main(["model", "train", "--state", str(state)]) == 2
    assert "give --data DIR or --config FILE" in capsys.readouterr().err
    assert main(["model", "train", "--data", str(tmp_path / "nowhere"), "--state", str(state)]) == 1
    assert "no such directory" in capsys.readouterr().err
    # the baseline is judged as of a time before the data: no history to learn from, nothing saved
    assert main(["model", "train", "--data", str(data), "--state", str(state), "--now", "2020-01-01T00:00Z"]) == 1
    assert "too little history" in capsys.readouterr().err and not state.with_name(MODEL_FILE).exists()
    assert main(["model", "show", "--state", str(state)]) == 1
    config = tmp_path / "spendwatch.toml"
    config.write_text("[serve]\ndata = '/tmp'\n")
    assert main(["model", "train", "--config", str(config), "--state", str(state)]) == 1
    assert "no [aws] table" in capsys.readouterr().err


def test_serve_retrain_hook_never_raises(tmp_path: Path) -> None:
    from spendwatch.serve import ServeSettings, Service

    settings = ServeSettings(aws={"accounts": "not a list"}, state=tmp_path / "state.db")
    assert Service(settings).retrain_model() is False  # a bad [aws] table: logged, the scans keep the last model
    assert not (tmp_path / MODEL_FILE).exists()


def test_training_reads_the_flows_through_the_engine_and_gets_the_model_the_records_give(data: Path,
                                                                                        tmp_path: Path) -> None:
    """Two weeks of flow logs do not fit in memory as records: `retrain` reduces them as it reads, and the
    resource-hours it trains on (so the model) are those the records themselves give."""
    when = datetime(2030, 1, 1, tzinfo=UTC)  # later than the data: judged by the newest telemetry, as retrain does
    trained = retrain(state=tmp_path / "state.db", data=data, now=when)
    records = read_directory(data, RunReport())
    direct = baseline_model(resource_windows(Features(records), "1h"), now=min(when, telemetry_time(records)))
    assert trained is not None and direct is not None
    assert (trained.rows, trained.resources, trained.window_end) == (direct.rows, direct.resources, direct.window_end)
    assert np.isclose(trained.estimator.threshold_, direct.estimator.threshold_)
