from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from spendwatch.models.features import Features
from spendwatch.models.forest import ResourceHourForest
from spendwatch.models.iforest import IForestConfig, anomaly_hits


def test_obvious_outlier_scores_highest_and_higher_means_more_anomalous():
    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (500, 4))
    X[17] = [12, -12, 12, -12]
    model = ResourceHourForest(n_estimators=100, random_state=0).fit(X)
    scores = model.score_samples(X)
    assert int(np.argmax(scores)) == 17
    assert scores[17] > 0.65 and np.median(scores) < 0.5
    again = ResourceHourForest(n_estimators=100, random_state=0).fit(X).score_samples(X)
    assert np.allclose(scores, again, rtol=0, atol=1e-12)  # fixed seed, same scores (threads reorder sums)


def test_estimator_conventions():
    model = ResourceHourForest(n_estimators=10, random_state=1)
    assert model.get_params()["n_estimators"] == 10
    with pytest.raises(TypeError):
        ResourceHourForest(10)  # keyword-only
    with pytest.raises(NotFittedError):
        model.score_samples(np.zeros((2, 3)))
    with pytest.raises(ValueError):
        ResourceHourForest(n_estimators=0).fit(np.zeros((5, 2)))
    model.fit(pd.DataFrame({"a": np.arange(50.0), "b": np.ones(50)}))
    assert model.n_features_in_ == 2 and list(model.feature_names_in_) == ["a", "b"]


def test_anomaly_hits_name_the_outlier_and_stay_weak(build):
    frames = []
    for i in range(30):  # a fleet of ordinary hosts, 6 hours each
        rng = np.random.default_rng(i)
        frames.append(build.util(f"i-{i:02d}", list(np.clip(rng.normal(35, 12, 360), 0, 100)), metric="cpu_util"))
        frames.append(build.util(f"i-{i:02d}", list(np.clip(rng.normal(20, 10, 360), 0, 100)), metric="gpu_util"))
    frames.append(build.util("i-odd", [100.0] * 360, metric="gpu_util"))
    frames.append(build.util("i-odd", [100.0] * 360, metric="cpu_util"))
    tables = build.tables(utilization=pd.concat(frames, ignore_index=True))
    hits = anomaly_hits(Features(tables), IForestConfig(random_state=0))
    assert hits and hits[0].resource == "i-odd"
    assert all(h.belief <= 0.25 for h in hits)
    assert "higher = more anomalous" in hits[0].evidence and "gpu_mean" in hits[0].evidence


def test_too_few_rows_give_no_hits(build):
    tables = build.tables(utilization=build.util("i-a", [50.0] * 60))
    assert anomaly_hits(Features(tables)) == []


def test_block_scorer_equals_sklearn_on_random_data_and_is_deterministic():
    from sklearn.ensemble import IsolationForest
    from sklearn.ensemble._iforest import _average_path_length

    from spendwatch.models.forest import forest_path_sums, sklearn_score

    rng = np.random.default_rng(3)
    for max_features, rows in ((1.0, 30_000), (0.5, 9_001)):
        X = rng.normal(0, 1, (rows, 7)) * rng.uniform(0.1, 100, 7)
        forest = IsolationForest(n_estimators=40, max_features=max_features, random_state=1).fit(X[:5_000])
        want = forest.score_samples(X)
        got = sklearn_score(forest, X, n_jobs=2)
        assert np.max(np.abs(got - want)) <= 1e-12
        assert np.array_equal(got, sklearn_score(forest, X, n_jobs=2))  # same bits run to run
        # small blocks: several per thread, a ragged last one, both threads at work; the same bits as one block
        blocked = forest_path_sums(forest, X, n_jobs=2, block=1_000)
        assert np.array_equal(blocked, forest_path_sums(forest, X, n_jobs=1, block=len(X)))
        assert np.array_equal(-(2 ** (-blocked / (40 * _average_path_length([forest._max_samples])[0]))), want)
    tiny = IsolationForest(n_estimators=5, random_state=0).fit(np.zeros((1, 2)))  # one sample: sklearn says 1
    assert np.allclose(sklearn_score(tiny, np.zeros((3, 2))), tiny.score_samples(np.zeros((3, 2))), atol=1e-12)


def test_fitted_model_scores_equal_sklearn_negated():
    rng = np.random.default_rng(4)
    X = rng.normal(0, 1, (25_000, 11))
    model = ResourceHourForest(n_estimators=60, random_state=0, n_jobs=2).fit(X[:8_000])
    assert np.max(np.abs(model.score_samples(X) + model.forest_.score_samples(X))) <= 1e-12
