"""`spendwatch eval`: measure the detectors on labelled data.

`--nab DIR` scores the utilisation-series detector on NAB's 17 real AWS CloudWatch series with NAB's own
scorer (DIR/../../tools/nab_score.py, or --scorer PATH) and prints the standard, reward_low_FP_rate and
reward_low_FN_rate scores next to the published anchors. Other sources (`--scenarios`: rules vs model vs both
on the simulator's labelled scenarios) add an argument to the `sources` group below and a branch in `cmd_eval`.
Exit codes: 0 done, 1 data or scorer missing, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

# NAB's published detectors on exactly these 17 files, at NAB's thresholds (shared/data/nab/README.md).
NAB_ANCHORS = {"numenta (HTM)": (73.42, 65.79, 76.72), "contextOSE": (71.52, 67.65, 75.84),
               "randomCutForest": (57.56, 44.90, 64.69), "relativeEntropy": (50.02, 43.96, 53.35)}


def cmd_eval(args: argparse.Namespace) -> int:
    from .cli import EXIT_FATAL, EXIT_OK

    if args.nab is None:
        print("spendwatch: error: eval: give a data source (--nab DIR)", file=sys.stderr)
        return 2
    from .models.series import evaluate_nab

    try:
        result = evaluate_nab(args.nab, scorer=args.scorer)
    except (OSError, ImportError, SystemExit, ValueError) as exc:
        print(f"spendwatch: error: eval --nab {args.nab}: {exc}", file=sys.stderr)
        return EXIT_FATAL
    p = result["profiles"]
    if args.json:
        json.dump(result, sys.stdout)
        print()
        return EXIT_OK
    print(f"NAB realAWSCloudwatch: {len(result['files'])} files, {result['rows']:,} rows scored in "
          f"{result['seconds']:.2f} s, threshold {result['threshold']:g}")
    print(f"{'detector':<28}{'standard':>10}{'low FP':>10}{'low FN':>10}")
    print(f"{'spendwatch series':<28}{p['standard']:>10.2f}{p['reward_low_FP_rate']:>10.2f}"
          f"{p['reward_low_FN_rate']:>10.2f}")
    for name, (std, lfp, lfn) in NAB_ANCHORS.items():
        print(f"{name:<28}{std:>10.2f}{lfp:>10.2f}{lfn:>10.2f}")
    print(f"Threshold: {result['note']}.")
    return EXIT_OK


def add_commands(sub: Any) -> None:
    """Add `eval` to the subparsers `sub` of the spendwatch parser."""
    ev = sub.add_parser("eval", help="measure the detectors on labelled data (NAB series, ...)")
    sources = ev.add_argument_group("data sources")
    sources.add_argument("--nab", metavar="DIR", help="NAB data folder (e.g. ../shared/data/nab)")
    ev.add_argument("--scorer", metavar="PATH", help="NAB scorer (default DIR/../../tools/nab_score.py)")
    ev.add_argument("--json", action="store_true", help="print the result as one JSON object")
    ev.set_defaults(func=cmd_eval)
