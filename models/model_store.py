"""Train the isolation forest on an organisation's own baseline, and persist it with skops (never pickle).

The baseline policy (`baseline_model`): the trailing `IForestConfig.baseline_days` of 1-hour resource-windows
ending `holdout_hours` before the scan (the newest day is what gets scored, so an incident that began in it is
not learned as normal), leaving out the resources of open incidents (medium or above) and of findings marked
expected (`excluded_resources(store)`). Too few rows for a baseline: None, and the forest falls back to the
scan's own rows.

`StoredModel` is the organisation's model as kept with its state: `resolve` loads it when it is fresh (trained
at most `max_model_age_hours` before the scan, by scan time, with today's feature list) and otherwise trains a
new one by the same policy and saves it; `spendwatch model train` does the same on a schedule (and `serve` calls
`retrain` once a day). Where it is kept (`StoredModel.beside(store)`): an SQLite state's model is the file
`model.skops` beside the database file; a PostgreSQL state has no file to sit beside, and its scheduled job and
its scans may run on different machines, so the same bytes go in the state's `models` table
(spendwatch.store.models). An in-memory state keeps no model.

A saved model is a skops file holding one dict: a format tag, the estimator, its training window, the hours of
history its rows actually cover (`history_hours`), when it was trained, the feature list, and the versions that
produced it. Loading refuses anything else (another estimator's .skops, a truncated or garbage file, a file
needing types beyond the forest's own) with `ModelFileError`, so a wrong path can never silently score with the
wrong model. skops (unlike pickle) only rebuilds types it is told to trust; we trust exactly the two non-default
types our forest needs. The bytes kept in a state's `models` table are the same skops file and go through the
same checks (`model_from_bytes`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .features import KEY, RESOURCE_HOUR_FEATURES, WINDOW_FEATURES
from .iforest import FEATURE_UNITS, LOG_FEATURES, IForestConfig

if TYPE_CHECKING:
    from .forest import ResourceHourForest

MODEL_FILE = "model.skops"  # beside the state database
MODEL_NAME = "baseline"  # its name in a state's `models` table (PostgreSQL states)

FORMAT = "spendwatch-model"
FORMAT_VERSION = 1
# skops trusts sklearn's own estimators by default; these are the only other types a saved forest contains.
TRUSTED_TYPES = frozenset({"sklearn.tree._tree.Tree", "spendwatch.models.iforest.ResourceHourForest"})


class ModelFileError(ValueError):
    """The file is not a spendwatch model (or not one this version can read)."""


@dataclass(frozen=True)
class TrainedModel:
    """A fitted forest with what it was trained on: needed to score, explain and audit it."""

    estimator: ResourceHourForest
    features: tuple[str, ...]
    window_start: datetime
    window_end: datetime
    rows: int
    resources: int
    excluded: int  # resources left out (open incidents, marked expected)
    meta: dict[str, Any]
    trained_at: datetime | None = None  # the scan time it was trained for (its age is judged by scan time)
    # Distinct clock hours holding at least one training row: the history the baseline has actually seen, which
    # can be far less than its window (the first model of a replay, a source switched on yesterday). None for a
    # model saved before this was recorded: `baseline_span` then estimates it from the rows.
    history_hours: float | None = None


def baseline_span(trained: TrainedModel) -> tuple[float, bool]:
    """(hours of history `trained`'s baseline covers, whether that is an estimate).

    Recorded at training. A model saved before it was recorded gets a lower bound from what its metadata has:
    each resource gives at most one row per hour, so the rows cover at least rows / resources distinct hours
    (and at most the window). Under-reading is the safe side: such a model loses only its medium-alone hits until
    the next retrain (at most `max_model_age_hours`) records the real span; over-reading would let a model of a
    few hours page on its own, which is what the span is there to stop.
    """
    if trained.history_hours is not None:
        return float(trained.history_hours), False
    window = (pd.Timestamp(trained.window_end) - pd.Timestamp(trained.window_start)) / pd.Timedelta(hours=1)
    return float(min(trained.rows / max(trained.resources, 1), window)), True


def to_matrix(rows: pd.DataFrame, features: Iterable[str] = RESOURCE_HOUR_FEATURES) -> np.ndarray:
    """Feature matrix of resource-window rows, byte and count features log-scaled as the forest expects."""
    names = list(features)
    X = rows[names].to_numpy(dtype="float64", copy=True)
    for i, name in enumerate(names):
        if name in LOG_FEATURES:
            X[:, i] = np.log1p(np.clip(X[:, i], 0, None))
    return X


def excluded_resources(store: Any) -> set[tuple[str, str, str]]:
    """(cloud, account, resource) to leave out of a baseline: open or quarantined incidents (findings at medium
    or above, with the resources a principal finding lists) and findings a person marked expected.

    Low findings are weak single indicators (a training box's saturation hit): leaving every one of them out
    would strip the baseline of exactly the busy resources it must know.
    """
    from spendwatch.findings import Severity

    out: set[tuple[str, str, str]] = set()
    for status, floor in (("open", Severity.MEDIUM), ("quarantined", Severity.INFO), ("expected", Severity.INFO)):
        for f in store.findings(status=status, min_severity=floor):
            for resource in ([f.resource] if f.resource else list(f.related)):
                out.add((str(f.cloud), str(f.account), str(resource)))
    return out


def train_baseline(rows: pd.DataFrame, *, end: datetime | None = None, days: float = 14.0,
                   exclude: Iterable[tuple[str, str, str]] = (), features: Iterable[str] = RESOURCE_HOUR_FEATURES,
                   window_column: str = "hour", **params: Any) -> TrainedModel:
    """Fit a forest on the trailing `days` of resource-window rows ending at `end`, leaving out `exclude`.

    `rows` is `features.resource_hours(...)` (or any frame with KEY, `window_column` and the features) over
    the organisation's own history. `params` go to `ResourceHourForest` (alert_budget, random_state, ...).
    `history_hours` counts the distinct clock hours the kept rows fall in, not first-to-last: three hours of flows
    at each end of a two-week window are six hours of history, not two weeks.
    """
    from .forest import ResourceHourForest

    names = tuple(features)
    times = pd.to_datetime(rows[window_column], utc=True)
    stop = pd.Timestamp(end) if end is not None else times.max()
    stop = stop.tz_localize(UTC) if stop.tzinfo is None else stop
    start = stop - pd.Timedelta(days=days)
    in_window = (times > start) & (times <= stop)
    skip = set(exclude)
    keys = list(zip(rows["cloud"].astype(str), rows["account"].astype(str), rows["resource"].astype(str),
                    strict=True))
    left_out = np.array([k in skip for k in keys], dtype=bool)
    base = rows[in_window.to_numpy() & ~left_out]
    if not len(base):
        raise ValueError(f"no baseline rows between {start} and {stop} after leaving out {len(skip)} resources")
    if "novelty_units" not in params and set(names) <= set(FEATURE_UNITS):
        params["novelty_units"] = tuple(FEATURE_UNITS[n] for n in names)
    model = ResourceHourForest(**params).fit(to_matrix(base, names))
    return TrainedModel(
        estimator=model, features=names, window_start=start.to_pydatetime(), window_end=stop.to_pydatetime(),
        rows=len(base), resources=int(base[KEY].drop_duplicates().shape[0]),
        excluded=len({k for k, out in zip(keys, left_out, strict=True) if out}), meta={},
        history_hours=float(times[in_window.to_numpy() & ~left_out].dt.floor("h").nunique()),
    )


def baseline_model(rows: pd.DataFrame, *, now: datetime, config: IForestConfig | None = None,
                   exclude: Iterable[tuple[str, str, str]] = ()) -> TrainedModel | None:
    """The baseline a scan at `now` is scored against (module docstring), or None when the trailing window
    holds fewer than `config.min_baseline_rows` resource-hours. `rows` is `features.resource_windows(f, "1h")`.
    """
    cfg = config or IForestConfig()
    end = pd.Timestamp(now) - pd.Timedelta(hours=cfg.holdout_hours)
    end = end.tz_localize(UTC) if end.tzinfo is None else end
    times = pd.to_datetime(rows["window"], utc=True)
    skip = set(exclude)
    inside = (times > end - pd.Timedelta(days=cfg.baseline_days)) & (times <= end)
    if skip:
        keys = zip(rows["cloud"].astype(str), rows["account"].astype(str), rows["resource"].astype(str), strict=True)
        inside &= ~np.fromiter((k in skip for k in keys), dtype=bool, count=len(rows))
    if int(inside.sum()) < cfg.min_baseline_rows:
        return None
    trained = train_baseline(rows, end=end.to_pydatetime(), days=cfg.baseline_days, exclude=skip,
                             features=WINDOW_FEATURES, window_column="window", n_estimators=cfg.n_estimators,
                             max_samples=cfg.max_samples, random_state=cfg.random_state, n_jobs=cfg.n_jobs,
                             alert_budget=cfg.alert_budget, novelty_floor=cfg.novelty_floor)
    now_ts = pd.Timestamp(now)
    return dataclasses.replace(trained, trained_at=(now_ts.tz_localize(UTC) if now_ts.tzinfo is None
                                                    else now_ts).to_pydatetime())


def is_fresh(trained: TrainedModel, now: datetime, config: IForestConfig | None = None) -> bool:
    """Whether a scan at `now` may score with `trained`: today's feature list, trained at most
    `max_model_age_hours` before `now` by scan time, and not trained for a scan more than an hour later than this
    one (a replay of older data must not score with a model that has seen its future; an hour absorbs the
    spread of the newest record's time from one scan to the next). A baseline of less history than
    `min_baseline_hours` (which cannot raise medium on its own) is fresh for an hour only: retrained as the
    history grows, it can page as soon as a day of it is there, not a day after that."""
    cfg = config or IForestConfig()
    if trained.trained_at is None or tuple(trained.features) != tuple(WINDOW_FEATURES):
        return False
    age = pd.Timestamp(now) - pd.Timestamp(trained.trained_at)
    limit = cfg.max_model_age_hours
    if baseline_span(trained)[0] < cfg.min_baseline_hours:
        limit = min(limit, 1.0)
    return -timedelta(hours=1) <= age <= timedelta(hours=limit)


@dataclass
class StoredModel:
    """The organisation's model: loaded when fresh, else retrained by the baseline policy (and saved).

    Kept in the file `path`, or in a state's `models` table (`records`, a `spendwatch.store.ModelRecords`: for
    PostgreSQL states); with neither it lives in memory only (a replay retrains it as the days go by, as a
    schedule would). `exclude` is what to leave out of a baseline (`excluded_resources(store)`). `last` says what
    the most recent `resolve` did ("loaded", "trained", "kept stale": too little history to retrain, "none": no
    model).
    """

    path: Path | None = None
    exclude: frozenset[tuple[str, str, str]] = frozenset()
    last: str = field(default="none", compare=False)
    current: TrainedModel | None = field(default=None, compare=False, repr=False)
    records: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def beside(cls, store: Any) -> StoredModel | None:
        """The model kept with a store: the file next to an SQLite state's database, the `models` table of a
        PostgreSQL state; None for an in-memory store (there is nowhere to keep it)."""
        where = getattr(store, "path", None)
        if where is not None and str(where) != ":memory:":
            return cls(Path(where).with_name(MODEL_FILE), frozenset(excluded_resources(store)))
        if getattr(store, "dialect", None) == "postgres":
            from spendwatch.store import ModelRecords

            return cls(None, frozenset(excluded_resources(store)), records=ModelRecords(store))
        return None

    @property
    def where(self) -> str:
        """Where the model is kept, for messages: the file, the state's table, or "memory"."""
        if self.path is not None:
            return str(self.path)
        return self.records.where if self.records is not None else "memory"

    def load(self) -> TrainedModel | None:
        """The saved model, or None when none was saved yet; ModelFileError when what is there is not one."""
        if self.path is not None:
            return load_model(self.path) if self.path.exists() else None
        if self.records is not None:
            blob = self.records.get(MODEL_NAME)
            return model_from_bytes(blob.data, source=self.where) if blob is not None else None
        return None

    def resolve(self, rows: pd.DataFrame, *, now: datetime, config: IForestConfig | None = None) -> TrainedModel | None:
        current = self.current if self.current is not None else self.load()
        if current is not None and is_fresh(current, now, config):
            self.current, self.last = current, "loaded"
            return current
        trained = self.retrain(rows, now=now, config=config)
        if trained is None and current is not None and tuple(current.features) == tuple(WINDOW_FEATURES):
            self.current, self.last = current, "kept stale"  # the last baseline beats none (incremental scans)
            return current
        return trained

    def retrain(self, rows: pd.DataFrame, *, now: datetime, config: IForestConfig | None = None) -> TrainedModel | None:
        """Train by the baseline policy and save (replacing the old one atomically); None when history is too
        short."""
        trained = baseline_model(rows, now=now, config=config, exclude=self.exclude)
        if trained is None:
            self.last = "none"
            return None
        if self.path is not None:
            save_model(trained, self.path)
        elif self.records is not None:
            doc = _document(trained)
            self.records.put(MODEL_NAME, _skops_bytes(doc), metadata=_metadata(doc), now=datetime.now(UTC))
        self.current, self.last = trained, "trained"
        return trained


def _document(trained: TrainedModel) -> dict[str, Any]:
    """What a saved model holds (module doc)."""
    import sklearn

    from spendwatch import __version__

    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "spendwatch_version": __version__,
        "sklearn_version": sklearn.__version__, "created_at": datetime.now(UTC).isoformat(),
        "trained_at": trained.trained_at.isoformat() if trained.trained_at is not None else None,
        "training_window": [trained.window_start.isoformat(), trained.window_end.isoformat()],
        "history_hours": trained.history_hours,
        "features": list(trained.features), "rows": trained.rows, "resources": trained.resources,
        "excluded": trained.excluded, "estimator": trained.estimator,
    }


def _metadata(doc: dict[str, Any]) -> dict[str, Any]:
    """A saved model's document without the estimator: what a person reading the state's table can see."""
    return {k: v for k, v in doc.items() if k != "estimator"}


def save_model(trained: TrainedModel, path: str | Path) -> Path:
    """Write `trained` as a skops file; returns the path."""
    import skops.io as sio

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    sio.dump(_document(trained), partial)
    os.replace(partial, target)  # a reader never sees half a model, and a crash mid-write leaves the old one
    return target


def model_bytes(trained: TrainedModel) -> bytes:
    """`trained` as the bytes of a skops file (what `save_model` writes), to keep in a state's table."""
    return _skops_bytes(_document(trained))


def _skops_bytes(doc: dict[str, Any]) -> bytes:
    import skops.io as sio

    return bytes(sio.dumps(doc))


def load_model(path: str | Path) -> TrainedModel:
    """Read a model written by `save_model`; anything else raises `ModelFileError` saying why."""
    import skops.io as sio

    source = Path(path)
    try:
        untrusted = set(sio.get_untrusted_types(file=source))
    except Exception as exc:  # skops raises zipfile, JSON and key errors on files that are not skops files
        raise ModelFileError(f"{source}: not a spendwatch model (not a readable skops file: {exc})") from exc
    _refuse_untrusted(untrusted, str(source))
    try:
        doc = sio.load(source, trusted=sorted(untrusted))
    except Exception as exc:
        raise ModelFileError(f"{source}: not a spendwatch model (skops could not load it: {exc})") from exc
    return _from_document(doc, str(source))


def model_from_bytes(data: bytes, *, source: str) -> TrainedModel:
    """Read a model from the bytes of a skops file (`model_bytes`), with exactly the checks of `load_model`;
    `source` names where the bytes came from in errors."""
    import skops.io as sio

    try:
        untrusted = set(sio.get_untrusted_types(data=data))
    except Exception as exc:
        raise ModelFileError(f"{source}: not a spendwatch model (not a readable skops file: {exc})") from exc
    _refuse_untrusted(untrusted, source)
    try:
        doc = sio.loads(data, trusted=sorted(untrusted))
    except Exception as exc:
        raise ModelFileError(f"{source}: not a spendwatch model (skops could not load it: {exc})") from exc
    return _from_document(doc, source)


def _refuse_untrusted(untrusted: set[str], source: str) -> None:
    unexpected = untrusted - TRUSTED_TYPES
    if unexpected:
        raise ModelFileError(f"{source}: not a spendwatch model (it needs untrusted types {sorted(unexpected)})")


def _from_document(doc: Any, source: str) -> TrainedModel:
    """The TrainedModel a loaded skops document holds; ModelFileError when it is not a spendwatch model."""
    from .forest import ResourceHourForest

    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelFileError(f"{source}: not a spendwatch model (a skops file holding {type(doc).__name__})")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"{source}: spendwatch model format {doc.get('format_version')} is not supported "
                             f"(this version reads {FORMAT_VERSION})")
    estimator = doc.get("estimator")
    features = tuple(doc.get("features") or ())
    if not isinstance(estimator, ResourceHourForest) or getattr(estimator, "n_features_in_", -1) != len(features):
        raise ModelFileError(f"{source}: spendwatch model is damaged (estimator and feature list disagree)")
    start, stop = (datetime.fromisoformat(t) for t in doc["training_window"])
    meta = _metadata(doc)
    trained_at = datetime.fromisoformat(doc["trained_at"]) if doc.get("trained_at") else None
    hours = doc.get("history_hours")  # absent from models saved before it was recorded: see `baseline_span`
    if hours is not None and (isinstance(hours, bool) or not isinstance(hours, int | float) or not hours >= 0):
        raise ModelFileError(f"{source}: spendwatch model is damaged (history_hours is {hours!r}, not hours >= 0)")
    return TrainedModel(estimator=estimator, features=features, window_start=start, window_end=stop,
                        rows=int(doc["rows"]), resources=int(doc["resources"]), excluded=int(doc["excluded"]),
                        meta=meta, trained_at=trained_at,
                        history_hours=float(hours) if hours is not None else None)
