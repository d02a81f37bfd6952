"""The AWS connector's settings: the `[aws]` table of spendwatch's TOML configuration file.

Example (every key but one source is optional)::

    [aws]
    accounts = ["012345678901", "234567890123"]   # or leave out: every ACTIVE account in the Organization
    role_name = "spendwatch-read"                  # assumed in each account; leave out to use the caller's own
    regions = ["us-east-1", "eu-west-1"]           # or leave out: every region enabled in the account
    trail = "s3://acme-org-trail/"                 # organisation trail bucket (AWSLogs/<org>/<account>/CloudTrail)
    flow_logs = "s3://acme-flow-logs/"             # VPC Flow Logs delivered to S3; else DescribeFlowLogs -> Logs
    dns_logs = "s3://acme-dns-logs/"               # Resolver query logs in S3; or dns_log_groups = ["/r53/q"]
    cur = "s3://acme-billing/cur2/acme-cur2/"      # CUR 2.0 export (its metadata/ and data/ folders)
    metrics = "s3://acme-metrics/metric-streams/"  # Metric Streams output; else GetMetricData per instance
    cost_explorer_max_requests = 0                 # Cost Explorer fallback when there is no CUR ($0.01 each)

`endpoint_url` points every client at one endpoint (moto in tests). Buckets are read with the caller's own
credentials (a central log-archive bucket), or with `bucket_role_arn` when it is set.

With an `[aws.athena]` table the flow records are reduced in Athena instead of being fetched: the
connector reads neither the `flow_logs` bucket nor CloudWatch Logs flow log groups, and each scan asks Athena
for the aggregate rows of the trailing `window_hours` (`spendwatch.engine.remote.WarehouseFlows.from_aws`)::

    [aws.athena]
    table = "logs.vpc_flow_logs"                   # the flow log table (database.table, or set `database`)
    source = "vpc_flow_logs"                       # AWS's documented DDL; or "security_lake" (OCSF)
    workgroup = "primary"
    output_location = "s3://acme-athena-results/spendwatch/"  # unless the workgroup sets one
    window_hours = 3                               # trailing hours each scan asks for
    unload = true                                  # rows as Parquet through UNLOAD (false: the CSV result)

The query runs in `region` (default `home_region`) with the caller's own credentials, or as `role_arn` when
the table, workgroup and results bucket belong to another account (a log-archive or Security Lake account):
that role is assumed (with `[aws] external_id`, when set) and needs what `spendwatch iam-policy aws --athena`
prints. Both queries filter on the table's day partition (`spendwatch.engine.sql.DayPartition`), so Athena reads
the window's days, not the whole table: `date` for AWS's DDL and `eventday` for Security Lake by default;
`partition_column` and `partition_format` name another (`partition_column = ""`: an unpartitioned table).

`cur_table` pushes billing down too: spend comes from Athena's table over the CUR 2.0 export (AWS Data
Exports), aggregated there per usage hour (`spendwatch.engine.spend_sql`), and the `cur` bucket's CUR objects
are not read. `table` may then be left out, to push down only CUR (flows are read as without `[aws.athena]`)::

    [aws.athena]
    cur_table = "cur.acme_cur2"                    # [catalog.][database.]table, partitioned by billing_period

Each run asks for the line items from 3 days before the end of the last window read (billing is revised for
days; findings are upserted) to the start of the current hour, or `[aws] initial_hours` back on a first run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from spendwatch.config import ConfigError, Table

if TYPE_CHECKING:
    from spendwatch.engine.sql import Partition

_ACCOUNT = re.compile(r"^\d{12}$")
_TABLE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+){0,2}$")  # [catalog.][database.]table
_ROLE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
ATHENA_SOURCES = ("vpc_flow_logs", "security_lake")  # spendwatch.engine.sql.SOURCES held by Athena


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix, written `s3://bucket/prefix/` in the configuration."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, value: str) -> S3Location:
        if not isinstance(value, str) or not value.startswith("s3://") or len(value) <= 5:
            raise ConfigError(f"not an S3 location (s3://bucket/prefix/): {value!r}")
        bucket, _, prefix = value[5:].partition("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"  # a folder: `trail = "s3://b/logs"` must not also match `logs-old/`
        return cls(bucket, prefix)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class AthenaConfig:
    """The `[aws.athena]` table: where the flow log table and the CUR 2.0 table are, and how each scan queries
    them. At least one of `table` (flows) and `cur_table` (billing) is set."""

    table: str | None = None  # None: flows are not pushed down (only `cur_table` is)
    source: str = "vpc_flow_logs"  # a key of spendwatch.engine.sql.SOURCES that Athena holds
    database: str | None = None
    catalog: str | None = None
    workgroup: str | None = None
    output_location: S3Location | None = None  # needed unless the workgroup sets one
    region: str | None = None  # None: [aws] home_region
    window_hours: int = 3  # detection needs hours of history to see sustained mining, not the last minutes
    query_timeout_s: float = 600.0
    endpoint_url: str | None = None  # None: [aws] endpoint_url (tests: a local Athena beside moto)
    cur_table: str | None = None  # the CUR 2.0 table: spend aggregated in Athena, the `cur` bucket left unread
    role_arn: str | None = None  # None: the caller's own credentials; else the role the queries run as
    partition: Partition = "source"  # the flow table's day partition ("source": the source's usual one)
    unload: bool = True  # flow rows as Parquet through UNLOAD under output_location (false: Athena's CSV result)

    @classmethod
    def from_dict(cls, data: Any) -> AthenaConfig:
        """Settings from `[aws.athena]`; ConfigError names the key and what is wrong with it."""
        t = Table(data, "aws.athena")
        names: dict[str, str | None] = {}
        for key in ("table", "cur_table"):
            name = names[key] = t.string(key, None)
            if name is not None and not _TABLE.match(name):
                raise t.error(key, f"{name!r} is not a table name ([catalog.][database.]table)")
        table, cur_table = names["table"], names["cur_table"]
        if table is None and cur_table is None:
            raise t.error("table", "is required (the flow log table), unless cur_table pushes only CUR down")
        output = t.string("output_location", None)
        try:
            location = S3Location.parse(output) if output is not None else None
        except ConfigError as exc:
            raise t.error("output_location", str(exc)) from None
        role = t.string("role_arn", None)
        if role is not None and not _ROLE.match(role):
            raise t.error("role_arn", f"{role!r} is not an IAM role ARN (arn:aws:iam::123456789012:role/name)")
        source = t.string("source", "vpc_flow_logs", choices=ATHENA_SOURCES)
        column, fmt = t.string("partition_column", None, empty=True), t.string("partition_format", None)
        partition: Partition = "source"
        if column == "":
            partition = None
        elif column is not None or fmt is not None:
            from spendwatch.engine.sql import SOURCES, DayPartition

            usual = SOURCES[source].partition
            try:
                partition = DayPartition(column or (usual.column if usual else ""), fmt or "date")
            except ValueError as exc:
                raise t.error("partition_column" if column else "partition_format", str(exc)) from None
        config = cls(table=table, source=source,
                     database=t.string("database", None), catalog=t.string("catalog", None),
                     workgroup=t.string("workgroup", None), output_location=location,
                     region=t.string("region", None),
                     window_hours=t.integer("window_hours", 3, minimum=1, maximum=24 * 42),
                     query_timeout_s=t.number("query_timeout_s", 600.0, minimum=0.0, above=True),
                     endpoint_url=t.string("endpoint_url", None), cur_table=cur_table, role_arn=role,
                     partition=partition, unload=t.boolean("unload", True))
        t.done()
        return config


@dataclass(frozen=True)
class AwsConfig:
    """What the AWS connector reads, from where, and how hard it tries. See the module doc for an example."""

    accounts: tuple[str, ...] | None = None  # None: Organizations ListAccounts (ACTIVE accounts)
    role_name: str | None = None  # None: the caller's credentials are used in every account (one account)
    external_id: str | None = None
    regions: tuple[str, ...] | None = None  # None: ec2 DescribeRegions (enabled regions)
    trail: S3Location | None = None
    flow_logs: S3Location | None = None
    dns_logs: S3Location | None = None
    dns_log_groups: tuple[str, ...] = ()
    cur: S3Location | None = None
    metrics: S3Location | None = None
    metrics_api: bool = True  # GetMetricData when there is no Metric Streams bucket
    cost_explorer_max_requests: int = 0  # 0: never call Cost Explorer
    cost_explorer_granularity: str = "HOURLY"  # HOURLY needs hourly granularity enabled in Cost Explorer
    bucket_role_arn: str | None = None
    profile: str | None = None
    home_region: str = "us-east-1"  # where global services (STS, Organizations, Cost Explorer, S3 listing) go
    lookback_days: int = 2  # late files are still read this many days behind the newest one seen
    initial_hours: int = 24  # how far back a CloudWatch source starts on its first run
    max_attempts: int = 8  # botocore adaptive retries, per call
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    endpoint_url: str | None = None
    session_name: str = "spendwatch"
    athena: AthenaConfig | None = None  # [aws.athena]: flows and/or CUR reduced in Athena, their buckets left unread

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AwsConfig:
        """Settings from the `[aws]` table; ConfigError names an unknown key or a bad value."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"[aws]: unknown key(s) {', '.join(unknown)}")
        kw: dict[str, Any] = dict(data)
        if kw.get("athena") is not None:
            kw["athena"] = AthenaConfig.from_dict(kw["athena"])
        for key in ("trail", "flow_logs", "dns_logs", "cur", "metrics"):
            if kw.get(key) is not None:
                kw[key] = S3Location.parse(kw[key])
        for key in ("accounts", "regions", "dns_log_groups"):
            if kw.get(key) is not None:
                value = kw[key]
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ConfigError(f"[aws] {key}: must be a list of strings")
                kw[key] = tuple(value)
        for account in kw.get("accounts") or ():
            if not _ACCOUNT.match(account):
                raise ConfigError(f"[aws] accounts: {account!r} is not a 12-digit account id (quote it in TOML)")
        for key in ("lookback_days", "initial_hours", "max_attempts", "cost_explorer_max_requests"):
            if key in kw and (not isinstance(kw[key], int) or kw[key] < 0):
                raise ConfigError(f"[aws] {key}: must be a non-negative integer")
        if kw.get("cost_explorer_granularity", "HOURLY") not in ("HOURLY", "DAILY"):
            raise ConfigError("[aws] cost_explorer_granularity: HOURLY or DAILY")
        return cls(**kw)

    @classmethod
    def load(cls, path: str, **overrides: Any) -> AwsConfig:
        """The `[aws]` table of the TOML file at `path`."""
        from spendwatch.config import section

        data = section(path, "aws")
        if data is None:
            raise ConfigError(f"{path}: no [aws] table")
        return cls.from_dict({**data, **overrides})

    @property
    def athena_flows(self) -> bool:
        """Flows are reduced in Athena (`[aws.athena] table`): the flow_logs bucket and log groups are not read."""
        return self.athena is not None and self.athena.table is not None

    @property
    def athena_cur(self) -> str | None:
        """The CUR 2.0 table billing is read from (`[aws.athena] cur_table`): the cur bucket is not read."""
        return self.athena.cur_table if self.athena is not None else None

    def role_arn(self, account: str) -> str | None:
        return f"arn:aws:iam::{account}:role/{self.role_name}" if self.role_name else None


__all__ = ["AthenaConfig", "AwsConfig", "ConfigError", "S3Location"]

