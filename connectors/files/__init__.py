"""The files connector: a local copy of the clouds' S3 export buckets in, canonical tables out.

`read_directory(root, report)` walks `root`, names each file's kind from its content and key layout
(`detect.py`), reads it with the reader of its native format (one module each: `vpcflow`, `cloudtrail`,
`route53`, `cur`, `metrics`), then joins across files (`enrich.py`): inventory from CloudTrail launches,
and the instance behind a flow's interface or a DNS query's source address.

Files are read in a thread pool, in tasks of neighbouring files: the heavy parts (gunzip, pyarrow's CSV,
JSON and Parquet readers) release the GIL, and the many small files of flow logs, Resolver logs and metric
streams are parsed several at a time (`MANY_READERS`), because with files of a few kilobytes per-call
overhead, not parsing, is what costs. A batch that meets any problem is read again file by file, so results
and problem lines are the same either way.

Bad input never stops a run and is never dropped silently: every damaged file, bad record or file of no
known kind is a `Problem` in the run report, with the file, the line (or record number) and the reason, and
the good records of the same file are kept. Problems and reads are entered in the report in path order once
all files are read, so a report is the same from run to run; in a strict run the first problem raises
`StrictError` at once, from the thread that met it.

Known metadata (CUR manifests, CloudTrail digests, Athena/Redshift helper files) is entered as read with kind
"metadata" and no records. GCP's and Azure's exports plug into the same walk: Cloud Logging entries in
Cloud Storage, the billing export and Monitoring time series (`gcp`), and the Activity Log, VNet flow logs,
metrics and cost exports that diagnostic settings and Cost Management write to a storage account (`azure`).
This connector only reads what it is given; it never reaches a cloud.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Callable, Collection
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa

from spendwatch.records import Tables
from spendwatch.report import RunReport, StrictError

if TYPE_CHECKING:
    from spendwatch.engine.flows import FlowEngine

from . import azure, cloudtrail, cur, enrich, gcp, metrics, route53, vpcflow
from ._common import PARQUET_MAGIC, FileContext, FileResult, to_pandas
from .detect import (
    AZ_ACTIVITY,
    AZ_COST,
    AZ_FLOWS,
    AZ_METRICS,
    CLOUDTRAIL,
    CUR2,
    CUR_CSV,
    FLOW_PARQUET,
    FLOW_TEXT,
    GCP_AUDIT,
    GCP_BILLING,
    GCP_DNS,
    GCP_FLOWS,
    GCP_LOGGING,
    GCP_MONITORING,
    METADATA,
    METRIC_CSV,
    METRIC_STREAM,
    RESOLVER,
)
from .detect import detect as detect_kind  # keeps `files.detect` the module, not this function

__all__ = ["READERS", "Blob", "read_directory", "read_objects"]

Reader = Callable[[PurePath, bytes, FileContext], FileResult]

# Kind -> reader. A new native format is one module and one line here.
READERS: dict[str, Reader] = {
    FLOW_TEXT: vpcflow.read_text,
    FLOW_PARQUET: vpcflow.read_parquet,
    CLOUDTRAIL: cloudtrail.read,
    RESOLVER: route53.read,
    CUR2: cur.read_parquet,
    CUR_CSV: cur.read_csv,
    METRIC_STREAM: metrics.read_stream,
    METRIC_CSV: metrics.read_csv,
    GCP_AUDIT: gcp.read_logging,
    GCP_FLOWS: gcp.read_logging,
    GCP_DNS: gcp.read_logging,
    GCP_LOGGING: gcp.read_logging,
    GCP_BILLING: gcp.read_billing,
    GCP_MONITORING: gcp.read_monitoring,
    AZ_ACTIVITY: azure.read_activity,
    AZ_FLOWS: azure.read_flows,
    AZ_METRICS: azure.read_metrics,
    AZ_COST: azure.read_cost,
}

# The simulator's ground truth beside the buckets it writes (spendwatch.simulate.TRUTH_FILE): not an export,
# skipped with a note. Only at the top of the scanned directory; anywhere else it is an unknown file.
SIMULATOR_TRUTH = "TRUTH.json"

BATCH_FILES = 64
_SNIFF_BYTES = 65536 + 1  # more than detect.py looks at of a file's content (so it sees an incomplete file)
BATCH_BYTES = 4 << 20  # compressed bytes per task
# Parquet flow logs are read by DuckDB a batch per query (vpcflow.read_parquet_many), and each query costs tens
# of milliseconds whatever its size: their batches are larger.
PARQUET_BATCH_FILES = 1024
PARQUET_BATCH_BYTES = 64 << 20

# Kinds whose files are read several at a time (small files, where per-call overhead would dominate).
MANY_READERS: dict[str, Callable[[list[tuple[PurePath, bytes, FileContext]]], list[FileResult]]] = {
    FLOW_TEXT: vpcflow.read_text_many,
    METRIC_STREAM: metrics.read_stream_many,
    RESOLVER: route53.read_many,
}

# Threads, not processes: gunzip and pyarrow parsing release the GIL, and results stay in one address space.
# One per core: measured on 2 cores, a third or fourth thread only adds GIL contention.
WORKERS = max(2, min(8, os.cpu_count() or 2))


class _Buffered(FileContext):
    """A FileContext that keeps problems until the connector enters them in path order (strict runs raise
    at once, through the report)."""

    def __init__(self, path: str, report: RunReport) -> None:
        super().__init__(path, report)
        self.pending: list[tuple[str, int | None, int]] = []

    def reset(self) -> None:
        self.pending.clear()
        self.skipped = 0

    def problem(self, reason: str, line: int | None = None, records: int = 1) -> None:
        if self.report.strict:
            self.report.problem(self.path, reason, line=line, records=records)
        self.skipped += records
        self.pending.append((reason, line, records))


@dataclass
class _Outcome:
    path: str
    kind: str | None
    result: FileResult
    ctx: _Buffered
    note: str | None = None


@dataclass(frozen=True)
class Blob:
    """One export file that is not on local disk (an S3 object): the name it has in the run report, its key
    (whose layout names account, region and service), its size, and how to fetch its bytes.

    `load` runs in a reader thread; it raises OSError when the bytes cannot be had, which is reported as a
    problem with this file like an unreadable local file. Any other exception stops the read.
    """

    name: str
    key: str
    size: int
    load: Callable[[], bytes]


# name in the report, key layout, whether it is the simulator's truth file, how to get the bytes
_Job = tuple[str, PurePosixPath, bool, Callable[[], bytes]]


def read_directory(root: Path, report: RunReport, *, progress: Callable[[int], None] | None = None,
                   flows: FlowEngine | None = None, skip: Collection[str] = ()) -> Tables:
    """Read every file under `root` into canonical tables; what could not be read goes to `report`.

    `progress(n)` is called (from the calling thread) with the size in bytes of each file once it is read.
    With `flows`, flow records are handed to that engine batch by batch as they are read (spendwatch.engine.flows)
    and `flows` in the tables is left empty: `flows.summary(tables)` gives what detection reads of them.
    Files of a kind in `skip` (detect.py's kinds, e.g. FLOW_TEXT when a warehouse reads the flow logs) are
    left unread, with one note saying how many. Raises StrictError on the first problem when `report.strict`.
    """
    root = Path(root)
    layout_base = _layout_base(root)
    jobs = [((str(path), layout_base / path.relative_to(root), path.parent == root and path.name == SIMULATOR_TRUTH,
              path.read_bytes), size) for path, size in _walk(root)]
    if skip:
        jobs = _skip(jobs, skip, report)
    return _read_jobs(jobs, report, progress, flows)


def _skip(jobs: list[tuple[_Job, int]], skip: Collection[str], report: RunReport) -> list[tuple[_Job, int]]:
    """`jobs` less the local files whose kind is in `skip`, decided from their first bytes (gzip text needs
    no more; Parquet is read whole for its footer). An unreadable file stays, to be reported as usual."""
    kept, left = [], Counter[str]()
    for job, size in jobs:
        name, layout, truth, _ = job
        try:
            with open(name, "rb") as handle:
                head = handle.read(_SNIFF_BYTES)
                if head.startswith(PARQUET_MAGIC):
                    head += handle.read()
        except OSError:
            head = b""
        kind = None if truth or not head else detect_kind(layout, head).kind
        if kind is not None and kind in skip:
            left[kind] += 1
        else:
            kept.append((job, size))
    if left:
        report.notes.append("left unread (not needed, or read from elsewhere): "
                            + ", ".join(f"{n} {kind} files" for kind, n in sorted(left.items())))
    return kept


def read_objects(objects: Collection[Blob], report: RunReport, *,
                 progress: Callable[[int], None] | None = None, flows: FlowEngine | None = None) -> Tables:
    """Read export files given as `Blob`s (e.g. S3 objects) into canonical tables, exactly as `read_directory`
    reads files: same detection, readers, joins, problems and report entries (named by `Blob.name`).

    Blobs are read in the order of their names; `load` is called from the reader threads, so fetches overlap.
    `flows` as for `read_directory`.
    """
    jobs = [((b.name, PurePosixPath(b.key), False, b.load), b.size) for b in sorted(objects, key=lambda b: b.name)]
    return _read_jobs(jobs, report, progress, flows)


def _read_jobs(files: list[tuple[_Job, int]], report: RunReport,
               progress: Callable[[int], None] | None, flows: FlowEngine | None = None) -> Tables:
    outcomes: list[_Outcome] = []
    with report.timed("read: files"), ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures: dict[Future[list[_Outcome]], list[int]] = {
            pool.submit(_read_batch, [job for job, _ in batch], report, flows): [size for _, size in batch]
            for batch in _batches(files)
        }
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                try:
                    outcomes.extend(future.result())
                except BaseException:
                    for other in pending:
                        other.cancel()
                    raise
                if progress is not None:
                    for size in futures[future]:
                        progress(size)
    outcomes.sort(key=lambda o: o.path)
    with report.timed("read: join"):
        tables = _assemble(outcomes, report, flows)
    return tables


def _batches(files: list[tuple[_Job, int]]) -> list[list[tuple[_Job, int]]]:
    """Neighbouring files in groups of at most BATCH_FILES files and BATCH_BYTES bytes: hourly exports are
    small, and one task per file would spend more on scheduling and per-call overhead than on reading."""
    out: list[list[tuple[_Job, int]]] = []
    size = 0
    parquet = False  # whether the open batch holds Parquet files, whose limits are larger (PARQUET_BATCH_BYTES)
    for job, n in files:
        this = job[0].endswith(".parquet")
        files_max, bytes_max = (PARQUET_BATCH_FILES, PARQUET_BATCH_BYTES) if this else (BATCH_FILES, BATCH_BYTES)
        if not out or this != parquet or len(out[-1]) >= files_max or size + n > bytes_max:
            out.append([])
            size = 0
            parquet = this
        out[-1].append((job, n))
        size += n
    return out


def _walk(root: Path) -> list[tuple[Path, int]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            try:
                out.append((path, path.stat().st_size))
            except OSError:
                out.append((path, 0))
    return out


def _layout_base(root: Path) -> PurePosixPath:
    """The part of `root` that belongs to the bucket layout (from its last `AWSLogs`), so that pointing the
    scan at `.../AWSLogs/<account>/vpcflowlogs` still reveals the account and the service."""
    parts = root.resolve().parts
    if "AWSLogs" in parts:
        i = len(parts) - 1 - parts[::-1].index("AWSLogs")
        return PurePosixPath(*parts[i:])
    return PurePosixPath()


def _read_batch(job: list[_Job], report: RunReport, flows: FlowEngine | None = None) -> list[_Outcome]:
    """Read a group of files; those of a kind in MANY_READERS are read together. With `flows`, their flow
    records go to that engine here, in the reader thread, so no batch's records outlive the batch (text flow
    logs arrive already reduced, see vpcflow.read_text_many)."""
    outcomes: list[_Outcome] = []
    deferred: dict[str, list[tuple[_Outcome, PurePosixPath, bytes]]] = {}
    local: dict[str, str] = {}  # report name -> file on disk, for Parquet flow logs DuckDB reads itself
    for name, layout, truth, load in job:
        outcome, raw = _read_one(name, layout, report, truth, load,
                                 defer=[*MANY_READERS, FLOW_PARQUET] if flows is not None else MANY_READERS)
        if raw is not None and outcome.kind is not None:
            deferred.setdefault(outcome.kind, []).append((outcome, layout, raw))
            if isinstance(getattr(load, "__self__", None), Path):  # read_directory's loads are Path.read_bytes
                local[name] = str(load.__self__)  # type: ignore[attr-defined]
        outcomes.append(outcome)
    for kind, files in deferred.items():
        try:
            items = [(layout, raw, o.ctx) for o, layout, raw in files]
            if kind == FLOW_PARQUET and flows is not None:
                results = _parquet_flows(files, local, flows)
            elif kind == FLOW_TEXT and flows is not None:
                results = vpcflow.read_text_many(items, flows.reduce)
            else:
                results = MANY_READERS[kind](items)
        except StrictError:
            raise
        except Exception:  # a many-file path bug must not cost data: fall back to the one-file reader
            for o, _, _ in files:
                o.ctx.reset()  # forget what the failed attempt recorded, or it would be recorded twice
            results = [_guarded(kind, layout, raw, o.ctx) for o, layout, raw in files]
        for (outcome, _, _), result in zip(files, results, strict=True):
            outcome.result = result
    if flows is not None:
        for outcome in outcomes:
            table = outcome.result.tables.get("flows")
            if table is not None:
                outcome.result.records = outcome.result.rows()  # what the file gave, for the report
                del outcome.result.tables["flows"]
                flows.add(table)
    return outcomes


def _parquet_flows(files: list[tuple[_Outcome, PurePosixPath, bytes]], local: dict[str, str],
                   flows: FlowEngine) -> list[FileResult]:
    """Parquet flow logs: the clean ones reduced by DuckDB from the files themselves (vpcflow.read_parquet_many);
    any other read as one file each, its records handed to `flows` as usual. DuckDB reads files: an object
    fetched from S3 (its bytes already in memory) is written to a temporary file for it first, a batch at a time
    (at most PARQUET_BATCH_BYTES); one that cannot be written (a full /tmp) takes the one-file path."""
    results: list[FileResult | None] = [None] * len(files)
    with tempfile.TemporaryDirectory(prefix="spendwatch-parquet-") as spill:
        paths: dict[int, str] = {}
        for i, (outcome, _, raw) in enumerate(files):
            if outcome.path in local:
                paths[i] = local[outcome.path]
                continue
            target = os.path.join(spill, f"{i}.parquet")
            try:
                with open(target, "wb") as handle:
                    handle.write(raw)
            except OSError:
                continue
            paths[i] = target
        fast = vpcflow.read_parquet_many([(paths[i], files[i][1], files[i][0].ctx) for i in paths], flows)
    for i, result in zip(paths, fast, strict=True):
        results[i] = result
    return [r if r is not None else _guarded(FLOW_PARQUET, layout, raw, o.ctx)
            for r, (o, layout, raw) in zip(results, files, strict=True)]


def _read_one(path: str, layout: PurePosixPath, report: RunReport, truth: bool, load: Callable[[], bytes],
              defer: Collection[str] = ()) -> tuple[_Outcome, bytes | None]:
    """Read one file; a file of a kind in `defer` is only detected, and its bytes returned for the caller."""
    ctx = _Buffered(path, report)
    if truth:
        note = f"skipped {path}: the simulator's ground truth, not an export"
        return _Outcome(path, None, FileResult(), ctx, note), None
    try:
        raw = load()
    except OSError as exc:
        ctx.problem(f"file cannot be read ({exc.strerror or exc})")
        return _Outcome(path, None, FileResult(), ctx), None
    found = detect_kind(layout, raw)
    if found.kind is None:
        ctx.problem(f"not a known export format ({found.seen})", records=0)
        return _Outcome(path, None, FileResult(), ctx), None
    if found.kind == METADATA:
        return _Outcome(path, METADATA, FileResult(), ctx), None
    if found.content is not None:
        raw = found.content  # already inflated while sniffing; readers take plain bytes as they are
    if found.kind in defer:
        return _Outcome(path, found.kind, FileResult(), ctx), raw
    return _Outcome(path, found.kind, _guarded(found.kind, layout, raw, ctx), ctx), None


def _guarded(kind: str, layout: PurePosixPath, raw: bytes, ctx: _Buffered) -> FileResult:
    try:
        return READERS[kind](layout, raw, ctx)
    except StrictError:
        raise
    except Exception as exc:  # a reader bug or an input shape nobody foresaw: this file only, never the run
        ctx.problem(f"{kind} file could not be read ({type(exc).__name__}: {exc}); records lost: at least one")
        return FileResult()


def _assemble(outcomes: list[_Outcome], report: RunReport, reducer: FlowEngine | None = None) -> Tables:
    counts: Counter[str] = Counter()
    parts: dict[str, list[pa.Table]] = {}
    launches = []
    changes = []
    addresses: dict[str, list[str]] = {}
    for o in outcomes:
        for reason, line, records in o.ctx.pending:
            report.problem(o.path, reason, line=line, records=records)
        if o.note:
            report.notes.append(o.note)
        if o.kind is not None:
            report.read(o.path, o.kind, o.result.rows(), o.ctx.skipped)
            counts[f"{o.kind} files"] += 1
        counts.update(o.result.counts)
        for name, table in o.result.tables.items():
            parts.setdefault(name, []).append(table)
        launches.extend(o.result.launches)
        addresses.update(o.result.addresses)
        changes.extend(o.result.state_changes)
    _notes(counts, report)

    enrich.attach_addresses(launches, addresses)
    first = enrich.first_launches(launches)
    frames: dict[str, list[pd.DataFrame]] = {}
    if reducer is not None:  # the engine joins interfaces to instances itself, in SQL (enrich.fill_flow_resources)
        # update, not replace: one engine may take the reads of several connectors (pipeline.scan_live)
        reducer.owners.update({eni: launch.resource for launch in first.values() for eni in launch.interfaces})
    flows = _concat(parts.get("flows")) if reducer is None else None
    if flows is not None:
        frames["flows"] = [to_pandas(enrich.fill_flow_resources(flows, first))]
    activity = _concat(parts.get("activity"))
    if activity is not None:
        frame = to_pandas(activity)
        # The same event arrives twice when both an account trail and an organisation trail are copied.
        dupes = frame["event_id"].notna() & frame.duplicated(["event_id", "action", "resource"])
        frames["activity"] = [frame[~dupes].sort_values("time", kind="stable")]
    dns = _concat(parts.get("dns"))
    if dns is not None:
        frames["dns"] = [enrich.fill_dns_resources(to_pandas(dns), first)]
    for name in ("spend", "utilization"):
        table = _concat(parts.get(name))
        if table is not None:
            frames[name] = [to_pandas(table)]
    if first:
        frames["inventory"] = [enrich.inventory(first, changes)]
    return Tables.concat(frames)


def _concat(tables: list[pa.Table] | None) -> pa.Table | None:
    tables = [t for t in tables or [] if t.num_rows]
    if not tables:
        return None
    table = pa.concat_tables(tables, promote_options="default")
    # pandas builds its nullable int, float, bool and time columns from one chunk far faster than from
    # hundreds; string columns stay chunked, pandas' Arrow-backed "str" wraps them without a copy.
    columns = [c if pa.types.is_large_string(c.type) else pa.chunked_array([c.combine_chunks()])
               for c in table.columns]
    return pa.Table.from_arrays(columns, schema=table.schema)


def _notes(counts: Counter[str], report: RunReport) -> None:
    nodata, skipdata = counts["flow NODATA"], counts["flow SKIPDATA"]
    if nodata or skipdata:
        report.notes.append(
            f"vpc flow logs: {nodata} NODATA and {skipdata} SKIPDATA records (capture windows with no traffic, "
            "or whose records AWS skipped) are not traffic and were not turned into flows"
        )
    if counts["metric samples not used"]:
        report.notes.append(f"metric streams: {counts['metric samples not used']} samples of metrics spendwatch "
                            "does not use (or not tied to one instance) were left out")
    if counts["metadata files"]:
        report.notes.append(f"{counts['metadata files']} metadata files (manifests, digests) hold no records")
