"""Benchmark: scan a simulated two-week, 300-instance AWS organisation end to end.

Prints the organisation's size, the scan's time per stage, and, as a baseline measured in the same run on
the same files, the time pyarrow alone takes to parse every flow-log file (the parse ceiling), so the figure
reads as a ratio that holds on a noisy machine. Target (issue 2): the whole scan well under two minutes on
2 cores.

    .venv/bin/python bench/scan_org.py [--days 14] [--instances 300] [--keep DIR]
"""

from __future__ import annotations

import argparse
import gzip
import resource
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.csv as pacsv

from spendwatch.pipeline import scan_directory
from spendwatch.simulate import simulate
from spendwatch.sinks.console import format_timings
from spendwatch.store import Store


def parse_ceiling(root: Path) -> tuple[float, int]:
    """Seconds for pyarrow to parse every flow-log text file under root (nothing else), and rows parsed."""
    files = sorted(p for p in root.rglob("*.log.gz") if "vpcflowlogs" in p.parts)

    def one(path: Path) -> int:
        with gzip.open(path, "rb") as fh:
            table = pacsv.read_csv(
                fh,
                parse_options=pacsv.ParseOptions(delimiter=" "),
                convert_options=pacsv.ConvertOptions(null_values=["-"], strings_can_be_null=True),
            )
        return table.num_rows

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        rows = sum(pool.map(one, files))
    return time.perf_counter() - t0, rows


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=float, default=14.0)
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", metavar="DIR", help="write the organisation here and keep it")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sw-bench-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp) / "org"
        t0 = time.perf_counter()
        truth = simulate(root, seed=args.seed, days=args.days, instances=args.instances)
        t_sim = time.perf_counter() - t0
        files = [p for p in root.rglob("*") if p.is_file()]
        size_mb = sum(p.stat().st_size for p in files) / 1e6
        print(f"organisation: {args.days:g} days, {truth.instances} instances, {len(truth.accounts)} accounts, "
              f"{truth.flow_records:,} flow records, {len(files):,} files, {size_mb:,.0f} MB "
              f"(simulated in {t_sim:.1f} s)")

        ceiling_s, ceiling_rows = parse_ceiling(root)

        with Store(Path(tmp) / "state.db") as store:
            t0 = time.perf_counter()
            result = scan_directory(root, store=store)
            scan_s = time.perf_counter() - t0

        report = result.report
        flows = report.tables.get("flows", 0)
        print(f"scan: {scan_s:.1f} s end to end: {format_timings(report.timings)}")
        print("records: " + ", ".join(f"{k} {v:,}" for k, v in report.tables.items()))
        print(f"flow throughput: {flows / scan_s:,.0f} flow records/s end to end (all sources read and detected)")
        print(f"baseline, pyarrow parse of the flow files alone: {ceiling_s:.1f} s ({ceiling_rows / ceiling_s:,.0f} "
              f"rows/s); whole scan / parse-only = {scan_s / ceiling_s:.1f}x")
        print(f"findings: {len(result.findings)} ({sum(1 for f in result.findings if f.severity >= 3)} high or "
              f"critical); skipped records: {report.skipped_records}; gaps: {len(report.gaps)}")
        print(f"peak RSS: {peak_rss_mb():,.0f} MB")
        print(f"target: well under 120 s on 2 cores -> {'OK' if scan_s < 120 else 'MISSED'} ({scan_s:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
