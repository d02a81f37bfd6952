"""Incremental reading of export files in S3: which objects under a prefix are new since the watermark.

A scope is one prefix whose keys start with a `YYYY/MM/DD/` date path (CloudTrail's
`AWSLogs/<org>/<account>/CloudTrail/<region>/`, Flow Logs' `AWSLogs/<account>/vpcflowlogs/<region>/`, ...).
Its watermark's `position` is a key to list after (ListObjectsV2 `StartAfter`): the first day still inside
the look-back window. `seen` holds the keys at or after it that were already read. Each run lists from the
position (a few list calls, $0.005 per 1,000), reads the keys not seen, and moves the position to
`lookback_days` before the newest day listed. So a file delivered late is still read as long as it lands
within the look-back window of the newest file; one that lands later than that is missed (AWS delivers
CloudTrail in about 5 minutes and flow logs in about 10, so the default of two days is generous).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from spendwatch.store import Watermark

_DAY = re.compile(r"^(\d{4})/(\d{2})/(\d{2})/")


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str
    size: int


@dataclass
class ScopePlan:
    """The objects of one scope to read this run, and the watermark to save once they are read."""

    mark: Watermark  # the watermark before this run (position "" and nothing seen on a first run)
    prefix: str
    new: list[S3Object]
    listed: set[str]  # every key listed at or after the position (relative to the prefix)
    newest_day: date | None

    def advanced(self, failed: set[str], lookback_days: int) -> Watermark:
        """The watermark after this run, given the keys whose read failed (they are read again next run)."""
        read_rel = {o.key[len(self.prefix):] for o in self.new if o.key not in failed}
        seen = (set(self.mark.seen) & self.listed) | read_rel  # forget seen keys that no longer exist
        position = self.mark.position
        if self.newest_day is not None and not failed:
            cutoff = self.prefix + (self.newest_day - timedelta(days=lookback_days)).strftime("%Y/%m/%d/")
            position = max(position, cutoff)
        keep = {rel for rel in seen if self.prefix + rel > position}
        return Watermark(self.mark.cloud, self.mark.account, self.mark.region, self.mark.source, self.mark.scope,
                         position, frozenset(keep))


def children(s3: Any, bucket: str, prefix: str) -> list[str]:
    """The "folders" directly under `prefix` (full prefixes ending in "/"), sorted."""
    out: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        out.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
    return sorted(out)


def list_after(s3: Any, bucket: str, prefix: str, start_after: str = "") -> Iterator[S3Object]:
    """Every object under `prefix` whose key sorts after `start_after`, in key order (all pages)."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    if start_after > prefix:
        kwargs["StartAfter"] = start_after
    for page in s3.get_paginator("list_objects_v2").paginate(**kwargs):
        for obj in page.get("Contents", []):
            yield S3Object(bucket, obj["Key"], int(obj.get("Size", 0)))


def plan(s3: Any, bucket: str, prefix: str, mark: Watermark) -> ScopePlan:
    """List the scope after its watermark and pick the keys not read yet."""
    listed: set[str] = set()
    new: list[S3Object] = []
    newest: date | None = None
    for obj in list_after(s3, bucket, prefix, mark.position):
        rel = obj.key[len(prefix):]
        listed.add(rel)
        m = _DAY.match(rel)
        if m:
            try:
                day = date(int(m[1]), int(m[2]), int(m[3]))
            except ValueError:
                day = None
            if day is not None and (newest is None or day > newest):
                newest = day
        if rel not in mark.seen:
            new.append(obj)
    return ScopePlan(mark, prefix, new, listed, newest)
