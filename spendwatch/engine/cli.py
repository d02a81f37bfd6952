"""`spendwatch sql`: print the flow-feature query for an engine, to run it where the data lives.

    spendwatch sql --engine athena --source vpc_flow_logs --table logs.vpc_flow_logs --since 2026-11-20T00:00Z
    spendwatch sql --engine bigquery --source gcp_flow_sink --table proj.logs.compute_googleapis_com_vpc_flows

The query reduces flow records to ten-minute aggregates and returns one row per (cloud, account, entity,
hour) with the features `models.features.resource_hours` computes from flows (see spendwatch.engine.sql).

`spendwatch scan --engine athena|bigquery` runs the push-down query there instead (spendwatch.engine.remote):

    spendwatch scan --data DIR --engine athena --table vpc_flow_logs --database logs --workgroup primary \
        --output-location s3://bucket/athena/ --since 2026-11-20T00:00Z --until 2026-11-21T00:00Z
    spendwatch scan --data DIR --engine bigquery --table proj.logs.compute_googleapis_com_vpc_flows --project proj

The other sources (CloudTrail, DNS, billing, metrics) are read from --data as usual; its flow log files are not.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

ENGINE_CHOICES = ("duckdb", "athena", "bigquery")
DEFAULT_SOURCE = {"duckdb": "canonical", "athena": "vpc_flow_logs", "bigquery": "gcp_flow_sink"}


def _when(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time (e.g. 2026-11-20T00:00Z)") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options shared by `spendwatch sql` and `spendwatch scan --engine X --dry-run`."""
    p.add_argument("--source", help="source table kind: canonical, vpc_flow_logs, security_lake, gcp_flow_sink "
                                    "(default: the engine's usual one)")
    p.add_argument("--table", help="table to read (default: flows, vpc_flow_logs, or the sink's table name)")
    p.add_argument("--since", type=_when, metavar="TIME", help="first record start to read (default: 24 h ago)")
    p.add_argument("--until", type=_when, metavar="TIME", help="read records that started before (default: now)")
    p.add_argument("--partition-column", metavar="NAME",
                   help="the table's day partition, filtered on so that only the window's days are read (default: "
                        "date for vpc_flow_logs, as AWS's DDL; eventday for security_lake); '' for none")
    p.add_argument("--partition-format", metavar="FORMAT",
                   help="how that column writes a day: date (a DATE column) or a strftime pattern of a string "
                        "column, e.g. %%Y%%m%%d or %%Y/%%m/%%d (default: the source's)")


def add_warehouse_arguments(p: argparse.ArgumentParser) -> None:
    """`spendwatch scan`'s options for running the flow query in Athena or BigQuery."""
    p.add_argument("--database", help="with --engine athena: the Glue database of --table")
    p.add_argument("--catalog", help="with --engine athena: the data catalog (default: AwsDataCatalog)")
    p.add_argument("--workgroup", help="with --engine athena: the workgroup to run in (default: primary)")
    p.add_argument("--output-location", metavar="S3_URL",
                   help="with --engine athena: where Athena writes results (unless the workgroup sets it)")
    p.add_argument("--no-unload", dest="unload", action="store_false",
                   help="with --engine athena: read the flow rows from Athena's CSV result, not as Parquet "
                        "through UNLOAD under --output-location")
    p.add_argument("--region", help="with --engine athena: the AWS region (default: the AWS environment's)")
    p.add_argument("--project", help="with --engine bigquery: the project the query job runs in "
                                     "(default: the table's)")
    p.add_argument("--export-uri", metavar="GS_URL",
                   help="with --engine bigquery: bring the flow rows back as Parquet through EXPORT DATA under this "
                        "Cloud Storage location (the job needs storage.objects.create there)")
    p.add_argument("--query-timeout", type=float, default=600.0, metavar="SECONDS",
                   help="with --engine athena|bigquery: give up on a query after this long (default 600)")
    p.add_argument("--endpoint-url", help=argparse.SUPPRESS)  # tests: a local fake on 127.0.0.1
    p.add_argument("--page-rows", type=int, help=argparse.SUPPRESS)  # tests: small pages of results
    p.add_argument("--storage-endpoint", help=argparse.SUPPRESS)  # tests: a Cloud Storage fake on 127.0.0.1


def _partition(args: argparse.Namespace, source: str) -> Any:
    """The day partition the options name (sql.Partition); ValueError names a bad option."""
    from .sql import SOURCES, DayPartition

    column, fmt = getattr(args, "partition_column", None), getattr(args, "partition_format", None)
    if column == "":
        return None
    if column is None and fmt is None:
        return "source"
    if "{partition}" not in SOURCES[source].sql:
        raise ValueError(f"--partition-column/--partition-format: the {source} source takes no day partition")
    usual = SOURCES[source].partition
    if column is None:  # the usual column, written another way
        if usual is None:
            raise ValueError("--partition-format: name the column with --partition-column")
        column = usual.column
    try:
        return DayPartition(column, fmt or "date")
    except ValueError as exc:
        raise ValueError(f"--partition-column/--partition-format: {exc}") from None


def _resolve(args: argparse.Namespace, engine: str) -> tuple[str, str, int, int]:
    """(source, table, start_s, end_s) from the parsed options; ValueError names a bad option."""
    from .sql import SOURCES

    source = args.source or DEFAULT_SOURCE[engine]
    if source not in SOURCES:
        raise ValueError(f"--source {source!r}: not one of {', '.join(SOURCES)}")
    until = args.until or datetime.now(UTC)
    since = args.since or until - timedelta(hours=24)
    if since >= until:
        raise ValueError(f"--since {since:%Y-%m-%dT%H:%MZ} is not before --until {until:%Y-%m-%dT%H:%MZ}")
    table = args.table or {"canonical": "flows", "vpc_flow_logs": "vpc_flow_logs",
                           "security_lake": "amazon_security_lake_table_us_east_1_vpc_flow_2_0",
                           "gcp_flow_sink": "compute_googleapis_com_vpc_flows"}[source]
    return source, table, int(since.timestamp()), int(until.timestamp())


def render(args: argparse.Namespace, engine: str) -> str:
    """The features query for `engine` from the parsed options; ValueError names a bad option."""
    from .sql import query

    source, table, start_s, end_s = _resolve(args, engine)
    return query(engine, source, table=table, start_s=start_s, end_s=end_s, partition=_partition(args, source))


def warehouse(args: argparse.Namespace, engine: str) -> Any:
    """The scan's flow source for `engine` (a `remote.WarehouseFlows`); ValueError names a bad option."""
    from .remote import AthenaOptions, BigQueryOptions, WarehouseFlows
    from .sql import SOURCES

    source, table, start_s, end_s = _resolve(args, engine)
    if SOURCES[source].engine != engine:
        raise ValueError(f"--source {source} is a {SOURCES[source].engine} table, not one {engine} holds")
    partition = _partition(args, source)
    pages = {"page_rows": args.page_rows} if getattr(args, "page_rows", None) else {}
    if engine == "athena":
        options = AthenaOptions(database=args.database, catalog=args.catalog, workgroup=args.workgroup,
                                output_location=args.output_location, region=args.region,
                                endpoint_url=args.endpoint_url, timeout_s=args.query_timeout,
                                unload=getattr(args, "unload", True), **pages)
        if options.page_rows > 1000:
            raise ValueError("--page-rows: Athena returns at most 1000 rows a page")
        return WarehouseFlows(engine, source, table, start_s, end_s, athena=options, partition=partition)
    export = getattr(args, "export_uri", None)
    if export is not None:
        from spendwatch.connectors.gcp.config import export_location

        try:
            export = str(export_location(export))
        except ValueError as exc:
            raise ValueError(f"--export-uri: {exc}") from None
    options_bq = BigQueryOptions(project=args.project, endpoint=args.endpoint_url, timeout_s=args.query_timeout,
                                 export_uri=export, storage_endpoint=getattr(args, "storage_endpoint", None), **pages)
    return WarehouseFlows(engine, source, table, start_s, end_s, bigquery=options_bq, partition=partition)


def cmd_sql(args: argparse.Namespace) -> int:
    try:
        text = render(args, args.engine)
    except ValueError as exc:
        print(f"spendwatch: error: {exc}", file=sys.stderr)
        return 2
    print(text.rstrip() + ";")
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("sql", help="print the flow-feature query (DuckDB, Athena or BigQuery dialect)")
    p.add_argument("--engine", choices=ENGINE_CHOICES, default="duckdb")
    add_arguments(p)
    p.set_defaults(func=cmd_sql)
