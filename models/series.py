"""Streaming anomaly scores for one utilisation series (CPU, GPU, network, request counts over time).

A single metric series, as CloudWatch exports it (`timestamp,value`), is scored point by point. The score of
row i uses rows 0..i only: every statistic looks back over a trailing window that ends at row i (rolling
windows end at the current row; baselines are shifted so they end before the row being judged; the nearest
earlier neighbours are searched among rows i-history..i-1 only), and the one sequential piece, post-alert
suppression, is a forward loop. No labels are used. Truncating a series, or changing its future, therefore
never changes the scores of the rows before the cut; tests check exactly that.

Scores are in 0..1, HIGHER = MORE ANOMALOUS.

What it detects: **behaviour the series has not shown in the last two weeks** (`history` rows of 5-minute
samples), in two ways.
- novelty: each row is placed in two small contexts and compared with its nearest earlier neighbour in each,
  among the trailing `history` rows, the distance measured as a share of that history's range:
    * transition: the pair (previous value, value): a jump the series never made;
    * context: the pair (level just before, value), the level being the rolling median of `level_window`
      rows: a value the series never took *at that level* (a spike to 19 % CPU is news on a database that
      idles at 15 %, even if it once hit 25 % during a migration).
  The novelty is the geometric mean of the two distances: both views must find the row new. A new record
  beyond the range is new in both (its distance is at least its excursion); a burst of the kind the series
  repeats daily is old in both; a row new in one view only (a familiar value after an unusual jump, say)
  scores low. That agreement is what keeps the false alarms down. It scores 0.5 when the geometric mean is
  `novelty_margin` (6 %) of the range.
- level: the rolling median of the last `level_window` rows against the extremes of that same median over
  the history: a sustained level beyond the range (a GPU pegged by a miner, a service falling over), which a
  slow climb can reach without ever making a single row new. 0.5 at `level_margin` (10 %) of the range.
Each measure e becomes e / (e + margin): 0 when nothing is new, 0.5 at the margin, towards 1 far beyond.
The score is the larger of the two.

Why these and not z-scores or a range alone (NAB standard scores on its 17 AWS CloudWatch series, see
`evaluate_nab`, `cross_validate_nab` and the README): robust z-scores against trailing median/MAD scored
37-54 because they fire on the bursts cloud metrics repeat; "beyond the range" alone scored 66-73 but misses
anomalies inside the range (a spike after a level shift, a new oscillation); one nearest-neighbour view alone
swung between 48 and 74 with its margin; requiring both views to agree scores 68-80 over the 192 settings of
`CV_GRID` (median 73.5) and 78 with these defaults. On NAB the level test adds nothing (78.07 without it);
it is kept for slow climbs to a new level, which never make a single row new.

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
from scipy.spatial import cKDTree


@dataclass(frozen=True)
class SeriesConfig:
    """One fixed configuration for every series; counts are rows (5-minute samples on CloudWatch)."""

    history: int = 4000  # trailing rows that define "seen before": two weeks of 5-minute samples
    level_window: int = 12  # rows in the rolling median (the level): an hour
    novelty_margin: float = 0.06  # geometric-mean novelty (share of the range) at which a row scores 0.5
    level_margin: float = 0.1  # excursion of the level (share of its range) at which it scores 0.5
    warmup: int = 150  # rows scored 0 while the history fills
    threshold: float = 0.5  # alert at or above this score
    suppress: int = 100  # rows after an alert whose score is damped below the threshold

    def __post_init__(self) -> None:
        for name in ("history", "level_window", "warmup", "suppress"):
            if int(getattr(self, name)) < (0 if name in ("warmup", "suppress") else 1):
                raise ValueError(f"series config: {name} must be a positive row count")
        if not (self.novelty_margin > 0 and self.level_margin > 0 and 0 < self.threshold <= 1):
            raise ValueError("series config: margins must be > 0 and the threshold in (0, 1]")


def trailing_span(values: pd.Series, history: int, lag: int = 1) -> np.ndarray:
    """Range (max - min) of the `history` values ending `lag` rows before each row; never 0.

    A perfectly flat history has no range: a sliver of its magnitude stands in, so any real change is news.
    """
    hi = values.rolling(history, min_periods=1).max().shift(lag).to_numpy()
    lo = values.rolling(history, min_periods=1).min().shift(lag).to_numpy()
    return np.nan_to_num(np.maximum(hi - lo, 1e-9 + 1e-3 * np.abs(hi)), nan=np.inf)


def excursion(values: pd.Series, history: int, lag: int) -> np.ndarray:
    """How far each value lies outside the range of the `history` values ending `lag` rows earlier.

    Returned as a share of that range (0 inside it). `lag` keeps the baseline from overlapping the rows
    that produced the value being judged (the window length for a rolling median).
    """
    hi = values.rolling(history, min_periods=1).max().shift(lag).to_numpy()
    lo = values.rolling(history, min_periods=1).min().shift(lag).to_numpy()
    span = trailing_span(values, history, lag)
    v = values.to_numpy()
    out = np.maximum(v - hi, lo - v) / span
    return np.nan_to_num(np.maximum(out, 0.0), nan=0.0)


def nearest_previous(points: np.ndarray, history: int, block: int = 128) -> np.ndarray:
    """Euclidean distance from each row of `points` to the nearest of the `history` rows just before it.

    Row 0 has no earlier row: +inf. Exact and causal: row t is only ever compared with rows t-history..t-1.
    Rows are taken `block` at a time (128: fastest on NAB's files): the rows inside every window of the block
    (from `start - history + block` up to the block's first row) go into one k-d tree (scipy's cKDTree); the
    two edges where membership differs row by row (the oldest rows of the window, and the block's own earlier
    rows) are compared directly. One tree per block instead of one comparison per pair of rows: NAB's 17
    files take about a second instead of several.
    """
    pts = np.asarray(points, dtype=float)
    n = len(pts)
    out = np.full(n, np.inf)
    for start in range(0, n, block):
        stop = min(n, start + block)
        query, rows = pts[start:stop], np.arange(start, stop)
        first = max(0, start - history)  # oldest row any query of this block may see
        shared = min(start, max(first, start - history + block))  # rows [shared, start) are seen by all
        best = np.full(stop - start, np.inf)
        if shared < start:
            best = np.minimum(best, cKDTree(pts[shared:start]).query(query, k=1)[0])
        for lo, hi in ((first, shared), (start, stop)):
            if hi <= lo:
                continue
            cand = np.arange(lo, hi)
            d = np.sqrt(((query[:, None, :] - pts[lo:hi][None, :, :]) ** 2).sum(axis=-1))
            seen = (cand[None, :] < rows[:, None]) & (cand[None, :] >= rows[:, None] - history)
            best = np.minimum(best, np.where(seen, d, np.inf).min(axis=1))
        out[start:stop] = best
    return out


def _previous(values: np.ndarray) -> np.ndarray:
    """The value one row earlier (row 0 repeats itself)."""
    return np.concatenate([values[:1], values[:-1]])


def raw_scores(values: np.ndarray, config: SeriesConfig | None = None) -> pd.DataFrame:
    """Per-row measures before squashing and suppression, each a share of the trailing range.

    Columns: transition and context (nearest-neighbour distances of the two pairs), novelty (their geometric
    mean) and level (excursion of the rolling median beyond its trailing range).
    """
    cfg = config or SeriesConfig()
    # A missing (or non-finite) sample carries the last value forward (causal); before any value, 0.
    raw = np.asarray(values, dtype=float)
    x = pd.Series(np.where(np.isfinite(raw), raw, np.nan)).ffill().fillna(0.0)
    level = x.rolling(cfg.level_window, min_periods=1).median()
    xv = x.to_numpy()
    span = trailing_span(x, cfg.history)
    # Row 0 has nothing earlier to compare with (distance inf): no history, no novelty.
    transition, context = (
        np.where(np.isfinite(d), d, 0.0) / span
        for d in (nearest_previous(np.column_stack([xv, _previous(xv)]), cfg.history),
                  nearest_previous(np.column_stack([xv, _previous(level.to_numpy())]), cfg.history)))
    return pd.DataFrame({
        "transition": transition,
        "context": context,
        "novelty": np.sqrt(transition * context),
        "level": excursion(level, cfg.history, cfg.level_window),
    })


def score_series(values: np.ndarray, config: SeriesConfig | None = None) -> np.ndarray:
    """Anomaly score per row in 0..1 (higher = more anomalous), with post-alert suppression; causal."""
    cfg = config or SeriesConfig()
    return score_raw(raw_scores(values, cfg), cfg)


def score_raw(raw: pd.DataFrame, cfg: SeriesConfig) -> np.ndarray:
    """Scores from `raw_scores` output: squash each measure at its margin, keep the larger, then suppress.

    Split from `score_series` so that a sweep over margins reuses the (costly) neighbour searches.
    """
    novelty, level = raw["novelty"].to_numpy(), raw["level"].to_numpy()
    score = np.maximum(novelty / (novelty + cfg.novelty_margin), level / (level + cfg.level_margin))
    score[: cfg.warmup] = 0.0
    # Suppression is sequential (whether row i alerts depends on earlier alerts): a plain forward loop over
    # the few rows that cross the threshold.
    damp = cfg.threshold * 0.999
    quiet_until = -1
    for i in np.flatnonzero(score >= cfg.threshold):
        if i <= quiet_until:
            score[i] = damp * 0.5
        else:
            quiet_until = int(i) + cfg.suppress
    return score


def parse_values(column: pd.Series) -> np.ndarray:
    """The `value` column as floats. An empty cell is a missing sample (NaN, carried forward when scored).

    Anything else that is not a finite number is refused, naming its CSV lines (header = line 1), so a
    corrupt export is never scored as if it were whole. A numeric column is taken as it is (NaN = missing).
    """
    if pd.api.types.is_numeric_dtype(column):
        return column.to_numpy(dtype=float)
    text = column.astype("string").str.strip()
    numbers = pd.to_numeric(text.where(text != ""), errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero((text != "").fillna(False).to_numpy(dtype=bool) & ~np.isfinite(numbers))
    if len(bad):
        shown = ", ".join(f"line {i + 2} ({column.iloc[i]!r})" for i in bad[:3])
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        rows = f"{len(bad)} bad row{'s' if len(bad) > 1 else ''}"
        raise ValueError(f"field 'value' is not a finite number on {shown}{more} ({rows} of {len(column)}; "
                         "nothing scored)")
    return numbers


def score_frame(frame: pd.DataFrame, config: SeriesConfig | None = None) -> pd.DataFrame:
    """The rows of a `timestamp,value` frame with `anomaly_score` and `alert` (0/1) columns added."""
    cfg = config or SeriesConfig()
    if "value" not in frame.columns:
        raise ValueError(f"no 'value' column (has: {', '.join(map(str, frame.columns))})")
    score = score_series(parse_values(frame["value"]), cfg)
    return frame.assign(anomaly_score=score, alert=(score >= cfg.threshold).astype(int))


# ---- NAB evaluation ------------------------------------------------------------------------------------------
NAB_SUBSET = "realAWSCloudwatch/"
NAB_LABELS = "labels/combined_windows_realAWSCloudwatch.json"
THRESHOLD_NOTE = (
    "one configuration and one threshold (0.5, the score at which a measure equals its margin) for every "
    "file; the detector's design and settings were chosen while measuring on these same 17 files, so "
    "compare with NAB's 'tuned' column; --cv shows how much of the score is tuning"
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


def load_nab(data_dir: str | Path, scorer: str | Path | None = None
             ) -> tuple[ModuleType, dict[str, list[Any]], dict[str, pd.DataFrame]]:
    """NAB's scorer module, the realAWSCloudwatch labels, and each labelled file as a frame."""
    root = Path(data_dir)
    nab = load_nab_scorer(scorer, root)
    labels = nab.load_labels(root / NAB_LABELS, NAB_SUBSET)
    return nab, labels, {key: pd.read_csv(root / key) for key in labels}


def evaluate_nab(data_dir: str | Path, config: SeriesConfig | None = None,
                 scorer: str | Path | None = None) -> dict[str, Any]:
    """Score every labelled realAWSCloudwatch file and return NAB's three profile scores.

    The detector runs once per file with `config` (one threshold for all files); NAB's scorer then counts
    `score >= config.threshold` as a detection. Returns {"profiles": {name: normalised score}, "files":
    per-file rows of the standard profile, "threshold": ..., "seconds": time spent scoring}.
    """
    cfg = config or SeriesConfig()
    nab, labels, frames = load_nab(data_dir, scorer)
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


# The settings `cross_validate_nab` sweeps: the neighbourhood the default configuration was chosen from
# (192 combinations; the default is one of them).
CV_GRID: dict[str, tuple[Any, ...]] = {
    "history": (2000, 4000),
    "level_window": (6, 12, 24, 48),
    "level_margin": (0.05, 0.1, 0.2),
    "novelty_margin": (0.04, 0.045, 0.05, 0.055, 0.06, 0.065, 0.07, 0.08),
}


def cross_validate_nab(data_dir: str | Path, grid: dict[str, tuple[Any, ...]] | None = None,
                       splits: int = 200, seed: int = 0, scorer: str | Path | None = None) -> dict[str, Any]:
    """How much of the NAB score is tuning: choose the settings on some files, score the files left out.

    Every combination of `grid` (default `CV_GRID`) is scored on every file: NAB's raw score per file and
    profile. Then, per profile:
    - two-fold: `splits` random halves of the files (seeded); the combination with the best summed score on
      one half scores the other half, and the other way round; the held-out raw scores of all files are
      normalised together, as NAB normalises a run;
    - leave one file out: each file scored with the combination best on all the others.
    Returns the default configuration's score, the grid's best and median on all files, and the held-out
    scores (mean, sd, min and max over the two-fold splits).
    """
    import dataclasses
    import itertools
    from collections import Counter

    grid = grid or CV_GRID
    nab, labels, frames = load_nab(data_dir, scorer)
    keys, profiles = list(labels), list(nab.PROFILES)
    base = SeriesConfig()
    configs = [dataclasses.replace(base, **dict(zip(grid, combo, strict=True)))
               for combo in itertools.product(*grid.values())]
    if base not in configs:
        configs.append(base)
    prepared = {p: [nab.prepare(k, frames[k]["timestamp"], np.zeros(len(frames[k])), labels[k], p) for k in keys]
                for p in profiles}
    raw_cache: dict[tuple[int, int, str], pd.DataFrame] = {}  # neighbour searches depend on these two only
    table = np.zeros((len(configs), len(profiles), len(keys)))  # raw NAB score: config x profile x file
    for ci, cfg in enumerate(configs):
        for fi, key in enumerate(keys):
            cached = (cfg.history, cfg.level_window, key)
            if cached not in raw_cache:
                raw_cache[cached] = raw_scores(frames[key]["value"].to_numpy(dtype=float), cfg)
            score = score_raw(raw_cache[cached], cfg)
            for pi, profile in enumerate(profiles):
                rows = prepared[profile][fi]
                scored = dataclasses.replace(rows, score=score[len(score) - len(rows.score):])
                table[ci, pi, fi] = nab.score_file(scored, cfg.threshold)["score"]

    def normalised(raw: float, pi: int) -> float:
        a_tp, _, a_fn = nab.PROFILES[profiles[pi]]
        null = -a_fn * sum(f.n_windows for f in prepared[profiles[pi]])
        perfect = a_tp * sum(f.n_labelled for f in prepared[profiles[pi]])
        return 100.0 * (raw - null) / (perfect - null)

    def best_on(files: np.ndarray, pi: int) -> int:
        return int(np.argmax(np.round(table[:, pi, files].sum(axis=1), 9)))  # ties: the first in grid order

    full = np.array([[normalised(table[ci, pi].sum(), pi) for pi in range(len(profiles))]
                     for ci in range(len(configs))])
    rng = np.random.default_rng(seed)
    everything = np.arange(len(keys))
    two_fold, chosen = np.zeros((splits, len(profiles))), Counter[int]()
    for split in range(splits):
        order = rng.permutation(everything)
        halves = (order[: len(keys) // 2], order[len(keys) // 2:])
        for pi in range(len(profiles)):
            held_out = 0.0
            for train, test in (halves, halves[::-1]):
                ci = best_on(train, pi)
                held_out += table[ci, pi, test].sum()
                chosen[ci] += pi == 0
            two_fold[split, pi] = normalised(held_out, pi)
    leave_one_out = [normalised(sum(table[best_on(np.delete(everything, fi), pi), pi, fi]
                                    for fi in everything), pi) for pi in range(len(profiles))]

    def settings(ci: int) -> dict[str, float]:
        return {name: getattr(configs[ci], name) for name in grid}

    best = int(np.argmax(full[:, 0]))
    return {
        "profiles": profiles, "configs": len(configs), "grid": {k: list(v) for k, v in grid.items()},
        "default": {"settings": settings(configs.index(base)), "scores": full[configs.index(base)].tolist()},
        "grid_best": {"settings": settings(best), "scores": full[best].tolist()},
        "grid_median": np.median(full, axis=0).tolist(),
        "grid_range": [float(full[:, 0].min()), float(full[:, 0].max())],
        "two_fold": {"splits": splits, "mean": two_fold.mean(axis=0).tolist(), "sd": two_fold.std(axis=0).tolist(),
                     "min": two_fold.min(axis=0).tolist(), "max": two_fold.max(axis=0).tolist()},
        "leave_one_out": leave_one_out,
        "chosen": [{"settings": settings(ci), "times": n} for ci, n in chosen.most_common(5)],
    }
