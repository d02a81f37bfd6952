"""`spendwatch series FILE.csv`: score one utilisation series point by point (streaming, no labels).

`add_commands(sub)` adds the command to the spendwatch parser. pandas and the detector load only when the
command runs, so `spendwatch --help` stays quick. Exit codes as for every spendwatch command: 0 done, 1 the
file could not be read, has no `value` column or has a value that is not a number (the error names the lines;
nothing is written, since a partly scored series would read as an all-clear), 2 usage error. An empty value is
a missing sample: it is scored as the last value seen.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _unit_interval(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1]")
    return value


def cmd_series(args: argparse.Namespace) -> int:
    import dataclasses

    import pandas as pd

    from .cli import EXIT_FATAL, EXIT_OK
    from .models.series import SeriesConfig, score_frame

    config = SeriesConfig()
    if args.threshold is not None:
        config = dataclasses.replace(config, threshold=args.threshold)
    try:
        # Text in, text out: the rows go back exactly as read (no float round trip), with two columns added.
        frame = pd.read_csv(args.file, dtype=str, keep_default_na=False)
        scored = score_frame(frame, config)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        print(f"spendwatch: error: {args.file}: {exc}", file=sys.stderr)
        return EXIT_FATAL
    if args.output and args.output != "-":
        scored.to_csv(args.output, index=False)
        print(f"{len(scored)} rows, {int(scored['alert'].sum())} alerts (threshold {config.threshold:g}) "
              f"-> {args.output}", file=sys.stderr)
    else:
        scored.to_csv(sys.stdout, index=False)
    return EXIT_OK


def add_commands(sub: Any) -> None:
    """Add `series` to the subparsers `sub` of the spendwatch parser."""
    series = sub.add_parser(
        "series", help="score one metric series (timestamp,value CSV) point by point, streaming",
        description="Write the rows back with anomaly_score (0..1, higher = more anomalous; each row scored from "
                    "earlier rows only) and alert (0/1 at the threshold).")
    series.add_argument("file", metavar="FILE.csv", help="CSV with a value column (e.g. CloudWatch's timestamp,value)")
    series.add_argument("--threshold", type=_unit_interval, metavar="X",
                        help="alert when anomaly_score >= X (default 0.5, the setting measured on NAB)")
    series.add_argument("-o", "--output", metavar="OUT.csv", help="write here instead of stdout")
    series.set_defaults(func=cmd_series)
