"""One scan, stage by stage: read -> detect -> store. Each stage takes plain data and returns plain data.

The pipeline owns no state between runs (the store does) and imports no cloud SDK. A connector that could
not read something says so in the run report; the pipeline carries that report to the store and the sinks
so a blind spot is never shown as an all clear.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .findings import Finding
from .records import Tables
from .report import RunReport
from .store import Change, Store


@dataclass
class ScanResult:
    findings: list[Finding]  # every finding the scan saw, as stored (worst first)
    changes: dict[str, Change]  # finding id -> new / updated / unchanged
    report: RunReport
    tables: Tables | None = field(default=None, repr=False)
    run_id: int | None = None

    @property
    def new(self) -> list[Finding]:
        return [f for f in self.findings if self.changes.get(f.id) == "new"]


def scan_directory(
    data: Path,
    *,
    store: Store | None,
    strict: bool = False,
    progress: Callable[[int], None] | None = None,
    now: datetime | None = None,
    keep_tables: bool = False,
) -> ScanResult:
    """Scan local copies of cloud exports under `data` and store what is found.

    `now` is the scan time recorded as detected_at; by default the wall clock. Raises
    `spendwatch.report.StrictError` on the first bad input when `strict`, FileNotFoundError when `data`
    is not a directory.
    """
    from .connectors.files import read_directory
    from .models import detect

    if not data.is_dir():
        raise FileNotFoundError(f"{data}: no such directory")
    started = datetime.now(UTC)
    report = RunReport(strict=strict)
    with report.timed("read"):
        tables = read_directory(data, report, progress=progress)
    report.tables = tables.counts()
    if not report.sources:
        report.gap(str(data), "no export files found: nothing was scanned")
    with report.timed("detect"):
        found = detect(tables, now=now or started)
    return _finish(found, report, tables if keep_tables else None, store, str(data), started)


def scan_aws(
    config: Any,
    *,
    store: Store | None,
    strict: bool = False,
    now: datetime | None = None,
    keep_tables: bool = False,
    hooks: Sequence[Any] = (),
    progress: Callable[[int], None] | None = None,
) -> ScanResult:
    """Scan live AWS accounts (`config`: a `spendwatch.connectors.aws.AwsConfig`) from where the last run
    stopped, store what is found, then move the watermarks.

    Watermarks are saved only after the findings are stored, in one transaction: a run killed before that
    leaves the old watermarks, and the next run reads the same data again (findings are upserted by their
    stable id, so nothing is duplicated). `hooks` go to every boto3 client (tests).
    """
    from .connectors.aws import scan
    from .models import detect
    from .store import Watermarks

    started = datetime.now(UTC)
    report = RunReport(strict=strict)
    marks = Watermarks(store).load("aws") if store is not None else {}
    with report.timed("read"):
        got = scan(config, report, marks=marks, hooks=hooks, now=started, progress=progress)
    tables = got.tables
    report.tables = tables.counts()
    with report.timed("detect"):
        found = detect(tables, now=now or started) if any(report.tables.values()) else []
    source = "aws:" + (",".join(got.accounts) if len(got.accounts) <= 5 else f"{len(got.accounts)} accounts")
    result = _finish(found, report, tables if keep_tables else None, store, source, started)
    if store is not None:
        Watermarks(store).save(got.marks, now=datetime.now(UTC))
    return result


def _finish(
    found: list[Finding],
    report: RunReport,
    tables: Tables | None,
    store: Store | None,
    source: str,
    started: datetime,
) -> ScanResult:
    run_id = None
    with report.timed("store"):
        stored = store.upsert(found, now=started) if store is not None else [(f, "new") for f in found]
    stored.sort(key=lambda fc: (-int(fc[0].severity), -fc[0].score, fc[0].id))
    findings = [f for f, _ in stored]
    changes: dict[str, Change] = {f.id: c for f, c in stored}
    if store is not None:
        run_id = store.record_run(
            started_at=started,
            finished_at=datetime.now(UTC),
            source=source,
            report=report.to_dict(),
            findings=len(findings),
            new_findings=sum(1 for c in changes.values() if c == "new"),
        )
    return ScanResult(findings, changes, report, tables, run_id)
