"""Builders for small canonical frames (through spendwatch.records.conform) shared by the model tests."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from spendwatch.records import Tables, conform

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
CLOUD, ACCOUNT, REGION = "aws", "012345678901", "us-east-1"


class Build:
    """Plain functions that return conformed canonical frames; times are minutes after T0."""

    T0 = T0
    CLOUD, ACCOUNT, REGION = CLOUD, ACCOUNT, REGION

    @staticmethod
    def at(minutes: float) -> datetime:
        return T0 + timedelta(minutes=minutes)

    @staticmethod
    def tables(**frames: pd.DataFrame) -> Tables:
        return Tables(**frames)

    @staticmethod
    def util(resource: str, values: Iterable[float], *, metric: str = "gpu_util", step_min: float = 1.0,
             start_min: float = 0.0, devices: int = 1) -> pd.DataFrame:
        vals = list(values)
        rows = [
            {"time": Build.at(start_min + i * step_min), "cloud": CLOUD, "account": ACCOUNT, "region": REGION,
             "resource": resource, "metric": metric, "device": str(d), "value": v}
            for i, v in enumerate(vals) for d in range(devices)
        ]
        return conform("utilization", pd.DataFrame(rows))

    @staticmethod
    def flows(rows: list[dict[str, Any]]) -> pd.DataFrame:
        base = {"cloud": CLOUD, "account": ACCOUNT, "region": REGION, "protocol": 6, "action": "ACCEPT"}
        out = []
        for r in rows:
            row = {**base, **r}
            row.setdefault("end", row["start"] + timedelta(minutes=1))
            out.append(row)
        return conform("flows", pd.DataFrame(out))

    @staticmethod
    def steady_flows(resource: str, peer: str, port: int, *, hours: float, step_min: float = 1.0,
                     bytes_per_min: float = 3000, bytes_per_packet: float = 125, local: str = "10.0.1.5",
                     start_min: float = 0.0) -> list[dict[str, Any]]:
        """A miner-like session: one egress and one ingress record per step, tiny packets."""
        rows = []
        n = int(hours * 60 / step_min)
        for i in range(n):
            t = Build.at(start_min + i * step_min)
            half = bytes_per_min * step_min / 2
            pk = max(1, round(half / bytes_per_packet))
            rows.append({"start": t, "resource": resource, "src": local, "dst": peer, "src_port": 40000,
                         "dst_port": port, "packets": pk, "bytes": int(half), "direction": "egress"})
            rows.append({"start": t, "resource": resource, "src": peer, "dst": local, "src_port": port,
                         "dst_port": 40000, "packets": pk, "bytes": int(half), "direction": "ingress"})
        return rows

    @staticmethod
    def dns(rows: list[tuple[str, str]], start_min: float = 0.0) -> pd.DataFrame:
        """(resource, query) pairs, one minute apart."""
        data = [{"time": Build.at(start_min + i), "cloud": CLOUD, "account": ACCOUNT, "region": REGION,
                 "resource": r, "query": q, "qtype": "A"} for i, (r, q) in enumerate(rows)]
        return conform("dns", pd.DataFrame(data))

    @staticmethod
    def activity(rows: list[dict[str, Any]]) -> pd.DataFrame:
        base = {"cloud": CLOUD, "account": ACCOUNT, "region": REGION, "action": "launch"}
        return conform("activity", pd.DataFrame([{**base, **r} for r in rows]))

    @staticmethod
    def inventory(rows: list[dict[str, Any]]) -> pd.DataFrame:
        base = {"cloud": CLOUD, "account": ACCOUNT, "region": REGION, "state": "running"}
        out = []
        for r in rows:
            row = {**base, **r}
            if isinstance(row.get("tags"), dict):
                row["tags"] = json.dumps(row["tags"])
            out.append(row)
        return conform("inventory", pd.DataFrame(out))

    @staticmethod
    def spend(resource: str, cost: float, hours: int, instance_type: str = "g5.12xlarge") -> pd.DataFrame:
        rows = [{"hour": Build.at(60 * h), "cloud": CLOUD, "account": ACCOUNT, "region": REGION,
                 "service": "AmazonEC2", "usage_type": f"BoxUsage:{instance_type}", "resource": resource,
                 "cost_usd": cost, "pricing": "on_demand"} for h in range(hours)]
        return conform("spend", pd.DataFrame(rows))

    @staticmethod
    def training_gpu(hours: float, *, period_min: int = 60, dip_min: int = 4, seed: int = 0) -> list[float]:
        """~98 % with a dip to ~30 % for `dip_min` minutes every `period_min` (evaluation, checkpoints)."""
        rng = np.random.default_rng(seed)
        n = int(hours * 60)
        vals = 98 + rng.normal(0, 0.8, n)
        for i in range(n):
            if i % period_min >= period_min - dip_min:
                vals[i] = 30 + rng.normal(0, 5)
        return [float(min(100.0, v)) for v in vals]


@pytest.fixture
def build() -> type[Build]:
    return Build
