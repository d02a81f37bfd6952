"""`spendwatch model train|show`: the organisation's baseline model, retrained on a schedule (models/model_store.py).

`model train --data DIR` reads local copies of the exports; `model train --config FILE` reads the live accounts of
the file's `[aws]` table without watermarks (it reads history and does not advance the scans'): S3-delivered
sources from the start of their buckets, CloudWatch sources from the start of the baseline window. Either way
the model is trained by the baseline policy (the trailing `baseline_days` ending `holdout_hours` before the
newest data, without the resources of open incidents and of findings marked expected in the state database)
and saved beside the state database, where every scan finds it. Scans retrain a stale
model on their own when their data holds enough history (`scan --data`); incremental live scans do not, so a
live deployment runs `model train --config` daily (`spendwatch serve` does: `Service.retrain_model`).

`model show` prints what the stored model was trained on. Exit codes: 0 done, 1 no data / no model / too little
history for a baseline, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _tables_from(data: Path | None, aws: dict[str, Any] | None) -> Any:
    """The canonical tables to train on: local exports, or the live `[aws]` accounts over the baseline window."""
    from .report import RunReport

    report = RunReport()
    if data is not None:
        from .connectors.files import read_directory

        if not data.is_dir():
            raise FileNotFoundError(f"{data}: no such directory")
        return read_directory(data, report)
    import dataclasses

    from .connectors.aws import AwsConfig, scan
    from .models.iforest import IForestConfig

    cfg = IForestConfig()
    hours = int(cfg.baseline_days * 24 + cfg.holdout_hours) + 1
    live = dataclasses.replace(AwsConfig.from_dict(aws or {}), initial_hours=hours)
    return scan(live, report, marks={}).tables


def retrain(*, state: Path | str, data: Path | None = None, config: str | None = None,
            aws: dict[str, Any] | None = None, now: datetime | None = None) -> Any:
    """Train the organisation's model from `data`, the `[aws]` table of the file `config`, or an `aws` table
    (serve's settings), and save it beside `state`.

    Returns the `TrainedModel`, or None when the window holds too little history for a baseline. `now` is the
    scan time the baseline is judged by (default: the wall clock, or the newest data if that is earlier).
    Raises FileNotFoundError (no data directory) and spendwatch.config.ConfigError (a bad or aws-less file).
    """
    from .config import ConfigError, load
    from .models.features import Features, resource_windows
    from .models.iforest import telemetry_time
    from .models.model_store import StoredModel
    from .store import Store

    if config is not None:
        doc = load(config)
        if "aws" not in doc:
            raise ConfigError(f"{config}: no [aws] table (the only live cloud `model train` reads so far)")
        aws = doc["aws"]
    tables = _tables_from(data, aws)
    when = now or datetime.now(UTC)
    newest = telemetry_time(tables)
    when = min(when, newest) if newest is not None else when
    with Store(state) as store:
        model = StoredModel.beside(store)
    if model is None:
        raise ConfigError(f"{state}: the model is kept beside a state database file; this state has none "
                          "(PostgreSQL or in memory)")
    return model.retrain(resource_windows(Features(tables), "1h"), now=when)


def describe(trained: Any, path: Path) -> dict[str, Any]:
    """What a person or a script needs to know about a stored model."""
    return {"path": str(path), "trained_at": trained.trained_at.isoformat() if trained.trained_at else None,
            "training_window": [trained.window_start.isoformat(), trained.window_end.isoformat()],
            "rows": trained.rows, "resources": trained.resources, "excluded_resources": trained.excluded,
            "features": list(trained.features), "format_version": trained.meta.get("format_version"),
            "spendwatch_version": trained.meta.get("spendwatch_version"),
            "sklearn_version": trained.meta.get("sklearn_version"),
            "threshold": round(float(trained.estimator.threshold_), 6),
            "novelty_threshold": round(float(getattr(trained.estimator, "novelty_threshold_", float("nan"))), 6)}


def cmd_model(args: argparse.Namespace) -> int:
    from .cli import EXIT_FATAL, EXIT_OK
    from .config import ConfigError
    from .models.model_store import MODEL_FILE, ModelFileError, load_model
    from .store import resolve_state

    state = resolve_state(args.state)
    if not isinstance(state, Path):
        print(f"spendwatch: error: model: the model is kept beside a state database file; {args.state or state!s} "
              "is not one", file=sys.stderr)
        return EXIT_FATAL
    path = state.with_name(MODEL_FILE)
    if args.action == "show":
        try:
            trained = load_model(path)
        except (ModelFileError, FileNotFoundError) as exc:
            print(f"spendwatch: error: model show: {exc}", file=sys.stderr)
            return EXIT_FATAL
    else:
        try:
            trained = retrain(state=state, data=Path(args.data).expanduser() if args.data else None,
                              config=args.config, now=args.now)
        except (FileNotFoundError, ConfigError) as exc:
            print(f"spendwatch: error: model train: {exc}", file=sys.stderr)
            return EXIT_FATAL
        if trained is None:
            print("spendwatch: error: model train: too little history for a baseline (see IForestConfig."
                  "min_baseline_rows, baseline_days, holdout_hours); nothing saved", file=sys.stderr)
            return EXIT_FATAL
        trained = load_model(path)  # describe what was written, as every scan will read it
    info = describe(trained, path)
    if args.json:
        json.dump(info, sys.stdout)
        print()
    else:
        print(f"model {info['path']}: trained for {info['trained_at']} on {info['rows']:,} resource-hours of "
              f"{info['resources']} resources ({info['excluded_resources']} left out), window "
              f"{info['training_window'][0]} to {info['training_window'][1]}; {len(info['features'])} features; "
              f"format {info['format_version']}, spendwatch {info['spendwatch_version']}, "
              f"scikit-learn {info['sklearn_version']}")
    return EXIT_OK


def add_commands(sub: Any) -> None:
    """Add `model` to the subparsers `sub` of the spendwatch parser."""
    from .replay_cli import _when

    p = sub.add_parser("model", help="train or show the organisation's baseline model (isolation forest)")
    p.add_argument("action", choices=("train", "show"))
    where = p.add_mutually_exclusive_group()
    where.add_argument("--data", metavar="DIR", help="train: directory holding the exports")
    where.add_argument("--config", metavar="FILE", help="train: TOML file naming live clouds ([aws])")
    p.add_argument("--state", metavar="PATH",
                   help="state database; the model is saved beside it (default: $SPENDWATCH_HOME/state.db)")
    p.add_argument("--now", type=_when, metavar="TIME", help="train: judge the baseline as of this time (ISO)")
    p.add_argument("--json", action="store_true", help="print the model's record as one JSON object")
    p.set_defaults(func=cmd_model_checked)


def cmd_model_checked(args: argparse.Namespace) -> int:
    if args.action == "train" and not (args.data or args.config):
        print("spendwatch: error: model train: give --data DIR or --config FILE", file=sys.stderr)
        return 2
    return cmd_model(args)
