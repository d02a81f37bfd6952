"""Train the isolation forest on an organisation's own baseline, and persist it with skops (never pickle).

A saved model is a skops file holding one dict: a format tag, the estimator, its training window, the feature
list, and the versions that produced it. Loading refuses anything else (another estimator's .skops, a
truncated or garbage file, a file needing types beyond the forest's own) with `ModelFileError`, so a wrong
path can never silently score with the wrong model. skops (unlike pickle) only rebuilds types it is told to
trust; we trust exactly the two non-default types our forest needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .features import KEY, RESOURCE_HOUR_FEATURES
from .iforest import LOG_FEATURES, ResourceHourForest

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


def to_matrix(rows: pd.DataFrame, features: Iterable[str] = RESOURCE_HOUR_FEATURES) -> np.ndarray:
    """Feature matrix of resource-window rows, byte and count features log-scaled as the forest expects."""
    names = list(features)
    X = rows[names].to_numpy(dtype="float64", copy=True)
    for i, name in enumerate(names):
        if name in LOG_FEATURES:
            X[:, i] = np.log1p(np.clip(X[:, i], 0, None))
    return X


def excluded_resources(store: Any) -> set[tuple[str, str, str]]:
    """(cloud, account, resource) of findings that are open incidents or marked expected in the store."""
    out: set[tuple[str, str, str]] = set()
    for status in ("open", "quarantined", "expected"):
        for f in store.findings(status=status):
            if f.resource:
                out.add((str(f.cloud), str(f.account), str(f.resource)))
    return out


def train_baseline(rows: pd.DataFrame, *, end: datetime | None = None, days: float = 14.0,
                   exclude: Iterable[tuple[str, str, str]] = (), features: Iterable[str] = RESOURCE_HOUR_FEATURES,
                   window_column: str = "hour", **params: Any) -> TrainedModel:
    """Fit a forest on the trailing `days` of resource-window rows ending at `end`, leaving out `exclude`.

    `rows` is `features.resource_hours(...)` (or any frame with KEY, `window_column` and the features) over
    the organisation's own history. `params` go to `ResourceHourForest` (alert_budget, random_state, ...).
    """
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
    model = ResourceHourForest(**params).fit(to_matrix(base, names))
    return TrainedModel(
        estimator=model, features=names, window_start=start.to_pydatetime(), window_end=stop.to_pydatetime(),
        rows=len(base), resources=int(base[KEY].drop_duplicates().shape[0]),
        excluded=len({k for k, out in zip(keys, left_out, strict=True) if out}), meta={},
    )


def save_model(trained: TrainedModel, path: str | Path) -> Path:
    """Write `trained` as a skops file; returns the path."""
    import sklearn
    import skops.io as sio

    from spendwatch import __version__

    doc = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "spendwatch_version": __version__,
        "sklearn_version": sklearn.__version__, "created_at": datetime.now(UTC).isoformat(),
        "training_window": [trained.window_start.isoformat(), trained.window_end.isoformat()],
        "features": list(trained.features), "rows": trained.rows, "resources": trained.resources,
        "excluded": trained.excluded, "estimator": trained.estimator,
    }
    target = Path(path)
    sio.dump(doc, target)
    return target


def load_model(path: str | Path) -> TrainedModel:
    """Read a model written by `save_model`; anything else raises `ModelFileError` saying why."""
    import skops.io as sio

    source = Path(path)
    try:
        untrusted = set(sio.get_untrusted_types(file=source))
    except Exception as exc:  # skops raises zipfile, JSON and key errors on files that are not skops files
        raise ModelFileError(f"{source}: not a spendwatch model (not a readable skops file: {exc})") from exc
    unexpected = untrusted - TRUSTED_TYPES
    if unexpected:
        raise ModelFileError(f"{source}: not a spendwatch model (it needs untrusted types {sorted(unexpected)})")
    try:
        doc = sio.load(source, trusted=sorted(untrusted))
    except Exception as exc:
        raise ModelFileError(f"{source}: not a spendwatch model (skops could not load it: {exc})") from exc
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
    meta = {k: v for k, v in doc.items() if k not in ("estimator",)}
    return TrainedModel(estimator=estimator, features=features, window_start=start, window_end=stop,
                        rows=int(doc["rows"]), resources=int(doc["resources"]), excluded=int(doc["excluded"]),
                        meta=meta)
