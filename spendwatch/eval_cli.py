"""`spendwatch eval`: measure the detectors on labelled data.

`--nab DIR` scores the utilisation-series detector on NAB's 17 real AWS CloudWatch series with NAB's own
scorer (DIR/../../tools/nab_score.py, or --scorer PATH) and prints the standard, reward_low_FP_rate and
reward_low_FN_rate scores next to the published anchors; `--cv` adds the leave-files-out check (settings
chosen on some files, scored on the others: how much of the score is tuning). `--scenarios` simulates every
labelled scenario (spendwatch/simulate/scenarios.py), scans it through the real pipeline and prints per-rule
and overall precision and recall at severity >= medium (definitions in spendwatch/evaluate.py); `--markdown`
prints the README's tables; `--compare` scans each scenario three ways (rules only, isolation forest only, both: the
default), each scan scored with the scenario's own baseline model, and prints precision, recall, F1 and the
median time to detect side by side (`--no-ttd` skips the time-to-detect replays, the slow part).
Another source adds an argument to the `sources` group below and a branch in `cmd_eval`.
Exit codes: 0 done, 1 data or scorer missing, 2 usage error, 3 (--fail-on-miss) a scenario label failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

# NAB's published detectors on exactly these 17 files, at NAB's thresholds (shared/data/nab/README.md).
NAB_ANCHORS = {"numenta (HTM)": (73.42, 65.79, 76.72), "contextOSE": (71.52, 67.65, 75.84),
               "randomCutForest": (57.56, 44.90, 64.69), "relativeEntropy": (50.02, 43.96, 53.35)}


def _eval_scenarios(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .cli import EXIT_FINDINGS, EXIT_OK
    from .evaluate import run_compare, run_suite
    from .simulate.scenarios import SCENARIOS

    unknown = [n for n in args.only or [] if n not in SCENARIOS]
    if unknown:
        print(f"spendwatch: error: eval: unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}",
              file=sys.stderr)
        return 2
    workdir = Path(args.workdir) if args.workdir else None
    if args.compare:
        comparison = run_compare(args.only or None, workdir=workdir, ttd=not args.no_ttd)
        if args.json:
            json.dump(comparison.to_json(), sys.stdout)
            print()
        else:
            sys.stdout.write(comparison.markdown() if args.markdown else comparison.text())
        failed = [r.scenario for r in comparison.suites["both"].results if not r.passed()]
        return EXIT_FINDINGS if (args.fail_on_miss and failed) else EXIT_OK
    suite = run_suite(args.only or None, workdir=workdir)
    if args.json:
        json.dump(suite.to_json(), sys.stdout)
        print()
    elif args.markdown:
        sys.stdout.write(suite.markdown())
    else:
        sys.stdout.write(suite.text())
    failed = [r.scenario for r in suite.results if not r.passed()]
    return EXIT_FINDINGS if (args.fail_on_miss and failed) else EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    from .cli import EXIT_FATAL, EXIT_OK

    if args.scenarios:
        code = _eval_scenarios(args)
        if args.nab is None or code == 2:
            return code
    if args.nab is None:
        print("spendwatch: error: eval: give a data source (--nab DIR or --scenarios)", file=sys.stderr)
        return 2
    from .models.series import evaluate_nab

    try:
        result = evaluate_nab(args.nab, scorer=args.scorer)
    except (OSError, ImportError, SystemExit, ValueError) as exc:
        print(f"spendwatch: error: eval --nab {args.nab}: {exc}", file=sys.stderr)
        return EXIT_FATAL
    p = result["profiles"]
    if args.json:
        if args.cv:
            from .models.series import cross_validate_nab

            result["cv"] = cross_validate_nab(args.nab, scorer=args.scorer)
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
    if args.cv:
        _print_nab_cv(args)
    return EXIT_OK


def _print_nab_cv(args: argparse.Namespace) -> None:
    """`--cv`: the leave-files-out check of how much of the NAB score is tuning (models/series.py)."""
    from .models.series import cross_validate_nab

    cv = cross_validate_nab(args.nab, scorer=args.scorer)
    two = cv["two_fold"]
    print(f"\nLeave-files-out check: {cv['configs']} settings ({' x '.join(cv['grid'])}) scored on every file")
    rows = [("default, all files", cv["default"]["scores"]), ("best setting, all files", cv["grid_best"]["scores"]),
            ("median setting, all files", cv["grid_median"]),
            (f"two-fold held out ({two['splits']} splits)", two["mean"]),
            ("  sd over splits", two["sd"]), ("  worst split", two["min"]),
            ("leave one file out", cv["leave_one_out"])]
    for name, (std, lfp, lfn) in rows:
        print(f"{name:<34}{std:>10.2f}{lfp:>10.2f}{lfn:>10.2f}")
    print("Held out: the setting with the best summed score on the other files scores each file.")


def add_commands(sub: Any) -> None:
    """Add `eval` to the subparsers `sub` of the spendwatch parser."""
    ev = sub.add_parser("eval", help="measure the detectors on labelled data (NAB series, ...)")
    sources = ev.add_argument_group("data sources")
    sources.add_argument("--nab", metavar="DIR", help="NAB data folder (e.g. ../shared/data/nab)")
    sources.add_argument("--scenarios", action="store_true",
                         help="the simulator's labelled scenarios: precision / recall per rule at >= medium")
    ev.add_argument("--scorer", metavar="PATH", help="NAB scorer (default DIR/../../tools/nab_score.py)")
    ev.add_argument("--cv", action="store_true",
                    help="--nab: also choose the settings on some files and score the others (about 30 s)")
    ev.add_argument("--json", action="store_true", help="print the result as one JSON object")
    ev.add_argument("--markdown", action="store_true", help="--scenarios: Markdown tables (the README's)")
    ev.add_argument("--compare", action="store_true",
                    help="--scenarios: rules only, model only and both side by side (precision, recall, F1, "
                         "time to detect)")
    ev.add_argument("--no-ttd", action="store_true",
                    help="--compare: skip the time-to-detect replays (about half of the run time)")
    ev.add_argument("--only", nargs="+", metavar="NAME", help="--scenarios: only these scenarios")
    ev.add_argument("--workdir", metavar="DIR", help="--scenarios: simulate under DIR (default: a temp dir)")
    ev.add_argument("--fail-on-miss", action="store_true",
                    help="--scenarios: exit 3 when a positive is missed or a hard negative reaches medium")
    ev.set_defaults(func=cmd_eval)
