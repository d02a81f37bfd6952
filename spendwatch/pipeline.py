"""One scan, stage by stage: read -> detect -> store. Each stage takes plain data and returns plain data.

The pipeline owns no state between runs (the store does) and imports no cloud SDK. A connector that could
not read something says so in the run report; the pipeline carries that report to the store and the sinks
so a blind spot is never shown as an all clear.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from .findings import Finding
from .records import Tables
from .report import RunReport
from .store import Change, Store


class FlowSource(Protocol):
    """Where a scan's flow aggregate comes from when not from the flow log files (scan_directory)."""

    @property
    def skip(self) -> Collection[str]:  # file kinds left unread
        ...

    def __call__(self, tables: Tables, flows: Any, report: RunReport) -> None: ...


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
    flows_from: FlowSource | None = None,
) -> ScanResult:
    """Scan local copies of cloud exports under `data` and store what is found.

    `now` is the scan time recorded as detected_at; by default the wall clock. With `flows_from` (e.g.
    `spendwatch.engine.remote.WarehouseFlows`), files of its `skip` kinds are left unread and the flow
    aggregate comes from it instead: it is called with the tables the other sources gave, the FlowEngine and
    the report, once they are read. Raises
    `spendwatch.report.StrictError` on the first bad input when `strict`, FileNotFoundError when `data`
    is not a directory.
    """
    from .connectors.files import read_directory
    from .engine.flows import FlowEngine

    if not data.is_dir():
        raise FileNotFoundError(f"{data}: no such directory")
    # Detection's imports load while the files are read, not before; the forest's (scikit-learn and SciPy: about
    # a second) only when there is something to read, as a scan with no resource-hours never fits one.
    anything = next((p for p in data.rglob("*") if p.is_file()), None) is not None
    models = _import_in_background(f"{__package__}.models", *([f"{__package__}.models.forest"] if anything else []))
    started = datetime.now(UTC)
    report = RunReport(strict=strict)
    # Flow records are reduced into DuckDB while they are read, then summarised there for detection
    # (spendwatch.engine): memory stays flat with volume, and detection gets small tables.
    with FlowEngine() as engine:
        with report.timed("read"):
            tables = read_directory(data, report, progress=progress, flows=engine,
                                    skip=flows_from.skip if flows_from is not None else ())
            if flows_from is not None:
                flows_from(tables, engine, report)
            summary = _flow_summary(engine, tables, report)
        if not report.sources:
            report.gap(str(data), "no export files found: nothing was scanned")
        models.join()
        from .models import detect

        with report.timed("detect"):
            found = detect(tables, now=now or started, model=_org_model(store), flow_summary=summary)
    return _finish(found, report, tables if keep_tables else None, store, str(data), started)


def _flow_summary(engine: Any, tables: Tables, report: RunReport) -> Any:
    """What detection reads of the flows a scan handed `engine` (a FlowSummary, or None when there were
    none), with `tables.flows` set to its rule rows and the report's table counts filled in."""
    summary = engine.summary(tables) if engine.records else None
    if summary is not None:
        tables.flows = summary.rows
    report.tables = tables.counts()
    if summary is not None:
        report.tables["flows"] = summary.records
        report.notes.append(f"flows: {summary.records:,} records reduced to {summary.aggregates:,} per-window "
                            f"aggregates; features per window computed in DuckDB, {len(tables.flows):,} rows kept "
                            "for the rules that read flows one by one")
    return summary


def _import_in_background(*names: str) -> threading.Thread:
    """Start importing modules `names`, in order, in a thread; join it before use (an import error then surfaces
    at the ordinary import that follows). The readers release the GIL while parsing, so the two overlap."""

    def run() -> None:
        for name in names:
            with contextlib.suppress(Exception):
                importlib.import_module(name)

    thread = threading.Thread(target=run, name=f"import {', '.join(names)}", daemon=True)
    thread.start()
    return thread


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
    stable id, so nothing is duplicated). `hooks` go to every boto3 client (tests). `now` (default: the clock)
    is detection's now and ends the windows of the sources read "up to now" (metrics, `[aws.athena]`).
    """
    from .connectors.aws import scan
    from .engine.flows import FlowEngine
    from .models import detect
    from .store import Watermarks

    forest = _import_in_background(f"{__package__}.models.forest")  # while the clouds answer
    started = datetime.now(UTC)
    report = RunReport(strict=strict)
    marks = Watermarks(store).load("aws") if store is not None else {}
    with FlowEngine() as engine:  # flow records reduced as they are fetched, as in scan_directory
        with report.timed("read"):
            got = scan(config, report, marks=marks, hooks=hooks, now=now or started, progress=progress,
                       flows=engine)
            tables = got.tables
            summary = _flow_summary(engine, tables, report)
        forest.join()
        with report.timed("detect"):
            found = (detect(tables, now=now or started, model=_org_model(store), flow_summary=summary)
                     if any(report.tables.values()) else [])
    source = "aws:" + (",".join(got.accounts) if len(got.accounts) <= 5 else f"{len(got.accounts)} accounts")
    result = _finish(found, report, tables if keep_tables else None, store, source, started)
    if store is not None:
        Watermarks(store).save(got.marks, now=datetime.now(UTC))
    return result


def scan_live(
    configs: Mapping[str, Any],
    *,
    store: Store | None,
    strict: bool = False,
    now: datetime | None = None,
    keep_tables: bool = False,
    credentials: Mapping[str, Any] | None = None,
) -> ScanResult:
    """Scan live clouds in one run: `configs` maps "aws", "gcp" and "azure" to their connector's settings
    (`AwsConfig`, `GcpConfig`, `AzureConfig`). One report, one detection over every cloud's tables, then every
    cloud's watermarks are saved, after the findings are stored (as `scan_aws` does, for the same reason).

    `credentials` maps a cloud to a credential its connector takes instead of the default (Azure: a token
    credential). Each connector reports its own gaps; a cloud's connector is imported only when configured.
    `now` (default: the clock) also ends the window of the API sources that read "up to now" (metrics).
    """
    from importlib import import_module

    from .engine.flows import FlowEngine
    from .models import detect
    from .store import Watermarks

    forest = _import_in_background(f"{__package__}.models.forest")  # while the clouds answer
    started = datetime.now(UTC)
    report = RunReport(strict=strict)
    parts: dict[str, list[Any]] = {}
    marks: list[Any] = []
    labels: list[str] = []
    with FlowEngine() as engine:  # one engine: every cloud's flow records reduced into it as they are fetched
        with report.timed("read"):
            for cloud, config in configs.items():
                connector = import_module(f".connectors.{cloud}", __package__)
                extra = {"credential": credentials[cloud]} if credentials and cloud in credentials else {}
                got = connector.scan(config, report,
                                     marks=Watermarks(store).load(cloud) if store is not None else {},
                                     now=now or started, flows=engine, **extra)
                for name, frame in got.tables.items():
                    parts.setdefault(name, []).append(frame)
                marks.extend(got.marks)
                accounts = got.accounts
                labels.append(f"{cloud}:" + (",".join(accounts) if len(accounts) <= 5
                                             else f"{len(accounts)} accounts"))
            tables = Tables.concat(parts)
            summary = _flow_summary(engine, tables, report)
        forest.join()
        with report.timed("detect"):
            found = (detect(tables, now=now or started, model=_org_model(store), flow_summary=summary)
                     if any(report.tables.values()) else [])
    result = _finish(found, report, tables if keep_tables else None, store, " ".join(labels), started)
    if store is not None:
        Watermarks(store).save(marks, now=datetime.now(UTC))
    return result


def _org_model(store: Store | None) -> Any:
    """The organisation's baseline model, stored beside the state database (spendwatch.models.model_store):
    loaded when fresh, retrained and saved when absent or stale. None without a file-backed store."""
    if store is None:
        return None
    from .models.model_store import StoredModel

    return StoredModel.beside(store)


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
