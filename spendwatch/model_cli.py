"""`spendwatch model train|show`: the organisation's baseline model, retrained on a schedule (models/model_store.py).

`model train --data DIR` reads local copies of the exports; `model train --config FILE` reads the live clouds of
the file's `[aws]`, `[gcp]` and `[azure]` tables without watermarks (it reads history and does not advance the
scans'): bucket-delivered sources (S3, Cloud Storage, Blob storage) from the start of their buckets, AWS's
CloudWatch sources from the start of the baseline window. Either way the model is trained by the baseline policy
(the trailing `baseline_days` ending `holdout_hours` before the newest data, without the resources of open
incidents and of findings marked expected in the state database) and kept with the state, where every scan
finds it: beside an SQLite state's file, in a PostgreSQL state's `models` table. Scans retrain a stale model on
their own when their data holds enough history (`scan --data`); incremental live scans do not, so a live
deployment runs `model train --config` daily (`spendwatch serve` does: `Service.retrain_model`).

`model show` prints what the stored model was trained on. Exit codes: 0 done, 1 no data / no model / too little
history for a baseline, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _tables_from(data: Path | None, live: Mapping[str, Any] | None,
                 credentials: Mapping[str, Any] | None = None, flows: Any = None) -> Any:
    """The canonical tables to train on: local exports, or the live clouds over the baseline window. With
    `flows` (a FlowEngine), flow records go to it as they are read: two weeks of an organisation's flow logs
    would not fit in memory as records."""
    from .report import RunReport

    report = RunReport()
    if data is not None:
        from .connectors.files import read_directory

        if not data.is_dir():
            raise FileNotFoundError(f"{data}: no such directory")
        return read_directory(data, report, flows=flows)
    return _live_tables(live or {}, report, credentials or {}, flows)


def _live_tables(live: Mapping[str, Any], report: Any, credentials: Mapping[str, Any], flows: Any = None) -> Any:
    """Every configured cloud read without watermarks (`live`: "aws"/"gcp"/"azure" -> its connector's settings).

    API sources (AWS CloudWatch, cloud monitoring APIs) start `initial_hours` back on a first read, so every
    connector that has that setting is asked for the baseline window; bucket sources are listed from their start
    when there is no watermark; a warehouse that reduces the flows (`[aws.athena]`, `[gcp.bigquery]`), whose
    scans ask for their trailing `window_hours`, is asked for the baseline window too."""
    import dataclasses
    from importlib import import_module

    from .models.iforest import IForestConfig
    from .records import Tables

    cfg = IForestConfig()
    hours = int(cfg.baseline_days * 24 + cfg.holdout_hours) + 1
    parts: dict[str, list[Any]] = {}
    for cloud, config in live.items():
        connector = import_module(f"{__package__}.connectors.{cloud}")
        if "initial_hours" in {f.name for f in dataclasses.fields(config)}:
            config = dataclasses.replace(config, initial_hours=hours)
        for name in ("athena", "bigquery"):  # [aws.athena], [gcp.bigquery]
            warehouse = getattr(config, name, None)
            if warehouse is not None and warehouse.window_hours < hours:
                config = dataclasses.replace(config, **{name: dataclasses.replace(warehouse, window_hours=hours)})
        extra = {"credential": credentials[cloud]} if cloud in credentials else {}
        got = connector.scan(config, report, marks={}, flows=flows, **extra)
        for name, frame in got.tables.items():
            parts.setdefault(name, []).append(frame)
    return Tables.concat(parts)


def live_settings(*, config: str | None = None, aws: dict[str, Any] | None = None) -> dict[str, Any]:
    """The live clouds to train on: the `[aws]`, `[gcp]` and `[azure]` tables of the file `config`, or an `aws`
    table (serve's settings), each as its connector's settings. ConfigError for a bad file or one with none."""
    from .config import ConfigError

    if config is not None:
        from .aws_cli import live_configs

        try:
            return live_configs(config)
        except ConfigError as exc:
            if "no [aws], [gcp] or [azure] table" in str(exc):
                raise ConfigError(f"{config}: no [aws] table, nor [gcp] or [azure]: no live cloud to train "
                                  "the model on") from None
            raise
    from .connectors.aws import AwsConfig

    return {"aws": AwsConfig.from_dict(aws or {})}


def retrain(*, state: Path | str, data: Path | None = None, config: str | None = None,
            aws: dict[str, Any] | None = None, live: Mapping[str, Any] | None = None,
            credentials: Mapping[str, Any] | None = None, now: datetime | None = None) -> Any:
    """Train the organisation's model from `data`, the live clouds of the file `config`, an `aws` table, or
    `live` (cloud -> connector settings: serve's), and keep it with `state` (`StoredModel.beside`).

    Returns the `TrainedModel`, or None when the window holds too little history for a baseline. `now` is the
    scan time the baseline is judged by (default: the wall clock, or the newest data if that is earlier).
    `credentials` go to the connectors that take one (Azure). Raises FileNotFoundError (no data directory) and
    spendwatch.config.ConfigError (a bad file, one without a live cloud, or a state that keeps no model).
    """
    from .config import ConfigError
    from .engine.flows import FlowEngine
    from .models.features import Features, resource_windows
    from .models.iforest import telemetry_time
    from .models.model_store import StoredModel
    from .store import Store, describe

    if data is None and live is None:
        live = live_settings(config=config, aws=aws)
    with FlowEngine() as engine:  # the flows of the baseline window, reduced as they are read
        tables = _tables_from(data, live, credentials, flows=engine)
        summary = engine.summary(tables) if engine.records else None
        if summary is not None:
            tables.flows = summary.rows  # the rule rows, which include the latest record's: telemetry_time holds
        rows = resource_windows(Features(tables, flow_summary=summary), "1h")
    when = now or datetime.now(UTC)
    newest = telemetry_time(tables)
    when = min(when, newest) if newest is not None else when
    with Store(state) as store:
        model = StoredModel.beside(store)
        if model is None:
            raise ConfigError(f"{describe(state)}: an in-memory state keeps no model; give a state file or a "
                              "PostgreSQL URL")
        return model.retrain(rows, now=when)


def describe(trained: Any, where: Path | str) -> dict[str, Any]:
    """What a person or a script needs to know about a stored model (`path`: where it is kept: a file, or the
    state's table)."""
    from .models.model_store import baseline_span

    history, estimated = baseline_span(trained)  # below IForestConfig.min_baseline_hours its hits stay weak
    return {"path": str(where), "trained_at": trained.trained_at.isoformat() if trained.trained_at else None,
            "training_window": [trained.window_start.isoformat(), trained.window_end.isoformat()],
            "history_hours": round(history, 1), "history_hours_estimated": estimated,
            "rows": trained.rows, "resources": trained.resources, "excluded_resources": trained.excluded,
            "features": list(trained.features), "format_version": trained.meta.get("format_version"),
            "spendwatch_version": trained.meta.get("spendwatch_version"),
            "sklearn_version": trained.meta.get("sklearn_version"),
            "threshold": round(float(trained.estimator.threshold_), 6),
            "novelty_threshold": round(float(getattr(trained.estimator, "novelty_threshold_", float("nan"))), 6)}


def cmd_model(args: argparse.Namespace) -> int:
    from .cli import EXIT_FATAL, EXIT_OK
    from .config import ConfigError
    from .models.model_store import ModelFileError
    from .store import StoreError, resolve_state

    try:  # as `serve` with the same file: --state, the environment, then its [serve] state
        state = resolve_state(args.state, configured=_configured_state(args.config))
    except (ConfigError, StoreError) as exc:
        print(f"spendwatch: error: model {args.action}: {exc}", file=sys.stderr)
        return EXIT_FATAL
    if args.action == "train":
        try:
            trained = retrain(state=state, data=Path(args.data).expanduser() if args.data else None,
                              config=args.config, now=args.now)
        except (FileNotFoundError, ConfigError, StoreError) as exc:
            print(f"spendwatch: error: model train: {exc}", file=sys.stderr)
            return EXIT_FATAL
        if trained is None:
            print("spendwatch: error: model train: too little history for a baseline (see IForestConfig."
                  "min_baseline_rows, baseline_days, holdout_hours); nothing saved", file=sys.stderr)
            return EXIT_FATAL
    try:  # describe what was written (after train), as every scan will read it
        trained, where = _stored(state)
    except (ModelFileError, FileNotFoundError, StoreError) as exc:
        print(f"spendwatch: error: model {args.action}: {exc}", file=sys.stderr)
        return EXIT_FATAL
    info = describe(trained, where)
    if args.json:
        json.dump(info, sys.stdout)
        print()
    else:
        print(f"model {info['path']}: trained for {info['trained_at']} on {info['rows']:,} resource-hours of "
              f"{info['resources']} resources ({info['excluded_resources']} left out), window "
              f"{info['training_window'][0]} to {info['training_window'][1]} holding "
              f"{'at least ' if info['history_hours_estimated'] else ''}{info['history_hours']:g} h of history; "
              f"{len(info['features'])} features; "
              f"format {info['format_version']}, spendwatch {info['spendwatch_version']}, "
              f"scikit-learn {info['sklearn_version']}")
    return EXIT_OK


def _configured_state(config: str | None) -> str | None:
    """`[serve] state` of the configuration file, if it names one (ConfigError for a non-string)."""
    from .config import ConfigError, section

    if config is None:
        return None
    serve = section(config, "serve") or {}
    state = serve.get("state")
    if state is not None and (not isinstance(state, str) or not state.strip()):
        raise ConfigError(f"{config}: [serve] state: must be a non-empty string, not {state!r}")
    return state


def _stored(state: Path | str) -> tuple[Any, str]:
    """(the model kept with `state`, where it is kept); FileNotFoundError when there is none."""
    from .models.model_store import StoredModel
    from .store import Store, describe

    if isinstance(state, Path) and not state.exists():
        raise FileNotFoundError(f"{state}: no such state file, so no model beside it")
    with Store(state) as store:
        model = StoredModel.beside(store)
        if model is None:
            raise FileNotFoundError(f"{describe(state)}: an in-memory state keeps no model")
        trained = model.load()
        if trained is None:
            raise FileNotFoundError(f"{model.where}: no model saved yet (spendwatch model train)")
        return trained, model.where


def add_commands(sub: Any) -> None:
    """Add `model` to the subparsers `sub` of the spendwatch parser."""
    from .replay_cli import _when

    p = sub.add_parser("model", help="train or show the organisation's baseline model (isolation forest)")
    p.add_argument("action", choices=("train", "show"))
    where = p.add_mutually_exclusive_group()
    where.add_argument("--data", metavar="DIR", help="train: directory holding the exports")
    where.add_argument("--config", metavar="FILE", help="train: TOML file naming live clouds ([aws], [gcp], [azure]); "
                                                        "its [serve] state is the default state")
    p.add_argument("--state", metavar="PATH|URL",
                   help="state: a file (the model is saved beside it) or a postgresql:// URL (the model is kept in "
                        "it); default: $SPENDWATCH_STATE, $SPENDWATCH_DATABASE_URL, the --config file's [serve] "
                        "state, then $SPENDWATCH_HOME/state.db")
    p.add_argument("--now", type=_when, metavar="TIME", help="train: judge the baseline as of this time (ISO)")
    p.add_argument("--json", action="store_true", help="print the model's record as one JSON object")
    p.set_defaults(func=cmd_model_checked)


def cmd_model_checked(args: argparse.Namespace) -> int:
    if args.action == "train" and not (args.data or args.config):
        print("spendwatch: error: model train: give --data DIR or --config FILE", file=sys.stderr)
        return 2
    return cmd_model(args)
