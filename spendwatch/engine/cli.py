"""`spendwatch sql`: print the flow-feature query for an engine, to run it where the data lives.

    spendwatch sql --engine athena --source vpc_flow_logs --table logs.vpc_flow_logs --since 2026-11-20T00:00Z
    spendwatch sql --engine bigquery --source gcp_flow_sink --table proj.logs.compute_googleapis_com_vpc_flows

The query reduces flow records to ten-minute aggregates and returns one row per (cloud, account, entity,
hour) with the features `models.features.resource_hours` computes from flows (see spendwatch.engine.sql).
Only the SQL is produced here: submitting it to Athena or BigQuery from spendwatch is not built yet.
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


def render(args: argparse.Namespace, engine: str) -> str:
    """The query for `engine` from the parsed options; ValueError names a bad option."""
    from .sql import SOURCES, query

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
    return query(engine, source, table=table, start_s=int(since.timestamp()), end_s=int(until.timestamp()))


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
