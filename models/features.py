"""Derived views of the canonical tables that several detectors share, each computed once per scan.

`Features` wraps one `Tables` and computes views lazily: flows with their resource resolved and their remote
peer and its publicness worked out, utilisation series per resource, an inventory index, and the
resource-hour matrix the isolation forest scores. Rules take `(tables, features)`; passing only tables is
fine, a rule then builds its own `Features`. Nothing here decides whether anything is abuse.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import cached_property

import numpy as np
import pandas as pd

from spendwatch.records import Tables

from .net import is_public

KEY = ["cloud", "account", "resource"]


def _tags(text: object) -> dict[str, str]:
    if not isinstance(text, str) or not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    if isinstance(data, dict):
        return {str(k): str(v) for k, v in data.items()}
    if isinstance(data, list):  # AWS style [{"Key": ..., "Value": ...}]
        return {str(d.get("Key")): str(d.get("Value")) for d in data if isinstance(d, dict)}
    return {}


def group_codes(*columns: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Dense int64 group codes for the row-wise combination of `columns`, and each group's first row.

    Factorising each column and mixing the codes arithmetically is several times faster than factorising
    a MultiIndex of strings, which matters on millions of flow rows. Missing values form their own group.
    """
    combined = np.zeros(len(columns[0]), dtype="int64")
    for col in columns:
        codes, uniques = pd.factorize(col, use_na_sentinel=False)
        combined = combined * (len(uniques) + 1) + codes
    _, first, dense = np.unique(combined, return_index=True, return_inverse=True)
    return dense.astype("int64"), first


def latest_time(tables: Tables) -> datetime | None:
    """The latest timestamp anywhere in the tables (the default scan time)."""
    candidates = []
    for frame, col in ((tables.flows, "end"), (tables.dns, "time"), (tables.utilization, "time"),
                       (tables.activity, "time"), (tables.spend, "hour"), (tables.inventory, "launched_at")):
        if len(frame) and col in frame:
            value = frame[col].max()
            if pd.notna(value):
                candidates.append(value)
    return max(candidates).to_pydatetime() if candidates else None


class Features:
    """Lazily computed shared views of one set of canonical tables."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables

    # ---- inventory ------------------------------------------------------------------------------------
    @cached_property
    def inventory(self) -> pd.DataFrame:
        """One row per (cloud, account, resource): the latest inventory row, with tags parsed."""
        inv = self.tables.inventory
        if not len(inv):
            return inv.assign(tag_map=pd.Series(dtype=object)).set_index(KEY)
        inv = inv.sort_values("launched_at", na_position="first").drop_duplicates(KEY, keep="last")
        inv = inv.assign(tag_map=[_tags(t) for t in inv["tags"]])  # inventory is small: a loop is fine
        return inv.set_index(KEY)

    def _address_map(self, column: str) -> pd.DataFrame:
        inv = self.tables.inventory
        if not len(inv):
            return pd.DataFrame(columns=["cloud", "account", "key", "resource"])
        part = inv[["cloud", "account", "resource", column]].dropna(subset=[column])
        part = part.assign(key=part[column].str.split()).explode("key").dropna(subset=["key"])
        return part[["cloud", "account", "key", "resource"]].drop_duplicates(["cloud", "account", "key"])

    def _fill_resource(self, frame: pd.DataFrame, keys: list[str]) -> pd.Series:
        """Resource column with gaps filled from inventory interfaces or private addresses."""
        resource = frame["resource"]
        missing = resource.isna()
        if not missing.any() or not len(self.tables.inventory):
            return resource
        resource = resource.copy()
        for key_col, inv_col in keys:
            if key_col not in frame or not missing.any():
                continue
            lookup = self._address_map(inv_col)
            if not len(lookup):
                continue
            sub = frame.loc[missing, ["cloud", "account", key_col]].rename(columns={key_col: "key"})
            merged = sub.merge(lookup, on=["cloud", "account", "key"], how="left")
            merged.index = sub.index
            resource.loc[missing] = merged["resource"]
            missing = resource.isna()
        return resource

    # ---- flows ----------------------------------------------------------------------------------------
    @cached_property
    def flows(self) -> pd.DataFrame:
        """Flows seen from the resource's side.

        Columns: cloud, account, region, resource, remote, remote_port, local_port, start, end, bytes,
        packets, inbound (the record carries bytes towards the resource), remote_public, rejected.
        The remote end is dst for egress and src for ingress; where the direction is missing, the public end
        (or dst when both or neither are public).
        """
        f = self.tables.flows
        cols = ["cloud", "account", "region", "resource", "remote", "remote_port", "local_port", "start", "end",
                "bytes", "packets", "inbound", "remote_public", "rejected", "protocol"]
        if not len(f):
            return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
        resource = self._fill_resource(f, [("interface", "interfaces"), ("src", "private_ips")])
        if resource.isna().any():
            resource = resource.fillna(self._fill_resource(f.assign(resource=resource), [("dst", "private_ips")]))
        src_pub = is_public(f["src"])
        dst_pub = is_public(f["dst"])
        direction = f["direction"].str.lower()
        egress = (direction == "egress").fillna(False).to_numpy(dtype=bool)
        ingress = (direction == "ingress").fillna(False).to_numpy(dtype=bool)
        unknown = ~(egress | ingress)
        inbound = ingress | (unknown & src_pub & ~dst_pub)
        remote = np.where(inbound, f["src"].to_numpy(dtype=object), f["dst"].to_numpy(dtype=object))
        remote_port = np.where(inbound, f["src_port"].to_numpy(dtype="float64", na_value=np.nan),
                               f["dst_port"].to_numpy(dtype="float64", na_value=np.nan))
        local_port = np.where(inbound, f["dst_port"].to_numpy(dtype="float64", na_value=np.nan),
                              f["src_port"].to_numpy(dtype="float64", na_value=np.nan))
        rejected = (f["action"].str.upper() == "REJECT").fillna(False).to_numpy(dtype=bool)
        return pd.DataFrame({
            "cloud": f["cloud"], "account": f["account"], "region": f["region"], "resource": resource,
            "remote": pd.Series(remote, index=f.index, dtype="str"),
            "remote_port": remote_port,
            "local_port": local_port,
            "start": f["start"], "end": f["end"],
            "bytes": f["bytes"].to_numpy(dtype="float64", na_value=0.0),
            "packets": f["packets"].to_numpy(dtype="float64", na_value=0.0),
            "inbound": inbound,
            "remote_public": np.where(inbound, src_pub, dst_pub),
            "rejected": rejected,
            "protocol": f["protocol"].to_numpy(dtype="float64", na_value=np.nan),
        })

    @cached_property
    def flow_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Group codes of (cloud, account, resource, remote) per flow row, and each pair's first row."""
        fl = self.flows
        return group_codes(fl["cloud"], fl["account"], fl["resource"], fl["remote"])

    @cached_property
    def ingress_bytes(self) -> pd.Series:
        """Bytes received from public peers per (cloud, account, resource)."""
        fl = self.flows
        if not len(fl):
            return pd.Series(dtype="float64")
        sel = fl[fl["inbound"] & fl["remote_public"] & fl["resource"].notna()]
        return sel.groupby(KEY, observed=True)["bytes"].sum()

    # ---- dns ------------------------------------------------------------------------------------------
    @cached_property
    def dns(self) -> pd.DataFrame:
        """DNS with the asking resource filled from inventory addresses where the record lacks it."""
        d = self.tables.dns
        if not len(d):
            return d
        return d.assign(resource=self._fill_resource(d, [("src", "private_ips")]))

    @cached_property
    def dns_answers(self) -> pd.DataFrame:
        """Distinct (cloud, account, address, query) pairs: which names each address answered for, per account.

        Only address answers (CNAME targets and other names are dropped). The basis for "this address is what
        a pool name resolved to" and for "this address also serves ordinary names" (a shared CDN address).
        """
        cols = ["cloud", "account", "address", "query"]
        d = self.tables.dns
        if not len(d) or not d["answers"].notna().any():
            return pd.DataFrame({c: pd.Series(dtype="str") for c in cols})
        part = d[["cloud", "account", "query", "answers"]].dropna(subset=["answers"])
        part = part.drop_duplicates(["cloud", "account", "query", "answers"])
        part = part.assign(address=part["answers"].str.split()).explode("address")
        part = part[part["address"].str.fullmatch(r"[0-9.]+|[0-9a-fA-F:]+:[0-9a-fA-F:.]*").fillna(False)]
        return part[cols].drop_duplicates().reset_index(drop=True).astype("str")

    # ---- utilisation ----------------------------------------------------------------------------------
    def utilization(self, metric: str) -> pd.DataFrame:
        """One sample per (cloud, account, resource, time) for `metric`: the mean over devices, sorted."""
        return self._util_cache(metric)

    @cached_property
    def _util_frames(self) -> dict[str, pd.DataFrame]:
        return {}

    def _util_cache(self, metric: str) -> pd.DataFrame:
        if metric in self._util_frames:
            return self._util_frames[metric]
        u = self.tables.utilization
        u = u[u["metric"] == metric]
        cols = ["cloud", "account", "resource", "time", "value", "devices"]
        if not len(u):
            out = pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
        else:
            if u["account"].isna().any():  # the account is optional here: take it from inventory
                inv = self.tables.inventory.drop_duplicates(["cloud", "resource"])
                acct = u[["cloud", "resource"]].merge(inv[["cloud", "resource", "account"]],
                                                      on=["cloud", "resource"], how="left")["account"]
                u = u.assign(account=u["account"].fillna(pd.Series(acct.to_numpy(), index=u.index))
                             .fillna(""))
            out = (u.groupby(["cloud", "account", "resource", "time"], observed=True, sort=True)
                   .agg(value=("value", "mean"), devices=("device", "nunique")).reset_index())
        self._util_frames[metric] = out
        return out


RESOURCE_HOUR_FEATURES = (
    "cpu_mean", "cpu_std", "gpu_mean", "gpu_std", "flatness", "bytes_in", "bytes_out", "bytes_per_packet",
    "peers", "top_peer_share", "spend_rate",
)


def _hourly_util(series: pd.DataFrame, prefix: str) -> pd.DataFrame:
    if not len(series):
        return pd.DataFrame(columns=[*KEY, "hour", f"{prefix}_mean", f"{prefix}_std"]).set_index([*KEY, "hour"])
    hour = series["time"].dt.floor("h")
    out = series.assign(hour=hour).groupby([*KEY, "hour"], observed=True)["value"].agg(["mean", "std"])
    return out.rename(columns={"mean": f"{prefix}_mean", "std": f"{prefix}_std"})


def resource_hours(features: Features) -> pd.DataFrame:
    """One row per (cloud, account, resource, hour) with the numeric columns in RESOURCE_HOUR_FEATURES.

    cpu/gpu mean and std are over the hour's samples (device-averaged); flatness = 1 - min(std, 25)/25 of
    the GPU series where there is one, else the CPU's (1 = perfectly flat); bytes in/out and bytes per packet
    from flows with public peers; peers = distinct public peers; top_peer_share = the largest peer's share of
    the hour's bytes; spend_rate = billed USD in the hour. Missing parts are 0 (no GPU, no flows, no bill).
    """
    parts = [_hourly_util(features.utilization("cpu_util"), "cpu"),
             _hourly_util(features.utilization("gpu_util"), "gpu")]
    fl = features.flows
    if len(fl):
        fl = fl[fl["remote_public"].to_numpy(dtype=bool) & fl["resource"].notna().to_numpy(dtype=bool)]
    if len(fl):
        hour_ns = fl["start"].to_numpy(dtype="datetime64[ns]").astype("int64") // 3_600_000_000_000
        res_codes, res_first = group_codes(fl["cloud"], fl["account"], fl["resource"])
        peer_codes, _ = pd.factorize(fl["remote"])
        inbound = fl["inbound"].to_numpy(dtype=bool)
        b = fl["bytes"].to_numpy(dtype="float64")
        frame = pd.DataFrame({"r": res_codes, "h": hour_ns, "p": peer_codes, "bin": np.where(inbound, b, 0.0),
                              "bout": np.where(inbound, 0.0, b), "b": b,
                              "pk": fl["packets"].to_numpy(dtype="float64")})
        per_peer = frame.groupby(["r", "h", "p"], sort=False)["b"].sum()
        peer_stats = per_peer.groupby(level=["r", "h"], sort=False).agg(["size", "max"])
        hourly = frame.groupby(["r", "h"], sort=False)[["bin", "bout", "b", "pk"]].sum()
        hourly = hourly.join(peer_stats)
        keys = fl[KEY].iloc[res_first[hourly.index.get_level_values("r")]]
        flow_part = pd.DataFrame({
            "bytes_in": hourly["bin"].to_numpy(), "bytes_out": hourly["bout"].to_numpy(),
            "bytes_per_packet": (hourly["b"] / hourly["pk"].clip(lower=1)).to_numpy(),
            "peers": hourly["size"].to_numpy(dtype="float64"),
            "top_peer_share": (hourly["max"] / hourly["b"].where(hourly["b"] > 0)).fillna(0).to_numpy(),
        })
        flow_part.index = pd.MultiIndex.from_arrays(
            [keys["cloud"].to_numpy(), keys["account"].to_numpy(), keys["resource"].to_numpy(),
             pd.to_datetime(hourly.index.get_level_values("h").to_numpy() * 3_600_000_000_000, utc=True)],
            names=[*KEY, "hour"])
        parts.append(flow_part)
    sp = features.tables.spend
    if len(sp):
        sp = sp[sp["resource"].notna()]
        parts.append(sp.groupby([*KEY, "hour"], observed=True)["cost_usd"].sum().rename("spend_rate").to_frame())
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=[*KEY, "hour", *RESOURCE_HOUR_FEATURES])
    out = pd.concat(parts, axis=1, join="outer")
    for col in RESOURCE_HOUR_FEATURES:
        if col not in out:
            out[col] = 0.0
    out = out[list(RESOURCE_HOUR_FEATURES)].astype("float64").fillna(0.0)
    dominant = out["gpu_std"].where(out["gpu_mean"] > 0, out["cpu_std"])
    out["flatness"] = (1.0 - dominant.clip(upper=25.0) / 25.0).where(
        (out["gpu_mean"] > 0) | (out["cpu_mean"] > 0), 0.0)  # no samples is not "flat"
    return out.reset_index()
