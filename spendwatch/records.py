"""The canonical tables: the contract between connectors and models.

Every connector, whatever the cloud, hands over these six tables as pandas frames. Names and types are the
contract; a connector may add columns of its own, which are kept as they are. Times are tz-aware UTC,
account ids are strings (real AWS ids start with 0), missing values are nulls, never sentinel strings.

`conform()` is where a connector hands a frame over: it checks the required columns, adds the optional
ones as nulls, and casts every known column to its type. A frame that cannot be conformed raises
`TableError` naming the table and the column, so the caller can count it against the file it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

import pandas as pd

Kind = Literal["time", "str", "float", "int", "bool"]

PANDAS_DTYPES: dict[Kind, str] = {
    "time": "datetime64[ns, UTC]",
    "str": "str",  # pandas 3's string dtype (Arrow-backed); missing values are NaN
    "float": "float64",
    "int": "Int64",
    "bool": "boolean",
}


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    required: bool = False
    doc: str = ""


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    doc: str = ""

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    def dtypes(self) -> dict[str, str]:
        return {c.name: PANDAS_DTYPES[c.kind] for c in self.columns}


def _t(name: str, doc: str, *cols: Column) -> Table:
    return Table(name, tuple(cols), doc)


C = Column

SPEND = _t(
    "spend",
    "Cost per resource and hour, from billing exports.",
    C("hour", "time", True, "start of the usage hour"),
    C("cloud", "str", True),
    C("account", "str", True, "usage account"),
    C("region", "str"),
    C("service", "str", True, "e.g. AmazonEC2"),
    C("usage_type", "str"),
    C("resource", "str", doc="resource id (instance id) where billing names one"),
    C("cost_usd", "float", True, "unblended cost"),
    C("usage_amount", "float"),
    C("pricing", "str", doc="on_demand / spot / savings / other"),
)

ACTIVITY = _t(
    "activity",
    "Control-plane events: who launched, stopped or asked for what.",
    C("time", "time", True),
    C("cloud", "str", True),
    C("account", "str", True),
    C("region", "str"),
    C("principal", "str", True, "stable identity: role or user ARN, service account, object id"),
    C("principal_type", "str", True, "human / role / service / agent"),
    C("action", "str", True, "launch, terminate, start, stop, quota_lookup, quota_request, key_create, ..."),
    C("resource", "str", doc="instance id, key id or quota code the action touched"),
    C("instance_type", "str"),
    C("gpus", "int"),
    C("vcpus", "int"),
    C("spot", "bool"),
    C("source_ip", "str"),
    C("user_agent", "str"),
    C("session_name", "str", doc="assumed-role session name, where there is one"),
    C("event_name", "str", doc="the cloud's own name of the call, e.g. RunInstances"),
    C("error", "str", doc="error code when the call failed (AccessDenied, ...), null on success"),
)

FLOWS = _t(
    "flows",
    "Network flow records (one per capture window and 5-tuple).",
    C("start", "time", True),
    C("end", "time", True),
    C("cloud", "str", True),
    C("account", "str", True),
    C("region", "str"),
    C("resource", "str", doc="instance id owning the interface, where known"),
    C("interface", "str"),
    C("src", "str", True),
    C("dst", "str", True),
    C("src_port", "int"),
    C("dst_port", "int"),
    C("protocol", "int"),
    C("packets", "int"),
    C("bytes", "int"),
    C("action", "str", doc="ACCEPT / REJECT"),
    C("direction", "str", doc="ingress / egress, where the source says"),
)

DNS = _t(
    "dns",
    "DNS queries made by resources.",
    C("time", "time", True),
    C("cloud", "str", True),
    C("account", "str", True),
    C("region", "str"),
    C("resource", "str", doc="instance id that asked, where known"),
    C("query", "str", True, "lower case, no trailing dot"),
    C("qtype", "str"),
    C("answers", "str", doc="answer addresses or names, space separated"),
    C("resolver", "str"),
    C("src", "str", doc="address the query came from"),
    C("rcode", "str"),
)

UTILIZATION = _t(
    "utilization",
    "Utilisation samples: one value per resource, metric, device and time.",
    C("time", "time", True),
    C("cloud", "str", True),
    C("account", "str"),
    C("region", "str"),
    C("resource", "str", True),
    C("metric", "str", True, "gpu_util, cpu_util, gpu_mem, power (percent or watts)"),
    C("device", "str", doc="GPU index or name; null for host metrics"),
    C("value", "float", True),
)

INVENTORY = _t(
    "inventory",
    "What exists (or existed) and who made it.",
    C("resource", "str", True),
    C("cloud", "str", True),
    C("account", "str", True),
    C("region", "str"),
    C("instance_type", "str"),
    C("gpus", "int"),
    C("vcpus", "int"),
    C("spot", "bool"),
    C("state", "str"),
    C("launched_at", "time"),
    C("launched_by", "str"),
    C("launched_by_type", "str"),
    C("tags", "str", doc="JSON object of tags"),
    C("interfaces", "str", doc="network interface ids, space separated"),
    C("private_ips", "str", doc="private addresses, space separated"),
    C("protected", "bool"),
)

TABLES: dict[str, Table] = {t.name: t for t in (SPEND, ACTIVITY, FLOWS, DNS, UTILIZATION, INVENTORY)}


class TableError(ValueError):
    """A frame does not fit its canonical table. The message names the table and the column."""


def empty(name: str) -> pd.DataFrame:
    """An empty frame with the table's columns and types."""
    table = TABLES[name]
    return pd.DataFrame({c: pd.Series(dtype=d) for c, d in table.dtypes().items()})


_UTC_NS = pd.DatetimeTZDtype(unit="ns", tz="UTC")


def _cast(series: pd.Series, kind: Kind) -> pd.Series:
    if kind == "time":
        if isinstance(series.dtype, pd.DatetimeTZDtype):
            return series.dt.tz_convert("UTC").astype(_UTC_NS)
        out = pd.to_datetime(series, utc=True, errors="raise", format="mixed")
        return out.astype(_UTC_NS)
    if kind == "str":
        return series if series.dtype == "str" else series.astype("str")
    if kind == "float":
        return pd.to_numeric(series, errors="raise").astype("float64")
    if kind == "int":
        if series.dtype == "Int64":
            return series
        numeric = pd.to_numeric(series, errors="raise")
        return numeric.astype("Int64")
    if kind == "bool":
        return series.astype("boolean")
    raise AssertionError(kind)


def conform(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Return `frame` as canonical table `name`: required columns checked, known columns typed.

    Unknown extra columns are kept. Raises `TableError` naming the column that is missing or cannot be
    cast, and `KeyError` for an unknown table name.
    """
    table = TABLES[name]
    missing = [c for c in table.required if c not in frame.columns]
    if missing:
        raise TableError(f"table {name!r}: missing required column(s) {', '.join(missing)}")
    out = {}
    n = len(frame)
    for col in table.columns:
        if col.name not in frame.columns:
            out[col.name] = pd.Series([None] * n, index=frame.index, dtype=PANDAS_DTYPES[col.kind])
            continue
        try:
            out[col.name] = _cast(frame[col.name], col.kind)
        except (ValueError, TypeError, OverflowError) as exc:
            raise TableError(f"table {name!r}: column {col.name!r} is not {col.kind}: {exc}") from exc
    extra = {c: frame[c] for c in frame.columns if c not in out}
    result = pd.DataFrame({**out, **extra}, index=frame.index)
    return result.reset_index(drop=True)


@dataclass
class Tables:
    """One set of canonical tables, as a scan passes them from connectors to models."""

    spend: pd.DataFrame = field(default_factory=lambda: empty("spend"))
    activity: pd.DataFrame = field(default_factory=lambda: empty("activity"))
    flows: pd.DataFrame = field(default_factory=lambda: empty("flows"))
    dns: pd.DataFrame = field(default_factory=lambda: empty("dns"))
    utilization: pd.DataFrame = field(default_factory=lambda: empty("utilization"))
    inventory: pd.DataFrame = field(default_factory=lambda: empty("inventory"))

    def counts(self) -> dict[str, int]:
        return {f.name: len(getattr(self, f.name)) for f in fields(self)}

    def items(self) -> list[tuple[str, pd.DataFrame]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self)]

    @classmethod
    def concat(cls, parts: dict[str, list[pd.DataFrame]]) -> Tables:
        """Build Tables from lists of already conformed frames per table name."""
        kwargs = {}
        for name in TABLES:
            frames = [f for f in parts.get(name, []) if len(f)]
            kwargs[name] = conform(name, pd.concat(frames, ignore_index=True)) if frames else empty(name)
        return cls(**kwargs)
