"""The run report: what a scan read, what it could not read, and why.

Nothing is dropped silently. Every file a connector looked at is a `SourceRead` (with its kind and how many
records it gave each table); every record or file it had to skip is a `Problem` with the file, the line
where there is one, and the reason. A source that could not be read at all is a `Gap`, shown to the user as
missing coverage, never as an all clear.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any


class StrictError(RuntimeError):
    """Raised instead of recording a problem when the run is strict (`--strict`)."""


@dataclass
class Problem:
    source: str  # file path or source name
    reason: str
    line: int | None = None  # 1-based line or record number, where the format has one
    records: int = 1  # how many records the problem cost (0: the file was read but something is off)

    def where(self) -> str:
        return f"{self.source}:{self.line}" if self.line is not None else self.source


@dataclass
class Gap:
    source: str  # e.g. "aws/123456789012/eu-west-1/flows" or a directory
    reason: str


@dataclass
class SourceRead:
    path: str
    kind: str  # e.g. "vpc-flow-logs", "cloudtrail"
    records: dict[str, int] = field(default_factory=dict)  # table -> rows contributed
    skipped: int = 0  # records skipped inside the file (each is also a Problem)


@dataclass
class RunReport:
    """Collects what one run read. Safe to add to from several threads."""

    strict: bool = False
    sources: list[SourceRead] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    tables: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def problem(self, source: str, reason: str, line: int | None = None, records: int = 1) -> None:
        """Record a bad record or file; raises StrictError instead when the run is strict."""
        p = Problem(str(source), reason, line, records)
        if self.strict:
            raise StrictError(f"{p.where()}: {reason}")
        with self._lock:
            self.problems.append(p)

    def gap(self, source: str, reason: str) -> None:
        with self._lock:
            self.gaps.append(Gap(str(source), reason))

    def read(self, path: str, kind: str, records: dict[str, int], skipped: int = 0) -> None:
        with self._lock:
            self.sources.append(SourceRead(str(path), kind, dict(records), skipped))

    def timed(self, stage: str) -> _Timer:
        return _Timer(self, stage)

    @property
    def skipped_records(self) -> int:
        return sum(p.records for p in self.problems)

    def kinds(self) -> Counter[str]:
        return Counter(s.kind for s in self.sources)

    @property
    def complete(self) -> bool:
        """True only when every source was read with no problem and no gap."""
        return not self.problems and not self.gaps

    def to_dict(self) -> dict[str, Any]:
        return {
            "complete": self.complete,
            "sources": dict(self.kinds()),
            "files_read": len(self.sources),
            "tables": dict(self.tables),
            "skipped_records": self.skipped_records,
            "problems": [asdict(p) for p in self.problems],
            "gaps": [asdict(g) for g in self.gaps],
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "notes": list(self.notes),
        }


class _Timer:
    def __init__(self, report: RunReport, stage: str) -> None:
        self.report, self.stage = report, stage

    def __enter__(self) -> _Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self.t0
        self.report.timings[self.stage] = self.report.timings.get(self.stage, 0.0) + elapsed
