"""The live GCP scan: the sinks' and exports' objects in Cloud Storage, and the Compute API's inventory.

`scan(config, report, marks=...)` lists each configured location incrementally (`spendwatch.connectors.live`,
by name: sink and Monitoring objects sit under `YYYY/MM/DD/` folders), fetches the new objects and parses them
with the files connector's readers (`read_objects`), so a bucket and a local copy of it give the same tables.
The Compute API adds what the logs cannot know: instances launched before the logs begin, their state now,
their GPUs (`inventory.py`). With `monitoring_api = true`, utilisation comes from Cloud Monitoring
(`monitoring.py`) instead of a bucket of saved series; with `billing_table`, spend comes from a BigQuery query
of the billing export table (`billing.py`) instead of export files; with `[gcp.bigquery]`, the flows are
reduced in BigQuery over the flow log sink's table (`bigquery_flows`) and the sinks' `vpc_flows/` objects are
neither listed nor fetched.

What could not be read is a gap named `gcp/<project or *>/<source>`: a bucket that answers 403 names the
bucket and the permission; a sink folder with no objects at all says so; a source not configured says which
key to set. The watermarks are returned, not saved: the caller saves them after the findings are stored
(`spendwatch.pipeline.scan_live`).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from spendwatch.connectors.files import Blob, read_objects
from spendwatch.connectors.live import Listed, LiveScan, ScopePlan, merge_api_sources, plan_by_name
from spendwatch.report import RunReport, StrictError
from spendwatch.store import Watermark

from . import billing, gcs, monitoring
from .config import GcpConfig, GcsLocation
from .inventory import GcpOptions, list_inventory
from .permissions import UndeclaredCall, permission

if TYPE_CHECKING:
    from spendwatch.engine.flows import FlowEngine
    from spendwatch.records import Tables

CLOUD = "gcp"
ANY = "*"
# The folders a Cloud Logging sink writes under its bucket (the log id), and the source each one feeds.
SINK_LOGS = (("cloudaudit.googleapis.com/activity/", "activity"), ("compute.googleapis.com/vpc_flows/", "flows"),
             ("dns.googleapis.com/dns_queries/", "dns"))

MarkKey = tuple[str, str, str, str, str]


def scan(config: GcpConfig, report: RunReport, *, marks: Mapping[MarkKey, Watermark] | None = None,
         now: datetime | None = None, progress: Callable[[int], None] | None = None,
         flows: FlowEngine | None = None) -> LiveScan:
    """Read what is new in every configured bucket, and the inventory of every project; gaps go to `report`.

    `marks` are the watermarks earlier runs saved (`Watermarks(store).load("gcp")`). Raises StrictError on
    the first bad record when `report.strict`; any other failure of a source is a gap for that source.
    `now` ends the window of the API sources (default: the clock). With `flows`, flow records go to that
    engine as they are read (`files.read_objects`) and the tables' flows stay empty.
    """
    scan = _Scan(config, report, marks or {}, now or datetime.now(UTC))
    scan.flows = flows
    return scan.run(progress)


class _Scan:
    def __init__(self, config: GcpConfig, report: RunReport, marks: Mapping[MarkKey, Watermark],
                 now: datetime) -> None:
        self.config, self.report, self.old, self.now = config, report, marks, now
        self.retry = None
        self.client: Any = None
        self.blobs: list[Blob] = []
        self.flows: FlowEngine | None = None  # where flow records go as they are read (scan's `flows`)
        self.plans: list[tuple[str, ScopePlan]] = []  # (bucket, plan)
        self.failed: set[tuple[str, str]] = set()  # (bucket, name) of objects whose fetch failed
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def call(self, name: str) -> None:
        """Check that a call is declared (raises UndeclaredCall otherwise) and count it."""
        perm = permission(name)
        with self._lock:
            self.calls[perm] += 1

    def gap(self, source: str, reason: str, account: str = ANY) -> None:
        self.report.gap(f"{CLOUD}/{account}/{source}", reason)

    # -- Cloud Storage -----------------------------------------------------------------------------------

    def storage(self) -> Any:
        if self.client is None:
            cfg = self.config
            self.client = gcs.client(cfg.projects[0] if cfg.projects else None, endpoint=cfg.storage_endpoint,
                                     anonymous=cfg.anonymous)
            self.retry = gcs.retry(cfg.backoff_s, cfg.retry_deadline_s)
        return self.client

    def plan(self, loc: GcsLocation, prefix: str, source: str) -> None:
        """List one scope after its watermark; queue its new objects. Failures are gaps of `source`."""
        where = f"gs://{loc.bucket}/{prefix}"
        key = (CLOUD, ANY, "", source, where)
        mark = self.old.get(key) or Watermark(*key, "")
        try:
            client = self.storage()
            self.call("Client.list_blobs")
            plan = plan_by_name(gcs.list_from(client, loc.bucket, prefix, mark.position, self.retry), prefix, mark)
        except StrictError:
            raise
        except Exception as exc:  # after the client's retries: this scope is unread, the others go on
            self.gap(source, gcs.describe(exc, where, "storage.objects.list"))
            return
        if not plan.listed and not mark.position and not mark.seen:
            self.gap(source, f"no objects under {where}: is the sink or export writing there?")
        self.plans.append((loc.bucket, plan))
        for obj in plan.new:
            self.blobs.append(Blob(f"gs://{loc.bucket}/{obj.name}", obj.name, obj.size, self._load(loc.bucket, obj)))

    def _load(self, bucket: str, obj: Listed) -> Callable[[], bytes]:
        def load() -> bytes:
            self.call("Blob.download_as_bytes")
            try:
                return gcs.download(self.client, bucket, obj, self.retry)
            except StrictError:
                raise
            except Exception as exc:  # this object is a problem of the run and is read again next run
                self.failed.add((bucket, obj.name))
                raise OSError(gcs.describe(exc, f"gs://{bucket}/{obj.name}", "storage.objects.get")) from exc
        return load

    def monitoring(self) -> monitoring.MonitoringRead:
        """Utilisation of every project from the Cloud Monitoring API; a project that fails is a gap."""
        cfg = self.config
        options = monitoring.MonitoringOptions(
            endpoint=cfg.monitoring_endpoint, anonymous=cfg.anonymous, period_s=cfg.monitoring_period_s,
            initial_hours=cfg.initial_hours, backoff_s=cfg.backoff_s, retry_deadline_s=cfg.retry_deadline_s)
        read = monitoring.read_utilization(cfg.projects, self.report, options, marks=self.old, now=self.now)
        self.report.notes.append(monitoring.summary(read))
        return read

    def billing_table(self) -> billing.BillingRead:
        """Spend since the watermark from the BigQuery billing export table; a failed query is a gap."""
        cfg = self.config
        assert cfg.billing_table is not None
        options = billing.BillingOptions(cfg.billing_table, endpoint=cfg.bigquery_endpoint, anonymous=cfg.anonymous,
                                         initial_hours=cfg.initial_hours, backoff_s=cfg.backoff_s,
                                         retry_deadline_s=cfg.retry_deadline_s)
        read = billing.read_spend(self.report, options, marks=self.old, now=self.now)
        self.report.notes.append(billing.summary(read))
        return read

    def bigquery_flows(self, tables: Tables) -> None:
        """`[gcp.bigquery]`: the window's flows reduced in BigQuery and added to the scan's FlowEngine, once the
        DNS answers are read (they decide which private peers the query keeps). A failed or denied query is a
        gap `bigquery:<table>` (WarehouseFlows); no engine, no credentials or anything else is a gap of flows."""
        from spendwatch.engine.remote import WarehouseFlows

        cfg = self.config
        flows = cfg.bigquery
        assert flows is not None
        self.report.notes.append(
            f"gcp flows: [gcp.bigquery] is set: flows are reduced in BigQuery ({flows.table}, the last "
            f"{flows.window_hours} h, jobs in {flows.project}); " +
            ("the sinks' compute.googleapis.com/vpc_flows/ objects are not read" if cfg.logs else
             "no sink bucket is read for flows"))
        if self.flows is None:
            self.gap("flows", "[gcp.bigquery] is set but this scan has no flow engine to add BigQuery's aggregate "
                              "rows to (spendwatch.pipeline's scans have one): no flows read")
            return
        try:
            api = _bigquery_client(cfg)
        except StrictError:
            raise
        except Exception as exc:  # no credentials (google.auth's DefaultCredentialsError), a bad endpoint
            self.gap("flows", f"bigquery:{flows.table}: no BigQuery client: {type(exc).__name__}: {exc}")
            return
        try:
            storage = _CountedStorage(self.storage(), self.call) if flows.export_uri else None
            source = WarehouseFlows.from_gcp(cfg, self.now, client=_Counted(api, self.call), storage=storage)
            source(tables, self.flows, self.report)
        except (StrictError, UndeclaredCall):
            raise
        except Exception as exc:  # what WarehouseFlows does not turn into a gap itself (not an API error)
            self.gap("flows", f"bigquery:{flows.table}: {type(exc).__name__}: {exc}")
        finally:
            api.close()

    # -- the run -------------------------------------------------------------------------------------------

    def run(self, progress: Callable[[int], None] | None) -> LiveScan:
        cfg, report = self.config, self.report
        with report.timed("read: gcp list"):
            sink_logs = [(f, s) for f, s in SINK_LOGS if not (s == "flows" and cfg.bigquery is not None)]
            for loc in cfg.logs:
                for folder, source in sink_logs:
                    self.plan(loc, loc.prefix + folder, source)
            if not cfg.logs:
                for _, source in sink_logs:
                    self.gap(source, "not configured: set [gcp] logs to the bucket of a Cloud Logging sink "
                                     "(audit, VPC flow and DNS logs)")
            if cfg.billing_table and cfg.billing:
                report.notes.append("gcp: spend from the BigQuery billing export table (billing_table); [gcp] "
                                    "billing is not read")
            for loc in () if cfg.billing_table else cfg.billing:
                self.plan(loc, loc.prefix, "billing")
            if not (cfg.billing or cfg.billing_table):
                self.gap("billing", "not configured: set [gcp] billing_table to the BigQuery billing export table, "
                                    "or billing to where the billing export's files land")
            if cfg.monitoring_api and cfg.monitoring:
                report.notes.append("gcp: utilisation from the Cloud Monitoring API (monitoring_api = true); "
                                    "[gcp] monitoring is not read")
            for loc in () if cfg.monitoring_api else cfg.monitoring:
                self.plan(loc, loc.prefix, "utilization")
            if not (cfg.monitoring or cfg.monitoring_api):
                self.gap("utilization", "not configured: set [gcp] monitoring_api = true (Cloud Monitoring, per "
                                        "project) or monitoring to where Monitoring time series are saved")
        api = None
        with report.timed("read: gcp api"):
            if cfg.projects and cfg.inventory:
                api = list_inventory(cfg.projects, report, GcpOptions(
                    endpoint=cfg.compute_endpoint, anonymous=cfg.anonymous, backoff_s=cfg.backoff_s,
                    retry_deadline_s=cfg.retry_deadline_s))
            elif cfg.inventory:
                self.gap("inventory", "not configured: set [gcp] projects to read instances from the Compute API")
            util = self.monitoring() if cfg.monitoring_api else None
            spent = self.billing_table() if cfg.billing_table else None
        tables = read_objects(self.blobs, report, progress=progress, flows=self.flows)
        tables, api_marks = merge_api_sources(tables, inventory=api, utilization=util, spend=spent)
        if cfg.bigquery is not None:
            with report.timed("read: gcp bigquery flows"):
                self.bigquery_flows(tables)
        marks = [plan.advanced({name for b, name in self.failed if b == bucket}, cfg.lookback_days)
                 for bucket, plan in self.plans]
        marks += api_marks
        report.notes.append("gcp storage calls: " + ", ".join(f"{k} {v}" for k, v in sorted(self.calls.items())))
        return LiveScan(tables, marks, list(cfg.projects))


def _bigquery_client(cfg: GcpConfig) -> Any:
    """The client `[gcp.bigquery]`'s jobs run through: in its job project and location, with the credentials and
    `bigquery_endpoint` the billing export query uses."""
    from google.cloud import bigquery

    assert cfg.bigquery is not None
    kwargs: dict[str, Any] = {"project": cfg.bigquery.project}
    if cfg.bigquery.location:
        kwargs["location"] = cfg.bigquery.location
    if cfg.bigquery_endpoint:
        from google.api_core.client_options import ClientOptions

        kwargs["client_options"] = ClientOptions(api_endpoint=cfg.bigquery_endpoint)
    if cfg.anonymous:
        from google.auth.credentials import AnonymousCredentials

        kwargs["credentials"] = AnonymousCredentials()
    return bigquery.Client(**kwargs)


class _Counted:
    """A BigQuery client whose queries are checked against `permissions.CALLS` (a job in the job project that
    reads the table) and counted with the scan's other calls. Only what `engine.remote.BigQuery` uses."""

    def __init__(self, client: Any, call: Callable[[str], None]) -> None:
        self.client, self.call = client, call

    def query_and_wait(self, query: str, *args: Any, **kwargs: Any) -> Any:
        self.call("Client.query_and_wait")
        permission("Client.query_and_wait/table")
        if query.lstrip().upper().startswith("EXPORT DATA"):
            self.call("Client.query_and_wait/export")
        return self.client.query_and_wait(query, *args, **kwargs)


class _CountedStorage:
    """A Cloud Storage client whose calls (listing an export's files, fetching each) are checked against
    `permissions.CALLS` and counted with the scan's other calls. Only what `engine.remote.BigQuery.exported` uses."""

    def __init__(self, client: Any, call: Callable[[str], None]) -> None:
        self.client, self.call = client, call

    def list_blobs(self, bucket: str, **kwargs: Any) -> list[Any]:
        self.call("Client.list_blobs")
        return [_CountedBlob(blob, self.call) for blob in self.client.list_blobs(bucket, **kwargs)]


class _CountedBlob:
    def __init__(self, blob: Any, call: Callable[[str], None]) -> None:
        self.blob, self.call, self.name = blob, call, blob.name

    def download_to_file(self, file: Any, **kwargs: Any) -> None:
        self.call("Blob.download_to_file")
        self.blob.download_to_file(file, **kwargs)


__all__ = ["GcpConfig", "GcsLocation", "scan"]
