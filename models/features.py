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
from typing import Any

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

    def __init__(self, tables: Tables, flow_summary: Any = None) -> None:
        self.tables = tables
        # A scan's flows summarised by spendwatch.engine (a FlowSummary): the per-window flow features and the
        # ingress come from it, computed in SQL from every record; `tables.flows` then holds only the rows the
        # rules read one by one (pairs with a public peer where the resource is the client, DNS-named peers).
        self.flow_summary = flow_summary

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
        packets, inbound (the record carries bytes towards the resource), remote_public, rejected, protocol,
        records (flow records the row stands for: 1, or the count of a scan's per-window aggregate, see
        spendwatch.engine.flows; count flows with it, not with rows) and long_bytes (bytes of records that
        lasted LONG_LIVED_S or more; on an aggregate, computed per record before it was reduced).
        The remote end is dst for egress and src for ingress; where the direction is missing, the public end
        (or dst when both or neither are public).
        """
        f = self.tables.flows
        cols = ["cloud", "account", "region", "resource", "remote", "remote_port", "local_port", "start", "end",
                "bytes", "packets", "inbound", "remote_public", "rejected", "protocol", "records", "long_bytes"]
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
        bytes_ = f["bytes"].to_numpy(dtype="float64", na_value=0.0)
        if "long_bytes" in f:
            long_bytes = f["long_bytes"].to_numpy(dtype="float64", na_value=0.0)
        else:
            lasted = (f["end"] - f["start"]).dt.total_seconds().to_numpy(dtype="float64", na_value=0.0)
            long_bytes = np.where(lasted >= LONG_LIVED_S, bytes_, 0.0)
        return pd.DataFrame({
            "cloud": f["cloud"], "account": f["account"], "region": f["region"], "resource": resource,
            "remote": pd.Series(remote, index=f.index, dtype="str"),
            "remote_port": remote_port,
            "local_port": local_port,
            "start": f["start"], "end": f["end"],
            "bytes": bytes_,
            "packets": f["packets"].to_numpy(dtype="float64", na_value=0.0),
            "inbound": inbound,
            "remote_public": np.where(inbound, src_pub, dst_pub),
            "rejected": rejected,
            "protocol": f["protocol"].to_numpy(dtype="float64", na_value=np.nan),
            "records": f["records"].to_numpy(dtype="int64", na_value=1) if "records" in f else np.ones(len(f), "int64"),
            "long_bytes": long_bytes,
        })

    @cached_property
    def flow_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Group codes of (cloud, account, resource, remote) per flow row, and each pair's first row."""
        fl = self.flows
        return group_codes(fl["cloud"], fl["account"], fl["resource"], fl["remote"])

    @cached_property
    def ingress_bytes(self) -> pd.Series:
        """Bytes received from public peers per (cloud, account, resource)."""
        if self.flow_summary is not None:
            return self.flow_summary.ingress_bytes()
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
# What the isolation forest scores: the hourly features plus how the compute and the traffic are shaped.
# time_at_ceiling: share of the window's utilisation samples at or above CEILING_PCT (the GPU's where there is
# one, else the CPU's); top_peer_persistence: share of the last PERSISTENCE_INTERVALS ten-minute intervals (up
# to the window's end) in which the window's top peer (by bytes) carried traffic; long_lived_share: share of the
# window's bytes in flow records that lasted LONG_LIVED_S or more (a connection held open across the capture
# window); unnamed_share: share of the window's bytes exchanged, as the client, with peers that no DNS answer
# in the account named (an address typed in, a proxy, or a resolver outside the logs); unnamed_long_lived_bytes:
# bytes on such connections that were also held open LONG_LIVED_S or more (a tunnel or a stream to an address
# nobody looked up; a price feed by name or an S3 upload is not one).
WINDOW_FEATURES = (*RESOURCE_HOUR_FEATURES, "time_at_ceiling", "top_peer_persistence", "long_lived_share",
                   "unnamed_share", "unnamed_long_lived_bytes")
WINDOWS = {"10min": 600, "1h": 3600}  # the window lengths `resource_windows` builds, in seconds
INTERVAL_S = 600  # persistence is counted in VPC flow logs' default 10-minute aggregation intervals
PERSISTENCE_INTERVALS = 6  # one hour of them
CEILING_PCT = 95.0
LONG_LIVED_S = 300.0
_NS = 1_000_000_000


def _window_util(series: pd.DataFrame, prefix: str, seconds: int, extended: bool) -> pd.DataFrame:
    cols = [f"{prefix}_mean", f"{prefix}_std"] + ([f"{prefix}_ceiling"] if extended else [])
    if not len(series):
        return pd.DataFrame(columns=[*KEY, "window", *cols]).set_index([*KEY, "window"])
    window = series["time"].dt.floor("h" if seconds == 3600 else f"{seconds}s")
    frame = series.assign(window=window, ceiling=(series["value"] >= CEILING_PCT).astype("float64"))
    grouped = frame.groupby([*KEY, "window"], observed=True)
    out = grouped["value"].agg(["mean", "std"]).rename(columns={"mean": f"{prefix}_mean", "std": f"{prefix}_std"})
    if extended:
        out[f"{prefix}_ceiling"] = grouped["ceiling"].mean()
    return out


def _client_side(fl: pd.DataFrame) -> np.ndarray:
    """Rows where the resource is the client: its local port looks ephemeral (as the stratum-port rule reads it;
    an unknown local port counts as a client's, as there, and a scan's aggregate nulls the client's port)."""
    local = fl["local_port"].to_numpy(dtype="float64")
    remote = fl["remote_port"].to_numpy(dtype="float64")
    with np.errstate(invalid="ignore"):
        return np.isnan(local) | ((local >= 1024) & ((local > remote) | (local >= 32768)))


def _named(features: Features, fl: pd.DataFrame) -> np.ndarray:
    """Rows whose remote address a DNS answer in the same account named (checked once per distinct pair)."""
    answers = features.dns_answers
    if not len(answers) or not len(fl):
        return np.zeros(len(fl), dtype=bool)
    known = set(zip(answers["cloud"], answers["account"], answers["address"], strict=True))
    codes, first = group_codes(fl["cloud"], fl["account"], fl["remote"])
    firsts = fl.iloc[first]
    per_pair = np.fromiter(((c, a, r) in known for c, a, r in zip(firsts["cloud"], firsts["account"],
                                                                   firsts["remote"], strict=True)),
                           dtype=bool, count=len(first))
    return per_pair[codes]


def _window_flows(features: Features, seconds: int, extended: bool) -> pd.DataFrame:
    """Per (resource, window): traffic with public peers (see RESOURCE_HOUR_FEATURES / WINDOW_FEATURES)."""
    if features.flow_summary is not None:
        return features.flow_summary.window_flows(seconds, extended)
    fl = features.flows
    if len(fl):
        fl = fl[fl["remote_public"].to_numpy(dtype=bool) & fl["resource"].notna().to_numpy(dtype=bool)]
    if not len(fl):
        return pd.DataFrame()
    start_ns = fl["start"].to_numpy(dtype="datetime64[ns]").astype("int64")
    win = start_ns // (seconds * _NS)
    res_codes, res_first = group_codes(fl["cloud"], fl["account"], fl["resource"])
    peer_codes, _ = pd.factorize(fl["remote"])
    inbound = fl["inbound"].to_numpy(dtype=bool)
    b = fl["bytes"].to_numpy(dtype="float64")
    frame = pd.DataFrame({"r": res_codes, "h": win, "p": peer_codes, "bin": np.where(inbound, b, 0.0),
                          "bout": np.where(inbound, 0.0, b), "b": b,
                          "pk": fl["packets"].to_numpy(dtype="float64")})
    sums = ["bin", "bout", "b", "pk"]
    if extended:
        frame["blong"] = fl["long_bytes"].to_numpy(dtype="float64")  # per record, also on a scan's aggregate
        unnamed = _client_side(fl) & ~_named(features, fl)
        frame["bun"] = np.where(unnamed, b, 0.0)
        frame["bunlong"] = np.where(unnamed, frame["blong"].to_numpy(), 0.0)
        sums += ["blong", "bun", "bunlong"]
    per_peer = frame.groupby(["r", "h", "p"], sort=False)["b"].sum()
    peer_stats = per_peer.groupby(level=["r", "h"], sort=False).agg(["size", "max"])
    hourly = frame.groupby(["r", "h"], sort=False)[sums].sum()
    hourly = hourly.join(peer_stats)
    keys = fl[KEY].iloc[res_first[hourly.index.get_level_values("r")]]
    total = hourly["b"].where(hourly["b"] > 0)
    part = pd.DataFrame({
        "bytes_in": hourly["bin"].to_numpy(), "bytes_out": hourly["bout"].to_numpy(),
        "bytes_per_packet": (hourly["b"] / hourly["pk"].clip(lower=1)).to_numpy(),
        "peers": hourly["size"].to_numpy(dtype="float64"),
        "top_peer_share": (hourly["max"] / total).fillna(0).to_numpy(),
    })
    if extended:
        part["long_lived_share"] = (hourly["blong"] / total).fillna(0).to_numpy()
        part["unnamed_share"] = (hourly["bun"] / total).fillna(0).to_numpy()
        part["unnamed_long_lived_bytes"] = hourly["bunlong"].to_numpy()
        part["top_peer_persistence"] = _top_peer_persistence(frame, per_peer, hourly.index, start_ns, seconds)
    part.index = pd.MultiIndex.from_arrays(
        [keys["cloud"].to_numpy(), keys["account"].to_numpy(), keys["resource"].to_numpy(),
         pd.to_datetime(hourly.index.get_level_values("h").to_numpy() * seconds * _NS, utc=True)],
        names=[*KEY, "window"])
    return part


def _top_peer_persistence(frame: pd.DataFrame, per_peer: pd.Series, windows: pd.MultiIndex, start_ns: np.ndarray,
                          seconds: int) -> np.ndarray:
    """For each (resource, window) in `windows`: the share of the PERSISTENCE_INTERVALS ten-minute intervals
    ending with the window's last one in which the window's top peer carried traffic."""
    interval = start_ns // (INTERVAL_S * _NS)
    lo = int(interval.min()) - PERSISTENCE_INTERVALS
    span = int(interval.max()) - lo + 1
    n_peers = int(frame["p"].max()) + 1
    present = np.unique((frame["r"].to_numpy() * n_peers + frame["p"].to_numpy()) * span + (interval - lo))
    top = per_peer.reset_index().sort_values(["r", "h", "b"], kind="stable").drop_duplicates(["r", "h"], keep="last")
    top = top.set_index(["r", "h"])["p"].reindex(windows)
    r = windows.get_level_values("r").to_numpy()
    h = windows.get_level_values("h").to_numpy()
    last = (h + 1) * seconds // INTERVAL_S - 1
    pair = r * n_peers + top.to_numpy()
    seen = np.zeros(len(windows), dtype="float64")
    for k in range(PERSISTENCE_INTERVALS):
        seen += np.isin(pair * span + (last - k - lo), present)
    return seen / PERSISTENCE_INTERVALS


def _window_spend(features: Features, seconds: int) -> pd.DataFrame:
    """Billed USD per (resource, window); an hour's bill is spread evenly over its shorter windows."""
    sp = features.tables.spend
    sp = sp[sp["resource"].notna()] if len(sp) else sp
    if not len(sp):
        return pd.DataFrame()
    hourly = sp.groupby([*KEY, "hour"], observed=True)["cost_usd"].sum().rename("spend_rate")
    if seconds == 3600:
        return hourly.rename_axis([*KEY, "window"]).to_frame()
    per = 3600 // seconds
    frame = hourly.reset_index()
    frame = frame.loc[frame.index.repeat(per)].reset_index(drop=True)
    frame["window"] = frame["hour"] + pd.to_timedelta(np.tile(np.arange(per) * seconds, len(hourly)), unit="s")
    frame["spend_rate"] = frame["spend_rate"] / per
    return frame.drop(columns="hour").set_index([*KEY, "window"])


def _window_table(features: Features, seconds: int, *, extended: bool) -> pd.DataFrame:
    names = WINDOW_FEATURES if extended else RESOURCE_HOUR_FEATURES
    parts = [_window_util(features.utilization("cpu_util"), "cpu", seconds, extended),
             _window_util(features.utilization("gpu_util"), "gpu", seconds, extended),
             _window_flows(features, seconds, extended), _window_spend(features, seconds)]
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=[*KEY, "window", *names])
    out = pd.concat(parts, axis=1, join="outer")
    for col in (*names, "cpu_ceiling", "gpu_ceiling"):
        if col not in out:
            out[col] = 0.0
    ceiling = out[["cpu_ceiling", "gpu_ceiling"]].astype("float64").fillna(0.0)
    out = out[list(names)].astype("float64").fillna(0.0)
    dominant = out["gpu_std"].where(out["gpu_mean"] > 0, out["cpu_std"])
    out["flatness"] = (1.0 - dominant.clip(upper=25.0) / 25.0).where(
        (out["gpu_mean"] > 0) | (out["cpu_mean"] > 0), 0.0)  # no samples is not "flat"
    if extended:
        out["time_at_ceiling"] = ceiling["gpu_ceiling"].where(out["gpu_mean"] > 0, ceiling["cpu_ceiling"])
    return out.reset_index()


def resource_hours(features: Features) -> pd.DataFrame:
    """One row per (cloud, account, resource, hour) with the numeric columns in RESOURCE_HOUR_FEATURES.

    cpu/gpu mean and std are over the hour's samples (device-averaged); flatness = 1 - min(std, 25)/25 of
    the GPU series where there is one, else the CPU's (1 = perfectly flat); bytes in/out and bytes per packet
    from flows with public peers; peers = distinct public peers; top_peer_share = the largest peer's share of
    the hour's bytes; spend_rate = billed USD in the hour. Missing parts are 0 (no GPU, no flows, no bill).
    """
    return _window_table(features, 3600, extended=False).rename(columns={"window": "hour"})


def resource_windows(features: Features, window: str = "1h") -> pd.DataFrame:
    """One row per (cloud, account, resource, window) with the columns in WINDOW_FEATURES; `window` is a key
    of WINDOWS ("10min" or "1h"). The first columns are `resource_hours`' (same definitions per window; an hour's
    bill is spread evenly over its 10-minute windows); the rest are described at WINDOW_FEATURES. The window's
    start is in the `window` column. The isolation forest scores the 1-hour rows.
    """
    if window not in WINDOWS:
        raise ValueError(f"resource_windows: window must be one of {sorted(WINDOWS)}, not {window!r}")
    return _window_table(features, WINDOWS[window], extended=True)


# ---- per principal and day ------------------------------------------------------------------------------------
PRINCIPAL_KEY = ["cloud", "account", "principal"]
PRINCIPAL_DAY_FEATURES = (
    "launches", "failed_launches", "instances", "gpus", "vcpus", "regions", "new_regions", "instance_types",
    "spot_share", "quota_calls", "key_creates",
)
LAUNCH_ACTIONS = ("launch", "launch_request", "start")


def principal_days(features: Features) -> pd.DataFrame:
    """One row per (cloud, account, principal, day) that the principal acted on, with PRINCIPAL_DAY_FEATURES.

    launches / failed_launches: launch, launch-request and start calls that succeeded / failed; instances:
    distinct resources they named; gpus / vcpus: summed over successful launch rows (from the record, else the
    instance-type catalogue); regions: distinct regions launched in; new_regions: of those, regions the
    principal never launched in on an earlier day of the data (a principal's first day counts every region as
    new: the data cannot tell a first-timer from a principal whose history is older than the data);
    instance_types: distinct types; spot_share: share of successful launches on spot; quota_calls: quota
    look-ups and increase requests; key_creates: access keys created. `day` is the UTC day's start.
    """
    from spendwatch import catalog

    act = features.tables.activity
    cols = [*PRINCIPAL_KEY, "day", *PRINCIPAL_DAY_FEATURES]
    if not len(act):
        return pd.DataFrame(columns=cols)
    act = act[act["principal"].notna()]
    action = act["action"].str.lower()
    launch = action.isin(LAUNCH_ACTIONS).fillna(False).to_numpy(dtype=bool)
    ok = act["error"].isna().to_numpy(dtype=bool)
    good = launch & ok
    types = act["instance_type"]
    spec = {t: catalog.lookup(t) for t in types.dropna().unique()}
    gpus = act["gpus"].astype("float64").fillna(types.map({t: (s.gpus if s else np.nan) for t, s in spec.items()})
                                                .astype("float64")).fillna(0.0)
    vcpus = act["vcpus"].astype("float64").fillna(types.map({t: (s.vcpus if s else np.nan) for t, s in spec.items()})
                                                  .astype("float64")).fillna(0.0)
    frame = pd.DataFrame({
        "cloud": act["cloud"], "account": act["account"], "principal": act["principal"],
        "day": act["time"].dt.floor("D"),
        "launches": good.astype("float64"), "failed_launches": (launch & ~ok).astype("float64"),
        "gpus": np.where(good, gpus, 0.0), "vcpus": np.where(good, vcpus, 0.0),
        "spot": np.where(good, act["spot"].astype("boolean").fillna(False).to_numpy(dtype=bool), False),
        "quota_calls": action.str.startswith("quota").fillna(False).to_numpy(dtype="float64"),
        "key_creates": (action == "key_create").fillna(False).to_numpy(dtype="float64"),
        "resource": act["resource"].where(good), "region": act["region"].where(good),
        "instance_type": types.where(good),
    })
    grouped = frame.groupby([*PRINCIPAL_KEY, "day"], observed=True, sort=True)
    out = grouped[["launches", "failed_launches", "gpus", "vcpus", "quota_calls", "key_creates"]].sum()
    out["instances"] = grouped["resource"].nunique()
    out["regions"] = grouped["region"].nunique()
    out["instance_types"] = grouped["instance_type"].nunique()
    out["spot_share"] = (grouped["spot"].sum() / out["launches"].where(out["launches"] > 0)).fillna(0.0)
    first = (frame.dropna(subset=["region"]).groupby([*PRINCIPAL_KEY, "region"], observed=True)["day"].min()
             .rename("day").reset_index())
    out["new_regions"] = first.groupby([*PRINCIPAL_KEY, "day"], observed=True).size().reindex(out.index).fillna(0)
    return out.reset_index()[cols].astype({c: "float64" for c in PRINCIPAL_DAY_FEATURES})
