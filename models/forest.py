"""The isolation forest itself (`ResourceHourForest`), kept apart from models/iforest.py so that importing the
detection code does not import scikit-learn and SciPy (about 0.9 s): only a scan that fits or scores a forest
pays for them, on first use. models/iforest.py has the configuration and the hits; its `ResourceHourForest` name
still resolves here (module `__getattr__`), so models saved by earlier versions under
`spendwatch.models.iforest.ResourceHourForest` load unchanged.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, _fit_context
from sklearn.ensemble import IsolationForest
from sklearn.ensemble._iforest import _average_path_length
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from .iforest import PERCENTILE_GRID

# Rows per block: a block of float32 rows (16,384 x 12 x 4 B = 786 KB) stays in L2 cache while every tree walks
# it, instead of each tree streaming the whole matrix from memory. Measured on 1 M rows, 2 threads: 1,024 rows
# 2.3 s, 4,096 1.8 s, 16,384 1.65 s, one block 3.6 s.
SCORE_BLOCK_ROWS = 16_384


def leaf_path_lengths(forest: IsolationForest) -> list[np.ndarray]:
    """Per tree, per node: the path length a row ending at that node contributes, depth + c(n_node) - 1.

    Exactly the terms sklearn's `_compute_score_samples` adds (its `_decision_path_lengths` plus
    `_average_path_length_per_tree`, minus one, in the same floating-point order), so summing them gives the
    same bits. Computed from the fitted trees on each call (100 trees x ~500 nodes: microseconds), so nothing
    extra is stored in a saved model.
    """
    return [np.asarray(d, dtype=np.float64) + np.asarray(c, dtype=np.float64) - 1.0
            for d, c in zip(forest._decision_path_lengths, forest._average_path_length_per_tree, strict=True)]


def forest_path_sums(forest: IsolationForest, X: np.ndarray, n_jobs: int = 2,
                     block: int = SCORE_BLOCK_ROWS) -> np.ndarray:
    """Sum over trees of each row's path length: sklearn's `depths`, computed block by block.

    Why not sklearn's `score_samples`: it walks one tree over *all* rows, then the next, so every tree streams
    the whole matrix from memory, and it converts X to float32 and takes a lock per tree. Here X is converted
    once, each block of rows stays in cache while all trees walk it (the trees' compiled `apply`, which
    releases the GIL), and threads split the rows. Each row's sum runs over the trees in sklearn's order, so
    the result is bit-identical to sequential sklearn and the same run to run. A pure-numpy level-by-level
    traversal was measured too and is slower (~6.6 s per 1 M rows on one core against ~3.3 s for the trees'
    `apply`): each level costs several passes over the block, where `apply` walks a row to its leaf in one.
    It reads sklearn's private fitted attributes (`_decision_path_lengths`, `_max_features`, ...); the tests
    compare against `score_samples` bit for bit, so a sklearn release that changes them fails there, loudly.
    """
    X32 = np.ascontiguousarray(X, dtype=np.float32)  # the trees split on float32, as sklearn's scoring does
    trees = [est.tree_ for est in forest.estimators_]
    values = leaf_path_lengths(forest)
    subsample = forest._max_features != X32.shape[1]
    features = [np.asarray(f) if subsample else None for f in forest.estimators_features_]
    depths = np.zeros(len(X32), dtype=np.float64)

    def work(lo: int, hi: int) -> None:
        for start in range(lo, hi, block):
            rows = X32[start:min(start + block, hi)]
            acc = depths[start:start + len(rows)]  # a view: each block writes only its own rows
            for tree, value, feats in zip(trees, values, features, strict=True):
                sub = rows if feats is None else np.ascontiguousarray(rows[:, feats])
                acc += value[tree.apply(sub)]

    jobs = max(1, min(n_jobs, len(X32) // block))
    if jobs == 1:
        work(0, len(X32))
    else:
        bounds = np.linspace(0, len(X32), jobs + 1).astype(int)
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(work, bounds[:-1], bounds[1:]))
    return depths


def sklearn_score(forest: IsolationForest, X: np.ndarray, n_jobs: int = 2) -> np.ndarray:
    """Equal to `forest.score_samples(X)` (lower = more anomalous, sklearn's sign), computed faster."""
    depths = forest_path_sums(forest, X, n_jobs)
    denominator = len(forest.estimators_) * _average_path_length([forest._max_samples])[0]
    # For a single training sample the denominator is 0; sklearn then uses a ratio of 1 (score 2 ** -1), as here.
    return -(2 ** (-np.divide(depths, denominator, out=np.ones_like(depths), where=denominator != 0)))


def _score_rows(forest: IsolationForest, X: np.ndarray, n_jobs: int) -> np.ndarray:
    """sklearn's `score_samples` through `sklearn_score`: same bits, about twice as fast on 2 cores."""
    return sklearn_score(forest, X, n_jobs)


class ResourceHourForest(BaseEstimator):
    """IsolationForest with an anomaly score where higher = more anomalous, range novelty, and explanations.

    Parameters are keyword-only and stored as given; `fit` validates them. Fitted attributes end in `_`:
    `forest_` (the sklearn IsolationForest), `n_features_in_`, `feature_names_in_` (when fitted on a
    DataFrame), `center_` and `scale_` (median and robust spread per feature, for explanations),
    `range_min_` / `range_max_` (the baseline's range per feature), `threshold_` and `novelty_threshold_` (the
    alert budget's thresholds on the isolation score and on range novelty).
    `novelty_units`: per feature, the unit range novelty is counted in (None: 1 for every feature);
    `novelty_floor`: the least novelty threshold, in units, however quiet the baseline.
    """

    _parameter_constraints: dict = {  # noqa: RUF012 (sklearn's declarative validation reads a class dict)
        "n_estimators": [Interval(Integral, 1, None, closed="left")],
        "max_samples": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left"),
                        Interval(Real, 0, 1, closed="right")],
        "max_features": [Interval(Real, 0, 1, closed="right")],
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
        "alert_budget": [Interval(Real, 0, None, closed="neither")],
        "windows_per_day": [Interval(Real, 0, None, closed="neither")],
        "novelty_units": ["array-like", None],
        "novelty_floor": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, *, n_estimators: int = 100, max_samples: int | float | str = "auto",
                 max_features: float = 1.0, random_state: int | None = None, n_jobs: int | None = None,
                 alert_budget: float = 1.0, windows_per_day: float = 24.0,
                 novelty_units: tuple[float, ...] | None = None, novelty_floor: float = 2.0) -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.max_features = max_features
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.alert_budget = alert_budget
        self.windows_per_day = windows_per_day
        self.novelty_units = novelty_units
        self.novelty_floor = novelty_floor

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
        # Calibration on the baseline itself. The budget is model-only findings per day per 1,000 resources;
        # each row is one resource-window, so a day of 1,000 resources is 1,000 * windows_per_day rows and the
        # budget allows that share of baseline rows above the threshold.
        self.baseline_quantiles_ = np.quantile(X, PERCENTILE_GRID, axis=0)
        baseline = -_score_rows(self.forest_, X, self.n_jobs or 2)
        self.alert_rate_ = min(1.0, self.alert_budget / (1000.0 * self.windows_per_day))
        self.threshold_ = float(np.quantile(baseline, 1.0 - self.alert_rate_))
        self.baseline_median_score_ = float(np.median(baseline))
        units = np.ones(X.shape[1]) if self.novelty_units is None else np.asarray(self.novelty_units, dtype=float)
        if units.shape != (X.shape[1],) or not (units > 0).all():
            raise ValueError(f"novelty_units needs one positive unit per feature ({X.shape[1]}), got {units.shape}")
        self.units_ = units
        self.range_min_, self.range_max_ = X.min(axis=0), X.max(axis=0)
        self.novelty_threshold_ = max(float(self.novelty_floor), self._held_out_novelty(X))
        return self

    def _held_out_novelty(self, X: np.ndarray) -> float:
        """The budget's quantile of range novelty for baseline rows judged against the range of the other half.

        In-sample every baseline row has novelty 0, which says nothing about how far an ordinary new hour goes
        beyond the range; splitting the rows at random in two and measuring each half against the other's range
        does (conservatively: half a baseline has a narrower range than the whole).
        """
        if len(X) < 4:
            return 0.0
        order = check_random_state(self.random_state).permutation(len(X))
        halves = (X[order[: len(X) // 2]], X[order[len(X) // 2:]])
        held = [_novelty(b, a.min(axis=0), a.max(axis=0), self.units_) for a, b in (halves, halves[::-1])]
        return float(np.quantile(np.concatenate(held), 1.0 - self.alert_rate_))

    def novelty(self, X: np.ndarray | pd.DataFrame) -> np.ndarray:
        """Range novelty per row (>= 0): summed over features, how many units each value lies beyond the
        baseline's range (below its minimum or above its maximum). 0 for anything the baseline did."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return _novelty(X, self.range_min_, self.range_max_, self.units_)

    def alert_score(self, X: np.ndarray | pd.DataFrame) -> np.ndarray:
        """What hits are made from, 0..1 (higher = more anomalous): the larger of `calibrated_score` and the
        calibrated range novelty n / (n + novelty_threshold_). Both reach 0.5 at their alert-budget threshold."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)  # once: both scores read the same rows
        nov = _novelty(X, self.range_min_, self.range_max_, self.units_)
        return np.maximum(self._calibrate(-_score_rows(self.forest_, X, self.n_jobs or 2)),
                          nov / (nov + self.novelty_threshold_))

    def calibrated_score(self, X: np.ndarray | pd.DataFrame) -> np.ndarray:
        """Scores mapped to 0..1 (higher = more anomalous): the baseline median -> 0, the budget threshold -> 0.5.

        Piecewise linear and monotone in `score_samples`, so it ranks rows identically; 0.5 and above is exactly
        the share of baseline rows the alert budget allows.
        """
        return self._calibrate(self.score_samples(X))

    def _calibrate(self, raw: np.ndarray) -> np.ndarray:
        lo, thr = self.baseline_median_score_, max(self.threshold_, self.baseline_median_score_ + 1e-9)
        below = 0.5 * (raw - lo) / (thr - lo)
        above = 0.5 + 0.5 * (raw - thr) / max(1.0 - thr, 1e-9)
        return np.clip(np.where(raw < thr, below, above), 0.0, 1.0)

    def percentile_of(self, X: np.ndarray | pd.DataFrame) -> np.ndarray:
        """Each value's percentile (0..100) among the baseline's values of the same feature."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        out = np.empty_like(X)
        for j in range(X.shape[1]):
            col = self.baseline_quantiles_[:, j]
            # Ties (a feature that is 0 for most of the baseline) take the middle of their run of percentiles.
            lo = np.searchsorted(col, X[:, j], side="left")
            hi = np.searchsorted(col, X[:, j], side="right")
            out[:, j] = 100.0 * PERCENTILE_GRID[np.clip((lo + hi) // 2, 0, len(col) - 1)]
            out[X[:, j] > col[-1], j] = 100.0
            out[X[:, j] < col[0], j] = 0.0
        return out

    def score_samples(self, X: np.ndarray | pd.DataFrame) -> np.ndarray:
        """Anomaly score per row in (0, 1]: higher = more anomalous."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return -_score_rows(self.forest_, X, self.n_jobs or 2)

    def explain(self, X: np.ndarray | pd.DataFrame, top: int = 3) -> np.ndarray:
        """Indices of the `top` features farthest from the fleet's median (robust z), per row."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        z = np.abs((X - self.center_) / self.scale_)
        return np.argsort(-z, axis=1)[:, :top]


def _novelty(X: np.ndarray, lo: np.ndarray, hi: np.ndarray, units: np.ndarray) -> np.ndarray:
    # |X - clip(X, lo, hi)| is X - hi above the range, lo - X below it and 0 inside: the same values as
    # max(X - hi, 0) + max(lo - X, 0), with one temporary array instead of four (a million rows are scored at once).
    beyond = np.clip(X, lo, hi)
    np.subtract(X, beyond, out=beyond)
    np.abs(beyond, out=beyond)
    beyond /= units
    return beyond.sum(axis=1)


# The address saved models name the class by (skops records `__module__`): where it was defined before it moved
# here. models/iforest.py resolves it to this class, so files written by any version load in any other.
ResourceHourForest.__module__ = "spendwatch.models.iforest"
