"""`spendwatch replay`: the scheduled scan run over history as if live, for backtests of time to detect.

The directory is read once (connectors.files). At each tick T (multiples of `--every` since the epoch, so
ticks land on clock boundaries as a scheduler's would), only records that would have been *delivered* by T are
visible: a record becomes visible at its table's time column plus that source's delivery lag (`LAGS`, the one
table of lags). The visible tables are scanned with `models.detect(tables, now=T)` and upserted into a store
with `now=T`, so a finding's `detected_at` is the tick at which it first appeared. Each table is sorted once by
visibility time, so the tables at T are row prefixes (a binary search per table per tick, no copying).

Per finding the replay reports (times UTC):
- `first_evidence`: the finding's `first_seen`, when the earliest evidence happened (not when it arrived);
- `detected_at`: the first tick the finding existed at all (low or above, as the store records it);
- `alerted_at`: the first tick it reached medium (what pages a person), None if it never did;
- `severity`: its reported severity, the highest it reached during the replay, and `reached_at`, the first tick
  at that severity;
- `landed_at`, the *evidence landing*: the earliest instant at which the records visible then already give the
  finding its reported severity. It lies between the tick before `reached_at` and `reached_at`, and is found by
  bisection over the distinct delivery instants in that interval (assuming, as holds for these detectors in
  practice, that more delivered data never lowers a finding's severity). `scan_delay = reached_at - landed_at`
  is at most one interval by construction of a scheduled scan: what it measures is that the scan *does* act
  on the tick after the evidence lands (no extra accumulation hidden in the scan);
- `time_to_alert = alerted_at - first_evidence`: the end-to-end figure (delivery lags + the evidence the rules
  need to accumulate + waiting for the next tick), the one to hold against the providers' ~24 h.

What it does not model: inventory is a snapshot taken at the end of the history (rows are shown from their
`launched_at`, but tags and states are the final ones), and sources never deliver late or out of order.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from .findings import Finding, Severity
from .records import TABLES, Tables

# table -> (time column, delivery lag after that time, why). Conservative ends of the providers' stated ranges.
LAGS: dict[str, tuple[str, timedelta, str]] = {
    "flows": ("end", timedelta(minutes=10),
              "VPC flow logs reach S3 about 10 min after the capture window ends"),
    "activity": ("time", timedelta(minutes=15),
                 "CloudTrail delivers to S3 within 5-15 min of the call; the worst case is used"),
    "dns": ("time", timedelta(minutes=10), "Route 53 Resolver query logs reach S3 in about 10 min"),
    "utilization": ("time", timedelta(minutes=3), "CloudWatch metric streams deliver within about 3 min"),
    "spend": ("hour", timedelta(hours=9),
              "CUR rows land about 8 h after the usage hour ends (the hour's start + 1 h + 8 h)"),
    "inventory": ("launched_at", timedelta(0), "describe calls at scan time: live"),
}
SERIES = ("flows", "dns", "utilization")  # telemetry (CUR, the trail and inventory reach back weeks earlier)


def _ns(t: datetime | pd.Timestamp) -> int:
    """Nanoseconds since the epoch (a naive time is taken as UTC)."""
    ts = pd.Timestamp(t)
    return int((ts.tz_localize("UTC") if ts.tzinfo is None else ts).value)


class DeliveredTables:
    """Canonical tables sorted by delivery time, cut at any instant in O(log n) per table."""

    def __init__(self, tables: Tables, lags: dict[str, tuple[str, timedelta, str]] = LAGS) -> None:
        self.frames: dict[str, pd.DataFrame] = {}
        self.visible: dict[str, np.ndarray] = {}  # int64 ns since the epoch, ascending, per table
        for name in TABLES:
            frame = getattr(tables, name)
            column, lag, _ = lags[name]
            times = pd.to_datetime(frame[column], utc=True) if len(frame) else pd.Series([], dtype="int64")
            # No timestamp (an inventory row without a launch time): known from the first scan on.
            ns = times.to_numpy(dtype="datetime64[ns]").astype("int64") if len(frame) else np.zeros(0, "int64")
            ns = np.where(pd.isna(times).to_numpy(), np.iinfo("int64").min, ns + int(lag.total_seconds() * 1e9))
            order = np.argsort(ns, kind="stable")
            self.frames[name] = frame.iloc[order].reset_index(drop=True)
            self.visible[name] = ns[order]

    def at(self, t: datetime) -> Tables:
        """The tables as a scan at `t` sees them: every record delivered at or before `t`."""
        cut = _ns(t)
        return Tables(**{name: self.frames[name].iloc[:int(np.searchsorted(self.visible[name], cut, "right"))]
                         for name in TABLES})

    def instants(self, after: datetime, upto: datetime) -> np.ndarray:
        """Distinct delivery instants (ns) in (after, upto]: the only times at which what a scan sees changes."""
        lo, hi = _ns(after), _ns(upto)
        parts = [v[(v > lo) & (v <= hi)] for v in self.visible.values()]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, "int64")

    def span(self) -> tuple[datetime, datetime] | None:
        """First delivery of telemetry and last delivery of anything (records without a time left out).

        The trail, inventory and bill reach back weeks before the telemetry starts (what is running and its cost);
        a scan before the first flow, DNS or metric row has little to score, so replay starts there.
        """
        telemetry = [v for k, v in self.visible.items() if k in SERIES and len(v)]
        known = [v[v > np.iinfo("int64").min] for v in self.visible.values()]
        known = [v for v in known if len(v)]
        if not known:
            return None
        first = min(int(v[0]) for v in (telemetry or known))
        return (pd.Timestamp(first, tz="UTC").to_pydatetime(),
                pd.Timestamp(max(int(v[-1]) for v in known), tz="UTC").to_pydatetime())


def ticks(start: datetime, end: datetime, every: timedelta) -> list[datetime]:
    """Multiples of `every` since the epoch from the first at or after `start` to the last at or before `end`."""
    step = every.total_seconds()
    first = np.ceil(start.timestamp() / step) * step
    last = np.floor(end.timestamp() / step) * step
    return [datetime.fromtimestamp(s, UTC) for s in np.arange(first, last + step / 2, step)]


@dataclass
class Tracked:
    """One finding's course through the replay."""

    finding: Finding
    detected_at: datetime
    alerted_at: datetime | None = None
    severity: Severity = Severity.INFO
    reached_at: datetime | None = None
    previous_tick: datetime | None = None  # the tick before reached_at
    landed_at: datetime | None = None
    history: list[tuple[datetime, str]] = field(default_factory=list)  # (tick, severity) at each change

    def to_json(self) -> dict[str, Any]:
        f = self.finding

        def iso(t: datetime | None) -> str | None:
            return None if t is None else t.astimezone(UTC).isoformat().replace("+00:00", "Z")

        def minutes(a: datetime | None, b: datetime | None) -> float | None:
            return None if a is None or b is None else round((a - b).total_seconds() / 60, 1)

        return {"id": f.id, "resource": f.resource, "principal": f.principal, "severity": self.severity.label,
                "rules": f.rules, "first_evidence": iso(f.first_seen), "detected_at": iso(self.detected_at),
                "alerted_at": iso(self.alerted_at), "reached_at": iso(self.reached_at),
                "landed_at": iso(self.landed_at),
                "scan_delay_min": minutes(self.reached_at, self.landed_at),
                "time_to_alert_min": minutes(self.alerted_at, f.first_seen),
                "history": [[iso(t), s] for t, s in self.history]}


@dataclass
class ReplayResult:
    every: timedelta
    ticks: list[datetime]
    findings: list[Tracked]
    seconds: float = 0.0

    def medians(self) -> dict[str, float | None]:
        alert = [(t.alerted_at - t.finding.first_seen).total_seconds() / 60 for t in self.findings
                 if t.alerted_at is not None]
        delay = [(t.reached_at - t.landed_at).total_seconds() / 60 for t in self.findings
                 if t.reached_at is not None and t.landed_at is not None and t.severity >= Severity.MEDIUM]
        return {"time_to_alert_min": round(statistics.median(alert), 1) if alert else None,
                "scan_delay_min": round(statistics.median(delay), 1) if delay else None}

    def to_json(self) -> dict[str, Any]:
        return {"every_min": self.every.total_seconds() / 60, "ticks": len(self.ticks),
                "first_tick": self.ticks[0].isoformat() if self.ticks else None,
                "last_tick": self.ticks[-1].isoformat() if self.ticks else None,
                "seconds": round(self.seconds, 2), "lags_min": {k: v[1].total_seconds() / 60 for k, v in LAGS.items()},
                "medians": self.medians(), "findings": [t.to_json() for t in self.findings]}

    def text(self) -> str:
        lines = [f"replay: {len(self.ticks)} scans every {self.every.total_seconds() / 60:g} min "
                 f"({self.seconds:.1f} s)"]
        if self.ticks:
            lines[0] += f", {self.ticks[0]:%Y-%m-%d %H:%M} to {self.ticks[-1]:%Y-%m-%d %H:%M} UTC"
        lines.append(f"{'severity':<9} {'resource / principal':<36} {'first evidence':<17} {'detected':<17} "
                     f"{'alerted':<17} {'to alert':>9} {'scan delay':>10}")
        for t in self.findings:
            j = t.to_json()
            who = (t.finding.resource or t.finding.principal or "-")[-36:]
            fmt = "%m-%d %H:%M:%S"
            lines.append(
                f"{j['severity']:<9} {who:<36} {t.finding.first_seen.strftime(fmt):<17} "
                f"{t.detected_at.strftime(fmt):<17} {(t.alerted_at.strftime(fmt) if t.alerted_at else '-'):<17} "
                f"{_min(j['time_to_alert_min']):>9} {_min(j['scan_delay_min']):>10}")
        m = self.medians()
        lines.append(f"median time to alert (first evidence -> medium): {_min(m['time_to_alert_min'])}; "
                     f"median scan delay (evidence landing -> reported severity): {_min(m['scan_delay_min'])}; "
                     f"interval {self.every.total_seconds() / 60:g} min")
        return "\n".join(lines) + "\n"


def _min(x: float | None) -> str:
    return "-" if x is None else f"{x:g} min"


def _severity_of(findings: list[Finding], finding_id: str) -> Severity | None:
    return next((f.severity for f in findings if f.id == finding_id), None)


def replay(tables: Tables, *, every: timedelta = timedelta(minutes=15), start: datetime | None = None,
           end: datetime | None = None, config: Any = None, store: Any = None,
           landing: bool = True, model: Any = None) -> ReplayResult:
    """Scan `tables` at every tick as if live (module docstring); upsert into `store` (a Store) when given.

    `model` is what the isolation forest scores with (see `models.detect`); by default the organisation's model
    kept in memory and retrained whenever it is a day old by tick time, as the daily retrain would.
    """
    import time

    from .models import detect
    from .models.model_store import StoredModel

    model = StoredModel() if model is None else model
    t0 = time.perf_counter()
    delivered = DeliveredTables(tables)
    span = delivered.span()
    if span is None:
        return ReplayResult(every, [], [])
    grid = ticks(start or span[0], end or (span[1] + every), every)
    tracked: dict[str, Tracked] = {}
    previous: datetime | None = None
    last_seen_data = -1
    findings: list[Finding] = []
    for tick in grid:
        cut = sum(int(np.searchsorted(v, _ns(tick), "right")) for v in delivered.visible.values())
        if cut != last_seen_data:  # nothing new delivered since the last tick: the scan's result is unchanged
            findings = detect(delivered.at(tick), config=config, now=tick, model=model)
            last_seen_data = cut
        if store is not None:
            store.upsert(findings, now=tick)  # the store keeps each finding's first detected_at
        for f in findings:
            tr = tracked.get(f.id)
            if tr is None:
                tr = tracked[f.id] = Tracked(f, detected_at=tick)
            if f.severity >= Severity.MEDIUM and tr.alerted_at is None:
                tr.alerted_at = tick
            if f.severity > tr.severity:
                tr.severity, tr.reached_at, tr.previous_tick = f.severity, tick, previous
                tr.history.append((tick, f.severity.label))
            tr.finding = replace(f, first_seen=min(f.first_seen, tr.finding.first_seen), detected_at=tr.detected_at)
        previous = tick
    if landing:  # only for findings that page someone: each costs a bisection of detect() calls
        for tr in (t for t in tracked.values() if t.severity >= Severity.MEDIUM):
            tr.landed_at = evidence_landing(delivered, tr, config, model)
    out = sorted(tracked.values(), key=lambda t: (-int(t.severity), t.detected_at, t.finding.id))
    return ReplayResult(every, grid, out, time.perf_counter() - t0)


def evidence_landing(delivered: DeliveredTables, tr: Tracked, config: Any, model: Any = None) -> datetime | None:
    """Earliest delivery instant in (previous tick, reached_at] at which the finding has its reported severity."""
    from .models import detect

    if tr.reached_at is None:
        return None
    if tr.previous_tick is None:
        return tr.reached_at
    cands = delivered.instants(tr.previous_tick, tr.reached_at)
    lo, hi = 0, len(cands) - 1  # invariant: the severity is reached at cands[hi] (== reached_at's data)
    if hi < 0:
        return tr.reached_at
    while lo < hi:
        mid = (lo + hi) // 2
        t = pd.Timestamp(int(cands[mid]), tz="UTC").to_pydatetime()
        sev = _severity_of(detect(delivered.at(t), config=config, now=t, model=model), tr.finding.id)
        if sev is not None and sev >= tr.severity:
            hi = mid
        else:
            lo = mid + 1
    return pd.Timestamp(int(cands[lo]), tz="UTC").to_pydatetime()
