"""Resource windows of 10 minutes and 1 hour, and per principal and day (models/features.py)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from spendwatch.models.features import (
    PRINCIPAL_DAY_FEATURES,
    RESOURCE_HOUR_FEATURES,
    WINDOW_FEATURES,
    Features,
    principal_days,
    resource_hours,
    resource_windows,
)
from spendwatch.records import conform

TUNNEL = "198.51.100.7"  # documentation range: public here (see models/net.py)
API = "203.0.113.20"


def _long_lived(build, resource: str, peer: str, *, hours: float, bytes_per_window: int, local_port: int = 40001,
                remote_port: int = 443) -> list[dict]:
    """One connection held open: a record per direction in every 10-minute window, each lasting ~9.5 minutes."""
    rows = []
    for k in range(int(hours * 6)):
        start = build.at(10 * k + 0.1)
        end = start + timedelta(minutes=9.5)
        rows.append({"start": start, "end": end, "resource": resource, "src": "10.0.1.9", "dst": peer,
                     "src_port": local_port, "dst_port": remote_port, "packets": bytes_per_window // 1200,
                     "bytes": bytes_per_window, "direction": "egress"})
        rows.append({"start": start, "end": end, "resource": resource, "src": peer, "dst": "10.0.1.9",
                     "src_port": remote_port, "dst_port": local_port, "packets": 40, "bytes": 4000,
                     "direction": "ingress"})
    return rows


def _short_calls(build, resource: str, peer: str, *, minutes: list[float]) -> list[dict]:
    return [{"start": build.at(m), "end": build.at(m) + timedelta(seconds=2), "resource": resource,
             "src": "10.0.1.10", "dst": peer, "src_port": 50000, "dst_port": 443, "packets": 10, "bytes": 5000,
             "direction": "egress"} for m in minutes]


def _dns_answer(build, resource: str, query: str, address: str):
    frame = build.dns([(resource, query)])
    return frame.assign(answers=address)


@pytest.fixture
def tables(build):
    flows = build.flows(_long_lived(build, "i-tunnel", TUNNEL, hours=2, bytes_per_window=6_000_000)
                        + _short_calls(build, "i-api", API, minutes=[1, 25, 70]))
    util = pd.concat([build.util("i-tunnel", [88.0] * 60 + [97.0] * 60, metric="cpu_util"),
                      build.util("i-api", [20.0] * 120, metric="cpu_util")], ignore_index=True)
    spend = pd.concat([build.spend("i-tunnel", 0.6, 2, "m5.large"), build.spend("i-api", 0.12, 2, "m5.large")],
                      ignore_index=True)
    dns = _dns_answer(build, "i-api", "api.example.com", API)
    return build.tables(flows=flows, utilization=util, spend=spend, dns=dns)


def test_hourly_windows_carry_resource_hours_unchanged(tables) -> None:
    f = Features(tables)
    hours = resource_hours(f)
    windows = resource_windows(f, "1h")
    assert list(windows.columns) == ["cloud", "account", "resource", "window", *WINDOW_FEATURES]
    assert windows.rename(columns={"window": "hour"})[list(hours.columns)].equals(hours)
    assert list(hours.columns) == ["cloud", "account", "resource", "hour", *RESOURCE_HOUR_FEATURES]


def test_traffic_shape_features(tables) -> None:
    rows = resource_windows(Features(tables), "1h").set_index(["resource", "window"])
    tunnel = rows.loc["i-tunnel"].iloc[0]
    api = rows.loc["i-api"].iloc[0]
    # the tunnel: one peer in all six intervals, on a connection held open, to an address no DNS answer named
    assert tunnel["top_peer_persistence"] == 1.0 and tunnel["long_lived_share"] == 1.0
    assert tunnel["unnamed_share"] == 1.0 and tunnel["unnamed_long_lived_bytes"] == 6 * 6_004_000
    # the API calls: short, to a named peer, in two of the hour's six intervals
    assert api["top_peer_persistence"] == pytest.approx(2 / 6) and api["long_lived_share"] == 0.0
    assert api["unnamed_share"] == 0.0 and api["unnamed_long_lived_bytes"] == 0.0
    # CPU at 88 % is not at the ceiling; the next hour at 97 % is, all of it
    assert tunnel["time_at_ceiling"] == 0.0 and rows.loc["i-tunnel"].iloc[1]["time_at_ceiling"] == 1.0


def test_ten_minute_windows_and_the_hour_spread_over_them(tables) -> None:
    rows = resource_windows(Features(tables), "10min")
    tunnel = rows[rows["resource"] == "i-tunnel"].sort_values("window")
    assert len(tunnel) == 12 and (tunnel["window"].diff().dropna() == pd.Timedelta(minutes=10)).all()
    assert tunnel["spend_rate"].iloc[0] == pytest.approx(0.6 / 6)  # an hour's bill over its six windows
    assert tunnel["bytes_out"].iloc[0] == 6_000_000
    # persistence looks back an hour: the first window has seen the peer in one interval of six, the sixth in all
    assert list(tunnel["top_peer_persistence"].iloc[:6].round(4)) == [round(k / 6, 4) for k in range(1, 7)]
    with pytest.raises(ValueError, match="window must be one of"):
        resource_windows(Features(tables), "5min")


def test_empty_tables_give_empty_windows(build) -> None:
    empty = resource_windows(Features(build.tables()), "10min")
    assert len(empty) == 0 and list(empty.columns) == ["cloud", "account", "resource", "window", *WINDOW_FEATURES]


def test_principal_days(build) -> None:
    day = timedelta(days=1)
    act = build.activity([
        {"time": build.at(60), "principal": "arn:aws:iam::1:role/ml", "principal_type": "role",
         "resource": "i-1", "instance_type": "g5.12xlarge", "region": "us-east-1"},
        {"time": build.at(61), "principal": "arn:aws:iam::1:role/ml", "principal_type": "role",
         "resource": "i-2", "instance_type": "m5.large", "region": "us-east-1", "spot": True},
        {"time": build.at(62), "principal": "arn:aws:iam::1:role/ml", "principal_type": "role",
         "instance_type": "p4d.24xlarge", "region": "us-west-2", "error": "Client.VcpuLimitExceeded"},
        {"time": build.at(63), "principal": "arn:aws:iam::1:role/ml", "principal_type": "role",
         "action": "quota_lookup", "region": "us-west-2"},
        {"time": build.at(60) + day, "principal": "arn:aws:iam::1:role/ml", "principal_type": "role",
         "resource": "i-3", "instance_type": "g5.2xlarge", "region": "ap-southeast-1"},
        {"time": build.at(61) + day, "principal": "arn:aws:iam::1:role/ml", "principal_type": "role",
         "resource": "i-4", "instance_type": "g5.2xlarge", "region": "us-east-1"},
        {"time": build.at(62) + day, "principal": "arn:aws:iam::1:user/ops", "principal_type": "human",
         "action": "key_create", "resource": "AKIA1"},
    ])
    out = principal_days(Features(build.tables(activity=act)))
    assert list(out.columns) == ["cloud", "account", "principal", "day", *PRINCIPAL_DAY_FEATURES]
    ml = out[out["principal"].str.endswith("role/ml")].set_index("day").sort_index()
    first, second = ml.iloc[0], ml.iloc[1]
    assert (first["launches"], first["failed_launches"], first["instances"], first["gpus"]) == (2, 1, 2, 4)
    assert first["vcpus"] == 48 + 2 and first["spot_share"] == 0.5 and first["quota_calls"] == 1
    assert first["regions"] == 1 and first["new_regions"] == 1 and first["instance_types"] == 2
    # the next day: two regions, of which only ap-southeast-1 is new for the principal
    assert (second["launches"], second["regions"], second["new_regions"], second["gpus"]) == (2, 2, 1, 2)
    ops = out[out["principal"].str.endswith("user/ops")].iloc[0]
    assert ops["key_creates"] == 1 and ops["launches"] == 0
    assert np.isfinite(out[list(PRINCIPAL_DAY_FEATURES)].to_numpy()).all()
    assert len(principal_days(Features(build.tables()))) == 0


def test_principal_days_with_missing_principals_are_skipped(build) -> None:
    act = conform("activity", pd.DataFrame([{"time": build.at(0), "cloud": "aws", "account": "1", "action": "launch",
                                             "principal": None, "principal_type": "role"}]))
    assert len(principal_days(Features(build.tables(activity=act)))) == 0
