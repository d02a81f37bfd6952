"""Readable terminal output: the findings table, their evidence and the run report.

A sink renders findings; it never decides severity. Width-aware but plain text (no colour codes), so the
output reads the same in a terminal, a CI log and a README excerpt.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from typing import TextIO

from ..findings import Finding, Severity
from ..report import RunReport

_MAX_PROBLEMS = 12


def _cost(value: float | None) -> str:
    return "?" if value is None else f"${value:,.2f}"


def _principal(f: Finding) -> str:
    if not f.principal:
        return "-"
    name = f.principal.rsplit("/", 1)[-1] if f.principal.startswith("arn:") else f.principal
    return f"{name} ({f.principal_type})" if f.principal_type else name


def _truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 1)] + "…"


def render_findings(findings: Sequence[Finding], out: TextIO, *, changes: dict[str, str] | None = None) -> None:
    """Write a table of findings, worst first, then the evidence of those at medium or above.

    The rules column lists the strongest evidence first (the order fusion gives), so a cut keeps what matters.
    """
    if not findings:
        out.write("No findings.\n")
        return
    # On a terminal the table fits its width; in a pipe or a log nothing is cut.
    width = max(shutil.get_terminal_size((120, 20)).columns, 100) if out.isatty() else 10_000
    head = ("SEVERITY", "RESOURCE", "ACCOUNT", "REGION", "PRINCIPAL", "$/HOUR", "RULES")
    rows = []
    for f in findings:
        mark = "*" if changes and changes.get(f.id) == "new" else " "
        rows.append(
            (
                f.severity.label + mark,
                f.resource or "-",
                f.account,
                f.region or "-",
                _principal(f),
                _cost(f.hourly_cost_usd),
                ",".join(f.rules),
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    widths[4] = min(widths[4], 30 if out.isatty() else 60)
    fixed = sum(widths[:6]) + 2 * 6
    widths[6] = max(min(widths[6], width - fixed), 10)
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))
    out.write(line.rstrip() + "\n")
    for r in rows:
        cells = [_truncate(c, w).ljust(w) for c, w in zip(r, widths, strict=True)]
        cells[5] = _truncate(r[5], widths[5]).rjust(widths[5])
        out.write("  ".join(cells).rstrip() + "\n")
    if changes:
        new = sum(1 for f in findings if changes.get(f.id) == "new")
        out.write(f"({len(findings)} findings, {new} new: marked *)\n")
    for f in findings:
        if f.severity < Severity.MEDIUM:
            continue
        out.write(f"\n[{f.severity.label.upper()}] {f.summary}\n")
        out.write(f"  id {f.id}  score {f.score:.2f}  first seen {f.first_seen:%Y-%m-%d %H:%M}Z"
                  f"  last seen {f.last_seen:%Y-%m-%d %H:%M}Z\n")
        for e in f.evidence:
            out.write(f"  - {e}\n")
        if f.related:
            out.write(f"  related: {', '.join(f.related)}\n")


def render_report(report: RunReport, out: TextIO) -> None:
    """Write the run report: sources read, rows per table, what was skipped and why, gaps, timings."""
    out.write("\nRun report\n")
    kinds = report.kinds()
    if kinds:
        out.write("  sources: " + ", ".join(f"{k} ({n} files)" for k, n in sorted(kinds.items())) + "\n")
    if report.tables:
        out.write("  records: " + ", ".join(f"{k} {v:,}" for k, v in report.tables.items()) + "\n")
    if report.problems:
        files = {p.source for p in report.problems}
        out.write(
            f"  skipped: {report.skipped_records:,} records in {len(files)} files "
            f"({len(report.problems)} problems)\n"
        )
        for p in report.problems[:_MAX_PROBLEMS]:
            out.write(f"    {p.where()}: {p.reason}\n")
        if len(report.problems) > _MAX_PROBLEMS:
            out.write(f"    ... and {len(report.problems) - _MAX_PROBLEMS} more (see --json report)\n")
    else:
        out.write("  skipped: nothing\n")
    if report.gaps:
        out.write("  COVERAGE GAPS (not scanned, not clear):\n")
        for g in report.gaps:
            out.write(f"    {g.source}: {g.reason}\n")
    for note in report.notes:
        out.write(f"  note: {note}\n")
    if report.timings:
        out.write(f"  time: {format_timings(report.timings)}\n")


def format_timings(timings: dict[str, float]) -> str:
    """'12.1s (read 6.6s [files 5.7s, join 0.7s], detect 4.5s)': sub-stages ('stage: part') nest in their stage."""
    stages = {k: v for k, v in timings.items() if ":" not in k}
    parts = []
    for stage, seconds in stages.items():
        subs = [f"{k.split(':', 1)[1].strip()} {v:.1f}s" for k, v in timings.items() if k.startswith(stage + ":")]
        parts.append(f"{stage} {seconds:.1f}s" + (f" [{', '.join(subs)}]" if subs else ""))
    return f"{sum(stages.values()):.1f}s ({', '.join(parts)})"
