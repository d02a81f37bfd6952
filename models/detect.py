"""The detection entry point: canonical tables in, findings out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from spendwatch.findings import Finding, Hit
from spendwatch.records import Tables

from .config import DetectionConfig
from .features import Features, latest_time
from .fusion import fuse
from .iforest import RULE_ID as IFOREST_ID
from .iforest import anomaly_hits
from .rules import RULES


def run_detectors(tables: Tables, *, config: DetectionConfig | None = None, features: Features | None = None,
                  model: Any = None, now: datetime | None = None) -> list[Hit]:
    """Every registered rule and the isolation forest over one set of tables; the hits, unfused.

    `model` and `now` go to the forest (`iforest.anomaly_hits`): the organisation's model or where it is stored,
    and the scan time its baseline is judged by.
    """
    cfg = config or DetectionConfig()
    feats = features if features is not None else Features(tables)
    hits: list[Hit] = []
    for rule_id, rule_cls in RULES.items():
        if rule_id in cfg.disabled:
            continue
        hits.extend(rule_cls(cfg.rule_config(rule_id)).run(tables, feats))
    if IFOREST_ID not in cfg.disabled:
        hits.extend(anomaly_hits(feats, cfg.iforest, model=model, now=now))
    return hits


def detect(tables: Tables, *, config: DetectionConfig | None = None, now: datetime | None = None,
           model: Any = None, flow_summary: Any = None) -> list[Finding]:
    """Run every detector over `tables` and fuse their hits into findings, most severe first.

    `now` is the scan time (each finding's `detected_at`); by default the latest timestamp in the data.
    `model` is the organisation's baseline model: a `model_store.TrainedModel`, a `model_store.StoredModel`
    (loaded when fresh, retrained and saved when absent or stale), or None (a baseline trained in memory from
    these tables' history; see model_store). Only findings at or above `config.fusion.min_severity` (default
    low) are returned: info-level ones are single weak indicators and stay out of alerts.
    `flow_summary`: the scan's flows as `spendwatch.engine` summarised them (see `Features`), when `tables.flows`
    holds only the rows the rules read one by one.
    """
    cfg = config or DetectionConfig()
    features = Features(tables, flow_summary=flow_summary)
    scan_time = now or latest_time(tables) or datetime.now(UTC)
    hits = run_detectors(tables, config=cfg, features=features, model=model, now=scan_time)
    return fuse(hits, features, now=scan_time, config=cfg.fusion)
