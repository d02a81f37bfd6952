"""The `spendwatch` command line.

Exit codes, the same for every command: 0 the run completed (findings or not), 1 a fatal error (unreadable
input directory, a bad record under --strict, an unusable state file), 2 a usage error, 3 findings at or
above `--fail-on` were seen. Heavy libraries are imported inside the commands so `spendwatch --help` and a
function's cold start stay quick.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .access.aws import add_commands as add_access_commands
from .approvals import add_commands as add_approval_commands
from .aws_cli import add_commands as add_aws_commands
from .delivery import add_commands as add_delivery_commands
from .engine.cli import add_arguments as add_sql_arguments
from .engine.cli import add_commands as add_sql_commands
from .engine.cli import add_warehouse_arguments
from .eval_cli import add_commands as add_eval_commands
from .guardrails import add_commands as add_guardrail_commands
from .model_cli import add_commands as add_model_commands
from .replay_cli import add_commands as add_replay_commands
from .series_cli import add_commands as add_series_commands
from .serve import add_commands as add_serve_commands

if TYPE_CHECKING:
    from .findings import Finding, Severity
    from .pipeline import ScanResult

EXIT_OK, EXIT_FATAL, EXIT_USAGE, EXIT_FINDINGS = 0, 1, 2, 3
SEVERITIES = ("info", "low", "medium", "high", "critical")
STATE_HELP = ("state: a file or a postgresql:// URL (default: $SPENDWATCH_STATE, $SPENDWATCH_DATABASE_URL, then "
              "$SPENDWATCH_HOME/state.db, ~/.spendwatch/state.db)")


class Fatal(Exception):
    """An error that ends the command with exit code 1 and a one-line message."""


def _state_path(arg: str | None) -> Path | str:
    """Where the state is: `--state` (a file or a postgresql:// URL), else $SPENDWATCH_STATE, else
    $SPENDWATCH_DATABASE_URL, else $SPENDWATCH_HOME/state.db: the order every command and `serve` use."""
    from .store import StoreError, resolve_state

    try:
        return resolve_state(arg)
    except StoreError as exc:  # e.g. a $SPENDWATCH_DATABASE_URL that is no URL
        raise Fatal(str(exc)) from None


def _open_store(arg: str | None) -> Any:
    """The state as a Store, or a Fatal naming it (a URL without its password)."""
    import sqlite3

    from .store import Store, describe

    location = _state_path(arg)
    try:
        return Store(location)
    except (sqlite3.Error, OSError, RuntimeError) as exc:
        shown = describe(location)
        message = str(exc)
        raise Fatal(message if message.startswith(shown) else f"state {shown}: {message}") from exc


def _progress(total: int, enabled: bool) -> tuple[Callable[[int], None] | None, Callable[[], None]]:
    if not enabled or total <= 0:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="B", unit_scale=True, desc="scanning", file=sys.stderr, leave=False)
    return bar.update, bar.close


def _tree_size(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(dirpath, name))
            except OSError:
                continue
    return total


def _run_scan(
    data: Path, args: argparse.Namespace, *, store: Any, show_progress: bool, keep_tables: bool = False,
    flows_from: Any = None,
) -> ScanResult:
    from .pipeline import scan_directory
    from .report import StrictError

    update, close = _progress(_tree_size(data) if show_progress else 0, show_progress)
    try:
        return scan_directory(data, store=store, strict=args.strict, progress=update, keep_tables=keep_tables,
                              flows_from=flows_from)
    except StrictError as exc:
        raise Fatal(f"--strict: {exc}") from exc
    except FileNotFoundError as exc:
        raise Fatal(str(exc)) from exc
    finally:
        close()


def _min_severity(value: str) -> Severity:
    from .findings import Severity

    return Severity.parse(value)


def _exit_for(findings: Sequence[Finding], fail_on: str | None) -> int:
    if fail_on is None:
        return EXIT_OK
    threshold = _min_severity(fail_on)
    return EXIT_FINDINGS if any(f.severity >= threshold for f in findings) else EXIT_OK


def _run_config_scan(args: argparse.Namespace, *, store: Any) -> ScanResult:
    from .aws_cli import run_config_scan
    from .config import ConfigError
    from .report import StrictError

    try:
        return run_config_scan(args.config, store=store, strict=args.strict)
    except ConfigError as exc:
        raise Fatal(str(exc)) from exc
    except StrictError as exc:
        raise Fatal(f"--strict: {exc}") from exc


def cmd_scan(args: argparse.Namespace) -> int:
    from .sinks.console import render_findings, render_report
    from .sinks.jsonl import write_findings

    flows_from = _remote_scan(args) if args.engine != "duckdb" else None
    if args.engine != "duckdb" and flows_from is None:  # --dry-run: the query was printed
        return EXIT_OK
    interactive = sys.stderr.isatty() and not args.json and not args.no_progress
    with _open_store(args.state) as store:
        if args.config:  # live clouds
            if flows_from is not None:
                raise Fatal(f"--engine {args.engine} reads the other sources from --data DIR; not with --config")
            result = _run_config_scan(args, store=store)
        else:
            result = _run_scan(Path(args.data).expanduser(), args, store=store, show_progress=interactive,
                               flows_from=flows_from)
    shown = [f for f in result.findings if f.severity >= _min_severity(args.min_severity)]
    if args.report:
        Path(args.report).write_text(json.dumps(result.report.to_dict(), indent=2) + "\n")
    if args.json:
        write_findings(shown, sys.stdout)
        render_report(result.report, sys.stderr)
    else:
        render_findings(shown, sys.stdout, changes=dict(result.changes))
        render_report(result.report, sys.stdout)
    return _exit_for(shown, args.fail_on)


def _remote_scan(args: argparse.Namespace) -> Any:
    """`scan --engine athena|bigquery`: the flow aggregate is computed where the logs live
    (spendwatch.engine.remote). Returns the scan's flow source; None with --dry-run, which prints the query."""
    from .engine.cli import render, warehouse

    try:
        if args.dry_run:
            print(render(args, args.engine).rstrip() + ";")
            return None
        return warehouse(args, args.engine)
    except ValueError as exc:
        raise Fatal(str(exc)) from exc


def cmd_findings(args: argparse.Namespace) -> int:
    from .sinks.console import render_findings
    from .sinks.jsonl import write_findings

    with _open_store(args.state) as store:
        found = store.findings(min_severity=_min_severity(args.min_severity), status=args.status, limit=args.limit)
    if args.json:
        write_findings(found, sys.stdout)
    else:
        render_findings(found, sys.stdout)
    return _exit_for(found, args.fail_on)


def cmd_demo(args: argparse.Namespace) -> int:
    from .chart import chart_for_finding
    from .findings import Severity
    from .simulate import simulate
    from .sinks.console import render_findings, render_report
    from .sinks.slack import alert_payload
    from .sinks.slack_html import render_alert_html
    from .store import Store, default_home

    out = Path(args.out).expanduser() if args.out else default_home() / "demo"
    data, state, preview = out / "data", out / "state.db", out / "slack-alert.json"
    picture, chart = out / "slack-alert.html", out / "slack-alert-chart.png"
    if data.exists():
        shutil.rmtree(data)
    for stale in (state, state.with_name(state.name + "-wal"), state.with_name(state.name + "-shm"), preview,
                  picture, chart):
        stale.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    print(f"Simulating an AWS organisation ({args.instances} instances, {args.days:g} days, seed {args.seed}) "
          f"into {data} ...", flush=True)
    truth = simulate(data, seed=args.seed, days=args.days, instances=args.instances)
    print(f"  {len(truth.accounts)} accounts, {truth.flow_records:,} flow records; injected incidents: "
          + "; ".join(f"{i.name} on {', '.join(i.resources)}" for i in truth.incidents), flush=True)
    print("Scanning it ...\n", flush=True)
    with Store(state) as store:
        result = _run_scan(data, args, store=store, show_progress=sys.stderr.isatty() and not args.no_progress,
                           keep_tables=True)
    shown = [f for f in result.findings if f.severity >= Severity.LOW]
    render_findings(shown, sys.stdout)
    render_report(result.report, sys.stdout)
    if shown:
        worst = shown[0]
        payload = alert_payload(worst, result.report)
        preview.write_text(json.dumps(payload, indent=2) + "\n")
        tables = result.tables
        png = chart_for_finding(worst, utilization=tables.utilization, spend=tables.spend) if tables else None
        if png:
            chart.write_bytes(png)
        picture.write_text(render_alert_html(payload, png))
        print(f"\nSlack alert for the worst finding: {picture} (open it in a browser); Block Kit JSON: {preview}")
    print(f"State: {state} (spendwatch findings --state {state})")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spendwatch",
        description="Find crypto-mining and runaway compute in cloud exports: who started it and what it costs.",
    )
    parser.add_argument("--version", action="version", version=f"spendwatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--state", metavar="PATH|URL", help=STATE_HELP)
        p.add_argument("--min-severity", choices=SEVERITIES, default="low", help="hide findings below this")
        p.add_argument("--fail-on", choices=SEVERITIES, metavar="SEVERITY",
                       help="exit 3 when a finding at or above SEVERITY is seen")

    scan = sub.add_parser("scan", help="scan local copies of cloud exports (laid out like their S3 buckets)")
    where = scan.add_mutually_exclusive_group(required=True)
    where.add_argument("--data", metavar="DIR", help="directory holding the exports")
    where.add_argument("--config", metavar="FILE", help="TOML file naming live clouds to scan ([aws], [gcp], [azure])")
    scan.add_argument("--json", action="store_true",
                      help="only findings on stdout, one JSON object per line; the run report goes to stderr")
    scan.add_argument("--strict", action="store_true", help="stop at the first bad record or file (exit 1)")
    scan.add_argument("--report", metavar="FILE", help="also write the run report as JSON to FILE")
    scan.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    scan.add_argument("--engine", choices=("duckdb", "athena", "bigquery"), default="duckdb",
                      help="where flow records are reduced: here (duckdb, default) or pushed down to the "
                           "warehouse holding the logs (athena, bigquery; --dry-run prints the features query)")
    scan.add_argument("--dry-run", action="store_true", help="with --engine athena|bigquery: print the query")
    add_sql_arguments(scan)
    add_warehouse_arguments(scan)
    common(scan)
    scan.set_defaults(func=cmd_scan)

    found = sub.add_parser("findings", help="list stored findings, worst first")
    found.add_argument("--json", action="store_true", help="one JSON object per line")
    found.add_argument("--status", choices=("open", "quarantined", "snoozed", "expected", "resolved"))
    found.add_argument("--limit", type=int, metavar="N")
    common(found)
    found.set_defaults(func=cmd_findings)

    demo = sub.add_parser("demo", help="simulate an AWS organisation with an agent mining on it, and scan it")
    demo.add_argument("--out", metavar="DIR", help="where to write it (default: $SPENDWATCH_HOME/demo)")
    demo.add_argument("--days", type=float, default=3.0, help="days of history (default 3)")
    demo.add_argument("--instances", type=int, default=60, help="instances in the organisation (default 60)")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--no-progress", action="store_true", help=argparse.SUPPRESS)
    demo.set_defaults(func=cmd_demo, strict=False)
    from .actions.commands import add_commands
    add_commands(sub)
    add_series_commands(sub)
    add_eval_commands(sub)
    add_replay_commands(sub)
    add_model_commands(sub)
    add_aws_commands(sub)
    add_delivery_commands(sub)
    add_serve_commands(sub)
    add_access_commands(sub)
    add_guardrail_commands(sub)
    add_approval_commands(sub)
    add_sql_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except Fatal as exc:
        print(f"spendwatch: error: {exc}", file=sys.stderr)
        return EXIT_FATAL
    except KeyboardInterrupt:
        print("spendwatch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
