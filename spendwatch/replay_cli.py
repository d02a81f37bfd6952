"""`spendwatch replay --data DIR --every 15m`: the scheduled scan over history as if live (spendwatch/replay.py).

`add_commands(sub)` adds the command; pandas and the detectors load only when it runs, so `spendwatch --help`
stays quick. Exit codes: 0 done, 1 the data directory is missing, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


def parse_every(text: str) -> timedelta:
    """'15m', '1h', '90s', '2d' -> timedelta (a bare number is minutes)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 15m, 1h, 90s")
    value = float(m.group(1)) * {"s": 1, "m": 60, "": 60, "h": 3600, "d": 86400}[m.group(2)]
    if value <= 0:
        raise argparse.ArgumentTypeError("the interval must be positive")
    return timedelta(seconds=value)


def _when(text: str) -> datetime:
    """An ISO time; without a zone it is UTC."""
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO time like 2026-11-20T05:00Z") from exc
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def cmd_replay(args: argparse.Namespace) -> int:
    from .cli import EXIT_FATAL, EXIT_OK
    from .connectors.files import read_directory
    from .replay import replay
    from .report import RunReport
    from .store import Store, state_location

    root = Path(args.data)
    if not root.is_dir():
        print(f"spendwatch: error: replay: {root} is not a directory", file=sys.stderr)
        return EXIT_FATAL
    tables = read_directory(root, RunReport())
    with (tempfile.TemporaryDirectory(prefix="sw-replay-") as tmp,
          Store(state_location(args.store) if args.store else Path(tmp) / "replay.db") as store):
        result = replay(tables, every=args.every, start=args.start, end=args.end, store=store,
                        landing=not args.no_landing)
    if args.json:
        json.dump(result.to_json(), sys.stdout)
        print()
    else:
        sys.stdout.write(result.text())
    return EXIT_OK


def add_commands(sub: Any) -> None:
    """Add `replay` to the subparsers `sub` of the spendwatch parser."""
    rp = sub.add_parser("replay", help="run the scheduled scan over history as if live (backtest time to detect)")
    rp.add_argument("--data", required=True, metavar="DIR", help="local copies of the clouds' exports")
    rp.add_argument("--every", type=parse_every, default=timedelta(minutes=15), metavar="INTERVAL",
                    help="scan interval: 15m (default), 1h, ...")
    rp.add_argument("--start", type=_when, help="first tick at or after this time (default: first delivery)")
    rp.add_argument("--end", type=_when, help="last tick at or before this time (default: after the last delivery)")
    rp.add_argument("--store", metavar="PATH|URL", help="state to fill: an SQLite file or a postgresql:// URL "
                    "(default: a temporary SQLite file; never the live state)")
    rp.add_argument("--no-landing", action="store_true",
                    help="skip the bisection that finds when each finding's evidence landed (faster)")
    rp.add_argument("--json", action="store_true", help="print the result as one JSON object")
    rp.set_defaults(func=cmd_replay)
