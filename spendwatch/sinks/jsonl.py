"""JSON lines: one finding per line with the DESIGN.md fields, for scripts and log shippers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TextIO

from ..findings import Finding


def write_findings(findings: Iterable[Finding], out: TextIO) -> int:
    n = 0
    for f in findings:
        out.write(f.dumps() + "\n")
        n += 1
    out.flush()
    return n
