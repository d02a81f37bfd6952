"""The baseline model kept in the state (migration 0003, `ModelRecords`), for PostgreSQL states that have no file
to keep `model.skops` beside: trained and saved through one Store, loaded through another with identical scores,
and the same refusals as a file (only a spendwatch model, only skops's trusted types, never pickle)."""

from __future__ import annotations

import io
import json
import pickle
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from spendwatch.models.features import WINDOW_FEATURES, Features, resource_windows
from spendwatch.models.iforest import telemetry_time
from spendwatch.models.model_store import (
    MODEL_FILE,
    MODEL_NAME,
    ModelFileError,
    StoredModel,
    model_bytes,
    model_from_bytes,
    to_matrix,
)
from spendwatch.store import ModelRecords, Store
from tests.fakes.findings import T0
from tests.store.postgres_server import fresh_schema


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two days of a simulated organisation's exports."""
    from spendwatch.simulate import simulate

    return simulate(tmp_path_factory.mktemp("org") / "data", seed=11, days=2.0, instances=16).root


@pytest.fixture(scope="module")
def history(exports: Path) -> tuple[object, object]:
    """The exports as 1-hour resource windows, and the scan time they end at."""
    from spendwatch.connectors.files import read_directory
    from spendwatch.report import RunReport

    tables = read_directory(exports, RunReport())
    return resource_windows(Features(tables), "1h"), telemetry_time(tables)


def test_model_records_keep_bytes_and_metadata_on_both_backends(store_location: Path | str) -> None:
    blob = bytes(range(256)) * 64 + b"\x00\x00"  # every byte value, NULs included: BLOB / BYTEA, not text
    with Store(store_location) as store:
        records = ModelRecords(store)
        assert records.get("baseline") is None and records.names() == []
        records.put("baseline", blob, metadata={"rows": 12, "features": ["a", "b"]}, now=T0)
        records.put("baseline", blob[::-1], metadata={"rows": 13}, now=T0 + timedelta(hours=1))  # replaced
        records.put("other", b"x", metadata={}, now=T0)
    with Store(store_location) as again:  # another connection reads what was committed
        got = ModelRecords(again).get("baseline")
        assert got is not None and got.data == blob[::-1] and got.metadata == {"rows": 13}
        assert got.created_at == "2026-11-20T11:00:00.000000Z"  # T0 + 1 h, fixed-width UTC
        assert ModelRecords(again).names() == ["baseline", "other"]


def test_a_model_trained_on_postgres_is_loaded_by_another_store_with_identical_scores(
        history: tuple[object, object], postgres_url: str) -> None:
    rows, now = history
    with fresh_schema(postgres_url) as url:
        with Store(url) as store:
            assert store.path is None  # nothing to write a file beside
            model = StoredModel.beside(store)
            assert model is not None and model.path is None and "table models" in model.where
            trained = model.resolve(rows, now=now)
            assert model.last == "trained" and trained is not None
            saved = ModelRecords(store).get(MODEL_NAME)
            assert saved is not None and saved.data[:2] == b"PK"  # a skops archive (zip), not a pickle stream
            assert saved.metadata["rows"] == trained.rows and saved.metadata["features"] == list(WINDOW_FEATURES)
            assert "estimator" not in saved.metadata
        with Store(url) as other:
            source = StoredModel.beside(other)
            assert source is not None
            loaded = source.resolve(rows.head(0), now=now + timedelta(hours=2))  # fresh: loaded, not retrained
            assert source.last == "loaded" and loaded is not None
    X = to_matrix(rows, WINDOW_FEATURES)
    assert np.array_equal(loaded.estimator.alert_score(X), trained.estimator.alert_score(X))
    assert np.array_equal(loaded.estimator.novelty(X), trained.estimator.novelty(X))
    assert (loaded.trained_at, loaded.window_start, loaded.window_end, loaded.rows) == \
        (trained.trained_at, trained.window_start, trained.window_end, trained.rows)


def test_an_sqlite_state_still_keeps_the_model_in_a_file_beside_it(history: tuple[object, object],
                                                                    tmp_path: Path) -> None:
    rows, now = history
    with Store(tmp_path / "state.db") as store:
        model = StoredModel.beside(store)
        assert model is not None and model.path == tmp_path / MODEL_FILE and model.records is None
        assert model.resolve(rows, now=now) is not None
        assert ModelRecords(store).names() == []
    assert (tmp_path / MODEL_FILE).is_file()


def test_what_is_not_a_spendwatch_model_is_refused_from_the_state(history: tuple[object, object],
                                                                   postgres_url: str) -> None:
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    rows, now = history
    other = sio.dumps(LogisticRegression().fit(np.random.default_rng(0).normal(size=(20, 2)), [0, 1] * 10))
    buffer = io.BytesIO()
    pickle.dump({"format": "spendwatch-model"}, buffer)
    with fresh_schema(postgres_url) as url, Store(url) as store:
        records, model = ModelRecords(store), StoredModel.beside(store)
        assert model is not None
        for bad, why in ((other, "skops file holding"), (buffer.getvalue(), "not a readable skops file"),
                         (b"\x00garbage" * 40, "not a readable skops file")):
            records.put(MODEL_NAME, bad, metadata={}, now=T0)
            with pytest.raises(ModelFileError, match=f"table models.*{why}"):
                model.load()
        # a good model's bytes go through the same checks, and come back whole
        good = StoredModel(None, records=records)
        trained = good.retrain(rows, now=now)
        assert trained is not None
        again = model_from_bytes(model_bytes(trained), source="test")
        assert again.features == trained.features and again.rows == trained.rows


def test_model_train_and_show_on_a_postgres_state(exports: Path, postgres_url: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from spendwatch.cli import main

    with fresh_schema(postgres_url) as url:
        assert main(["model", "show", "--state", url]) == 1
        assert "no model saved yet" in capsys.readouterr().err
        assert main(["model", "train", "--data", str(exports), "--state", url, "--json"]) == 0
        trained = json.loads(capsys.readouterr().out)
        assert trained["path"].endswith("(table models)") and trained["rows"] > 200
        assert main(["model", "show", "--state", url, "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == trained
        with Store(url) as store:
            saved = ModelRecords(store).get(MODEL_NAME)
            assert saved is not None and saved.metadata["rows"] == trained["rows"]
