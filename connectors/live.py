"""What the GCP and Azure live connectors share: incremental listing of export objects, and the scan result.

Cloud Logging sinks, billing exports and Azure diagnostic settings write their exports as objects in a Cloud
Storage bucket or a Blob container. A *scope* is one prefix of one bucket or container; its watermark says
which objects under it were read. Two ways to list a scope, by how its object names are laid out:

- by name (`plan_by_name`): names under the prefix start with a `YYYY/MM/DD/` date path (Cloud Logging
  sinks, Monitoring series). `position` is a name to list from (GCS `startOffset`): the first day still
  inside the look-back window. Each run lists from it and moves it to `lookback_days` before the newest day
  listed, so an object that lands late is still read while it is within the window of the newest one.
- by time (`plan_by_time`): names do not sort by time (Azure's `resourceId=/SUBSCRIPTIONS/<sub>/.../y=2026/
  m=11/...` puts the resource before the date; cost exports rewrite a month's file every day). The whole
  prefix is listed each run; `position` is a time, and objects last modified before it are skipped. It moves to
  `lookback_days` before the newest modification time listed.

Either way `seen` holds `<version>:<relative name>` of the objects read inside the window, where the version
is the GCS generation or the Blob ETag. An object rewritten or appended to (Azure adds records to an hour's
`PT1H.json` until the hour ends) has a new version and is read again, whole: its earlier records come again in
that run, and findings are upserted by their stable id, so nothing is doubled in the store. When any object
of a scope could not be read, the position stays where it was and that object is not marked: the next run
reads it again. The caller saves the watermarks only after the run's findings are stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from spendwatch.records import Tables
from spendwatch.store import Watermark

_DAY = re.compile(r"^(\d{4})/(\d{2})/(\d{2})/")


@dataclass(frozen=True)
class Listed:
    """One object as the listing shows it."""

    name: str  # the full object name (not relative to the scope's prefix)
    size: int
    version: str  # GCS generation or Blob ETag: changes when the object is rewritten or appended to
    modified: datetime | None


@dataclass
class LiveScan:
    """What one live scan of a cloud read, and the watermarks to save once its findings are stored."""

    tables: Tables
    marks: list[Watermark]
    accounts: list[str]  # projects or subscriptions in scope


def entry(prefix: str, obj: Listed) -> str:
    """An object's `seen` entry: its version and its name relative to the scope's prefix."""
    return f"{obj.version}:{obj.name[len(prefix):]}"


@dataclass
class ScopePlan:
    """The objects of one scope to read this run, and how to move its watermark once they are read."""

    mark: Watermark  # before this run (position "" and nothing seen on a first run)
    prefix: str
    by_time: bool
    new: list[Listed]
    listed: dict[str, datetime | None]  # seen entry -> modification time, of everything listed this run
    newest_day: date | None = None  # by name: the newest `YYYY/MM/DD/` listed
    newest_time: datetime | None = None  # by time: the newest modification time listed

    def advanced(self, failed: set[str], lookback_days: int) -> Watermark:
        """The watermark after this run, given the full names of the objects whose read failed."""
        read = {entry(self.prefix, o) for o in self.new if o.name not in failed}
        seen = (set(self.mark.seen) & set(self.listed)) | read  # forget objects rewritten or deleted since
        position = self.mark.position
        if not failed:
            if self.by_time and self.newest_time is not None:
                cutoff = (self.newest_time - timedelta(days=lookback_days)).isoformat()
                position = max(position, cutoff) if position else cutoff
            elif not self.by_time and self.newest_day is not None:
                cutoff = self.prefix + (self.newest_day - timedelta(days=lookback_days)).strftime("%Y/%m/%d/")
                position = max(position, cutoff)
        if self.by_time:
            keep = {e for e in seen if not position or _at_or_after(self.listed.get(e), position)}
        else:
            keep = {e for e in seen if self.prefix + e.split(":", 1)[1] >= position}
        m = self.mark
        return Watermark(m.cloud, m.account, m.region, m.source, m.scope, position, frozenset(keep))


def _at_or_after(when: datetime | None, position: str) -> bool:
    return when is None or when >= datetime.fromisoformat(position)


def plan_by_name(listing: Iterable[Listed], prefix: str, mark: Watermark) -> ScopePlan:
    """Pick the objects not read yet from a listing made from `mark.position` (names at or after it)."""
    plan = ScopePlan(mark, prefix, False, [], {})
    for obj in listing:
        key = entry(prefix, obj)
        plan.listed[key] = obj.modified
        m = _DAY.match(obj.name[len(prefix):])
        if m:
            try:
                day = date(int(m[1]), int(m[2]), int(m[3]))
            except ValueError:
                day = None
            if day is not None and (plan.newest_day is None or day > plan.newest_day):
                plan.newest_day = day
        if key not in mark.seen:
            plan.new.append(obj)
    return plan


def plan_by_time(listing: Iterable[Listed], prefix: str, mark: Watermark) -> ScopePlan:
    """Pick the objects not read yet from a listing of the whole prefix: those modified at or after
    `mark.position` whose version has not been read."""
    since = datetime.fromisoformat(mark.position) if mark.position else None
    plan = ScopePlan(mark, prefix, True, [], {})
    for obj in listing:
        if obj.modified is not None and (plan.newest_time is None or obj.modified > plan.newest_time):
            plan.newest_time = obj.modified
        if since is not None and obj.modified is not None and obj.modified < since:
            continue  # older than the look-back window: read by an earlier run
        key = entry(prefix, obj)
        plan.listed[key] = obj.modified
        if key not in mark.seen:
            plan.new.append(obj)
    return plan


def merge_api_sources(tables: Tables, *, inventory: Any = None, utilization: Any = None,
                      spend: Any = None) -> tuple[Tables, list[Watermark]]:
    """The export objects' tables with what the clouds' APIs gave added: the API inventory merged into the one
    the logs imply, API utilisation and spend rows appended. `utilization` and `spend` are the API readers'
    results (rows plus the watermarks to save once findings are stored); None when not configured."""
    extra: dict[str, list[Any]] = {}
    if inventory is not None and len(inventory):
        from spendwatch.connectors.aws.sources import merge_inventory

        extra["inventory"] = [merge_inventory(inventory, tables.inventory)]
    if utilization is not None and len(utilization.utilization):
        extra["utilization"] = [tables.utilization, utilization.utilization]
    if spend is not None and len(spend.spend):
        extra["spend"] = [tables.spend, spend.spend]
    if extra:
        tables = Tables.concat({name: [frame] for name, frame in tables.items()} | extra)
    marks = [*(utilization.marks if utilization is not None else []), *(spend.marks if spend is not None else [])]
    return tables, marks
