"""The GCP connector's settings: the `[gcp]` table of spendwatch's TOML configuration file.

Example::

    [gcp]
    projects = ["acme-ml-prod", "acme-web-prod"]      # inventory through the Compute API, one call per project
    logs = ["gs://acme-gcp-logs/"]                    # Cloud Logging sink buckets: audit, VPC flow and DNS logs
    billing = ["gs://acme-gcp-billing/billing_export/"]  # detailed billing export files (JSON lines, CSV, Parquet)
    monitoring_api = true                             # utilisation from Cloud Monitoring, per project
    billing_table = "acme-billing.billing_export.gcp_billing_export_resource_v1_01A2B3_C4D5E6_F7A8B9"

A `logs` location is where a sink writes: the folders `cloudaudit.googleapis.com/activity/`,
`compute.googleapis.com/vpc_flows/` and `dns.googleapis.com/dns_queries/` under it (an organisation-level
aggregated sink puts every project's entries there). Utilisation comes from one of two places:
`monitoring_api = true` reads it from the Cloud Monitoring API for every project in `projects` (the Ops
Agent's GPU and CPU metrics and the hypervisor's CPU metric, `monitoring_period_s` means); `monitoring` reads
time series a job of yours saved to a bucket as JSON lines. When both are set the API is used and the bucket
is not read for utilisation (the run report says so): one source, never the same series twice. Spend
likewise: `billing_table` (the detailed usage cost export table, `project.dataset.table`) is queried in
BigQuery and the `billing` files are then not read. Credentials
are Application Default Credentials. `compute_endpoint`, `storage_endpoint`, `monitoring_endpoint`,
`bigquery_endpoint` and `anonymous` are for local fakes and private endpoints.

With a `[gcp.bigquery]` table the VPC flow log entries are reduced in BigQuery instead of being fetched: the
connector does not list or fetch the sinks' `compute.googleapis.com/vpc_flows/` objects, and each scan asks
BigQuery for the aggregate rows of the trailing `window_hours` (`spendwatch.engine.remote.WarehouseFlows.from_gcp`)::

    [gcp.bigquery]
    table = "acme-logs.flow_logs.compute_googleapis_com_vpc_flows"  # a BigQuery sink's (partitioned) table
    project = "acme-secops"                        # where the query jobs run and are billed (default: the table's)
    location = "EU"                                # the dataset's location (default: the client's)
    window_hours = 3                               # trailing hours each scan asks for
    query_timeout_s = 600
    export_uri = "gs://acme-secops-scratch/spendwatch/"  # optional: the rows come back as Parquet through here

The jobs use the same credentials and `bigquery_endpoint` as `billing_table`. With `export_uri`, the rows query is
an EXPORT DATA writing gzip Parquet files under a new prefix of that location (the job's identity needs
`storage.objects.create` on the bucket; the files are read back with the `storage_endpoint` client), which
spares the client converting millions of REST values; without it, or where the export fails, the rows come
page by page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spendwatch.config import ConfigError, Table

_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
TABLE = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]\.[A-Za-z0-9_]{1,1024}\.[A-Za-z0-9_$-]{1,1024}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


@dataclass(frozen=True)
class GcsLocation:
    """A bucket and a name prefix, written `gs://bucket/prefix/` in the configuration."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, value: str) -> GcsLocation:
        """Raises ValueError (the caller names the key) for anything but `gs://bucket[/prefix]`."""
        if not value.startswith("gs://"):
            raise ValueError(f"not a Cloud Storage location (gs://bucket/prefix/): {value!r}")
        bucket, _, prefix = value[5:].partition("/")
        if not _BUCKET.match(bucket):
            raise ValueError(f"not a valid bucket name in {value!r}")
        if prefix and not prefix.endswith("/"):
            prefix += "/"  # a folder: `gs://b/logs` must not also match `logs-old/`
        return cls(bucket, prefix)

    def __str__(self) -> str:
        return f"gs://{self.bucket}/{self.prefix}"


def export_location(value: str) -> GcsLocation:
    """An EXPORT DATA location (`export_uri`, `--export-uri`): gs://bucket/prefix/ with nothing the statement's
    string literal or its one wildcard could not take (BigQuery's literals take a backslash as an escape). ValueError
    says what is wrong (the caller names the key)."""
    if any(c in value for c in "'*\\") or not value.isprintable():
        raise ValueError(f"{value!r}: a quote, a wildcard, a backslash or a control character cannot go into "
                         "EXPORT DATA's uri")
    return GcsLocation.parse(value)


@dataclass(frozen=True)
class BigQueryFlowsConfig:
    """The `[gcp.bigquery]` table: the flow log sink's BigQuery table, and how each scan queries it."""

    table: str  # project.dataset.table a Cloud Logging sink writes VPC flow log entries to; `table_*`: day shards
    project: str  # where the query jobs run (and are billed): the table's project unless set
    location: str | None = None  # None: the client's default (BigQuery finds the dataset's)
    window_hours: int = 3  # detection needs hours of history to see sustained mining, not the last minutes
    query_timeout_s: float = 600.0
    export_uri: GcsLocation | None = None  # the rows as Parquet through EXPORT DATA under this location

    @classmethod
    def from_dict(cls, data: Any, *, path: Path | str | None = None) -> BigQueryFlowsConfig:
        """Settings from `[gcp.bigquery]`; ConfigError names the file, the key and what is wrong with it."""
        t = Table(data, "gcp.bigquery", path=path)
        table = t.string("table")
        # A sink without "use partitioned tables" writes a table a day (name_YYYYMMDD): `name_*` reads them,
        # each query only the window's days (spendwatch.engine.sql: _TABLE_SUFFIX).
        if not TABLE.match(table.removesuffix("_*")) or ("*" in table and not table.endswith("_*")):
            raise t.error("table", f"{table!r} is not a table (project.dataset.table, or project.dataset.name_* "
                                   "for a sink's day shards)")
        project = t.string("project", table.split(".", 1)[0])
        if not _PROJECT.match(project):
            raise t.error("project", f"{project!r} is not a project id (6-30 lower-case letters, digits, -)")
        export = t.string("export_uri", None)
        try:
            export_uri = export_location(export) if export is not None else None
        except ValueError as exc:
            raise t.error("export_uri", str(exc)) from None
        config = cls(table=table, project=project, location=t.string("location", None),
                     window_hours=t.integer("window_hours", 3, minimum=1, maximum=24 * 42),
                     query_timeout_s=t.number("query_timeout_s", 600.0, minimum=0.0, above=True),
                     export_uri=export_uri)
        t.done()
        return config


@dataclass(frozen=True)
class GcpConfig:
    """What the GCP connector reads and from where. See the module doc for an example."""

    projects: tuple[str, ...] = ()
    logs: tuple[GcsLocation, ...] = ()
    billing: tuple[GcsLocation, ...] = ()
    monitoring: tuple[GcsLocation, ...] = ()
    monitoring_api: bool = False  # utilisation from the Cloud Monitoring API (`monitoring.py`), per project
    billing_table: str | None = None  # spend from this BigQuery billing export table (`billing.py`)
    monitoring_period_s: int = 60  # the API's points are means over this many seconds: 60 or 300
    initial_hours: int = 24  # how far back an API source starts on its first run
    inventory: bool = True  # the Compute API's instance list per project (GPUs, state, addresses)
    lookback_days: int = 2  # objects that land late are still read this many days behind the newest one
    compute_endpoint: str | None = None
    storage_endpoint: str | None = None
    monitoring_endpoint: str | None = None  # host:port of the Monitoring gRPC API (with `anonymous`: plain text)
    bigquery_endpoint: str | None = None
    anonymous: bool = False  # no credentials at all: local fakes only
    backoff_s: float = 1.0  # first wait before retrying a throttled (429) or unavailable (5xx) call
    retry_deadline_s: float = 60.0
    bigquery: BigQueryFlowsConfig | None = None  # [gcp.bigquery]: flows reduced in BigQuery, sink objects unread

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, path: Path | str | None = None) -> GcpConfig:
        """Settings from the `[gcp]` table; ConfigError names the file, the key and what is wrong."""
        if isinstance(data, dict) and "bigquery" in data:  # the [gcp.bigquery] sub-table, read on its own
            data = dict(data)
            flows = BigQueryFlowsConfig.from_dict(data.pop("bigquery"), path=path)
        else:
            flows = None
        t = Table(data, "gcp", path=path)
        projects = t.strings("projects", ())
        for project in projects:
            if not _PROJECT.match(project):
                raise t.error("projects", f"{project!r} is not a project id (6-30 lower-case letters, digits, -)")
        locations = {key: _locations(t, key) for key in ("logs", "billing", "monitoring")}
        period = t.integer("monitoring_period_s", 60)
        if period not in (60, 300):
            raise t.error("monitoring_period_s", f"must be 60 or 300 (1- or 5-minute means), not {period}")
        config = cls(projects=projects, **locations, inventory=t.boolean("inventory", True),
                     monitoring_api=t.boolean("monitoring_api", False), monitoring_period_s=period,
                     billing_table=t.string("billing_table", None),
                     bigquery_endpoint=t.string("bigquery_endpoint", None),
                     initial_hours=t.integer("initial_hours", 24, minimum=1, maximum=24 * 42),
                     lookback_days=t.integer("lookback_days", 2), compute_endpoint=t.string("compute_endpoint", None),
                     storage_endpoint=t.string("storage_endpoint", None),
                     monitoring_endpoint=t.string("monitoring_endpoint", None), anonymous=t.boolean("anonymous", False),
                     backoff_s=t.number("backoff_s", 1.0, minimum=0.0, above=True),
                     retry_deadline_s=t.number("retry_deadline_s", 60.0, minimum=0.0, above=True),
                     bigquery=flows)
        t.done()
        if config.billing_table and not TABLE.match(config.billing_table):
            raise t.error("billing_table", f"{config.billing_table!r} is not a table (project.dataset.table)")
        if config.monitoring_api and not config.projects:
            raise t.error("monitoring_api", "needs projects: the Monitoring API is read per project")
        if not (config.projects or config.logs or config.billing or config.monitoring or config.billing_table
                or config.bigquery):
            raise ConfigError(f"{f'{path}: ' if path else ''}[gcp]: nothing to scan: set projects, logs, billing, "
                              "billing_table, monitoring or [gcp.bigquery]")
        return config


def _locations(t: Table, key: str) -> tuple[GcsLocation, ...]:
    out = []
    for value in t.strings(key, ()):
        try:
            out.append(GcsLocation.parse(value))
        except ValueError as exc:
            raise t.error(key, str(exc)) from None
    return tuple(out)
