"""Isolation forest over resource-hours: weak evidence that a resource behaves unlike the rest of the fleet.

Scores are the original paper's anomaly score s(x) in (0, 1]: HIGHER = MORE ANOMALOUS (about 0.5 and below
is ordinary, towards 1 is isolated quickly). This is the negative of scikit-learn's `score_samples`.

The forest is fitted on the scan's own resource-hours (no stored model yet; persistence, calibration and
backtests come later), so it says "unusual here", never "mining". Its hits are weak (belief <= 0.25) and name
the features that stood out, for a person to check.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import pandas as pd
from joblib import parallel_backend
from sklearn.base import BaseEstimator, _fit_context
from sklearn.ensemble import IsolationForest
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from spendwatch.findings import Hit

from .features import KEY, RESOURCE_HOUR_FEATURES, Features, resource_hours
from .rules.base import fmt_time

# Byte and count features span orders of magnitude: trees split better on their logs.
LOG_FEATURES = ("bytes_in", "bytes_out", "bytes_per_packet", "peers", "spend_rate")


class ResourceHourForest(BaseEstimator):
    """IsolationForest with an anomaly score where higher = more anomalous, and a per-row explanation.

    Parameters are keyword-only and stored as given; `fit` validates them. Fitted attributes end in `_`:
    `forest_` (the sklearn IsolationForest), `n_features_in_`, `feature_names_in_` (when fitted on a
    DataFrame), `center_` and `scale_` (median and robust spread per feature, for explanations).
    """

    _parameter_constraints: dict = {  # noqa: RUF012 (sklearn's declarative validation reads a class dict)
        "n_estimators": [Interval(Integral, 1, None, closed="left")],
        "max_samples": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left"),
                        Interval(Real, 0, 1, closed="right")],
        "max_features": [Interval(Real, 0, 1, closed="right")],
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
    }

    def __init__(self, *, n_estimators: int = 100, max_samples: int | float | str = "auto",
                 max_features: float = 1.0, random_state: int | None = None, n_jobs: int | None = None) -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.max_features = max_features
        self.random_state = random_state
        self.n_jobs = n_jobs

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: np.ndarray | pd.DataFrame, y: object = None) -> ResourceHourForest:
        X = validate_data(self, X, dtype=np.float64)
        self.forest_ = IsolationForest(
            n_estimators=self.n_estimators, max_samples=self.max_samples, max_features=self.max_features,
            random_state=self.random_state, n_jobs=self.n_jobs,
        ).fit(X)
        self.center_ = np.median(X, axis=0)
        q75, q25 = np.percentile(X, [75, 25], axis=0)
        spread = (q75 - q25) / 1.349  # IQR scaled to a normal sd
        fallback = np.std(X, axis=0)
        self.scale_ = np.where(spread > 0, spread, np.where(fallback > 0, fallback, 1.0))
        return self

    def score_samples(self, X: np.ndarray | pd.DataFrame) -> np.ndarray:
        """Anomaly score per row in (0, 1]: higher = more anomalous."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        # Tree traversal releases the GIL, so threads share the work; the estimator's n_jobs is not used here.
        with parallel_backend("threading", n_jobs=self.n_jobs or 2):
            return -self.forest_.score_samples(X)

    def explain(self, X: np.ndarray | pd.DataFrame, top: int = 3) -> np.ndarray:
        """Indices of the `top` features farthest from the fleet's median (robust z), per row."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        z = np.abs((X - self.center_) / self.scale_)
        return np.argsort(-z, axis=1)[:, :top]


@dataclass(frozen=True)
class IForestConfig:
    enabled: bool = True
    n_estimators: int = 100
    max_samples: int | str = "auto"
    random_state: int = 0
    n_jobs: int = 2
    min_rows: int = 48  # fewer resource-hours than this: no fleet to compare with, no hits
    max_fit_rows: int = 200_000  # fit on a sample above this (each tree only sees max_samples rows anyway)
    min_score: float = 0.62  # scores below are ordinary; ~0.5 is the median of a clean fleet
    full_score: float = 0.78  # score at which the belief reaches belief_max
    belief_min: float = 0.1
    belief_max: float = 0.25
    top_k: int = 5  # at most this many resources get a hit per scan
    top_features: int = 3


RULE_ID = "iforest"
FAMILY = "anomaly"


def anomaly_hits(features: Features, config: IForestConfig | None = None) -> list[Hit]:
    """Fit on this scan's resource-hours and return weak hits for the most anomalous resources."""
    cfg = config or IForestConfig()
    if not cfg.enabled:
        return []
    rh = resource_hours(features)
    if len(rh) < cfg.min_rows:
        return []
    names = list(RESOURCE_HOUR_FEATURES)
    raw = rh[names].to_numpy(dtype="float64")
    X = raw.copy()
    for i, name in enumerate(names):
        if name in LOG_FEATURES:
            X[:, i] = np.log1p(np.clip(X[:, i], 0, None))
    model = ResourceHourForest(n_estimators=cfg.n_estimators, max_samples=cfg.max_samples,
                               random_state=cfg.random_state, n_jobs=cfg.n_jobs)
    fit_rows = X
    if len(X) > cfg.max_fit_rows:
        rng = np.random.default_rng(cfg.random_state)
        fit_rows = X[rng.choice(len(X), cfg.max_fit_rows, replace=False)]
    model.fit(fit_rows)
    scores = model.score_samples(X)
    rh = rh.assign(score=scores)
    best = rh.loc[rh.groupby(KEY, sort=False)["score"].idxmax()]
    best = best[best["score"] >= cfg.min_score].sort_values("score", ascending=False).head(cfg.top_k)
    if not len(best):
        return []
    order = model.explain(X[best.index.to_numpy()], top=cfg.top_features)
    medians = np.median(raw, axis=0)
    rank = (scores[None, :] >= best["score"].to_numpy()[:, None]).sum(axis=1)
    out = []
    for (_, row), feats, r in zip(best.iterrows(), order, rank, strict=True):
        strength = min(1.0, max(0.0, (row["score"] - cfg.min_score) / max(cfg.full_score - cfg.min_score, 1e-9)))
        belief = cfg.belief_min + (cfg.belief_max - cfg.belief_min) * strength
        details = ", ".join(f"{names[j]} {row[names[j]]:.3g} (fleet median {medians[j]:.3g})" for j in feats)
        hour = row["hour"]
        evidence = (
            f"{row['resource']} in the hour from {fmt_time(hour)} ranks {int(r)} of {len(rh)} resource-hours "
            f"by isolation score ({row['score']:.2f}; higher = more anomalous): {details}"
        )
        out.append(Hit(
            rule=RULE_ID, cloud=str(row["cloud"]), account=str(row["account"]), resource=str(row["resource"]),
            principal=None, start=hour.to_pydatetime(), end=(hour + pd.Timedelta(hours=1)).to_pydatetime(),
            belief=round(belief, 4), evidence=evidence, family=FAMILY,
            facts={"score": round(float(row["score"]), 4), "top_features": [names[j] for j in feats]},
        ))
    return out
