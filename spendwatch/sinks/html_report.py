"""The HTML report of a scan: one self-contained file (inline CSS, charts as data: URIs) that opens offline.

Sections: a headline (findings by severity, and whether the scan saw everything), COVERAGE GAPS first when
there are any (a blind spot must not read as an all clear), the findings table worst first, each finding's
evidence with its chart where one was rendered, and the run report (sources, rows per table, skipped records
and why, timings). Everything from the cloud is HTML-escaped; the page runs no script and loads nothing.

`render_report_html(findings, report, ...)` returns the page; `write_report(path, ...)` writes it atomically
(a reader never sees half a file). The report shows each finding's own severity; it decides nothing.
"""

from __future__ import annotations

import base64
import html
import os
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from ..findings import Finding, Severity
from ..report import RunReport

_COLOURS = {"critical": "#b42318", "high": "#d1242f", "medium": "#bc4c00", "low": "#9a6700", "info": "#57606a"}
_CSS = """
body{margin:0;background:#f6f8fa;color:#1f2328;font:14px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,
 Helvetica,Arial,sans-serif}
main{max-width:1120px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.meta{color:#57606a;font-size:12px}
.cards{display:flex;gap:10px;flex-wrap:wrap;margin:14px 0}
.card{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:8px 14px;min-width:90px}
.card b{display:block;font-size:20px}
.gaps{background:#fff1e5;border:1px solid #d1242f;border-radius:6px;padding:10px 14px;margin:12px 0}
.ok{background:#dafbe1;border:1px solid #1a7f37;border-radius:6px;padding:8px 14px;margin:12px 0}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d0d7de}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #eaeef2;vertical-align:top}
td{overflow-wrap:anywhere}
th{background:#f6f8fa;font-size:12px;text-transform:uppercase;color:#57606a;white-space:nowrap}
td.num{text-align:right;white-space:nowrap}
.sev{display:inline-block;color:#fff;border-radius:10px;padding:0 8px;font-size:12px;font-weight:600}
.finding{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:12px 16px;margin:12px 0}
.finding h3{margin:0 0 6px;font-size:15px}
.finding img{max-width:100%;border:1px solid #eaeef2;border-radius:4px;margin-top:8px}
code{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f6f8fa;padding:1px 4px;
 border-radius:4px}
ul{margin:4px 0 4px 20px;padding:0}
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _sev(s: Severity) -> str:
    return f'<span class="sev sev-{s.label}" style="background:{_COLOURS[s.label]}">{s.label}</span>'


def _cost(v: float | None) -> str:
    return "unknown" if v is None else f"${v:,.2f}/h"


def _when(d: datetime) -> str:
    return d.strftime("%Y-%m-%d %H:%M") + "Z"


def _report_dict(report: RunReport | Mapping[str, Any] | None) -> dict[str, Any] | None:
    if report is None:
        return None
    return report.to_dict() if isinstance(report, RunReport) else dict(report)


def _run_section(rep: dict[str, Any] | None) -> list[str]:
    if rep is None:
        return ['<h2>Run report</h2><p class="gaps">No run report: what this scan read is unknown, so the absence '
                'of a finding here is not an all clear.</p>']
    out = ["<h2>Run report</h2><table><tbody>"]
    sources = rep.get("sources") or {}
    out.append("<tr><th>Sources</th><td>" + (", ".join(f"{_e(k)} ({_e(v)} files)" for k, v in sorted(sources.items()))
                                            or "none") + "</td></tr>")
    tables = rep.get("tables") or {}
    out.append("<tr><th>Records</th><td>" + (", ".join(f"{_e(k)} {int(v):,}" for k, v in tables.items()) or "none")
               + "</td></tr>")
    out.append(f"<tr><th>Skipped</th><td>{int(rep.get('skipped_records') or 0):,} records</td></tr>")
    timings = rep.get("timings_s") or {}
    if timings:
        out.append("<tr><th>Time</th><td>" + ", ".join(f"{_e(k)} {float(v):.1f}s" for k, v in timings.items())
                   + "</td></tr>")
    out.append("</tbody></table>")
    problems = rep.get("problems") or []
    if problems:
        out.append("<h3>Problems</h3><table><thead><tr><th>Where</th><th>Reason</th><th>Records</th></tr></thead><tbody>")
        for p in problems[:200]:
            where = f"{p.get('source')}" + (f":{p['line']}" if p.get("line") is not None else "")
            out.append(f"<tr><td><code>{_e(where)}</code></td><td>{_e(p.get('reason'))}</td>"
                       f"<td class=num>{_e(p.get('records'))}</td></tr>")
        out.append("</tbody></table>")
        if len(problems) > 200:
            out.append(f"<p class=meta>... and {len(problems) - 200} more (see the JSON run report)</p>")
    for note in rep.get("notes") or []:
        out.append(f"<p class=meta>note: {_e(note)}</p>")
    return out


def render_report_html(findings: Sequence[Finding], report: RunReport | Mapping[str, Any] | None, *,
                       generated_at: datetime, charts: Mapping[str, bytes] | None = None,
                       title: str = "spendwatch report", run_label: str | None = None) -> str:
    """The report page. `charts` maps finding id -> PNG bytes (from spendwatch.chart), inlined as data: URIs."""
    charts = charts or {}
    ordered = sorted(findings, key=lambda f: (-int(f.severity), -f.score, f.id))
    rep = _report_dict(report)
    counts = Counter(f.severity.label for f in ordered)
    parts = [f"<h1>{_e(title)}</h1>",
             f'<div class=meta>generated {_e(_when(generated_at))}' + (f" · {_e(run_label)}" if run_label else "")
             + "</div>", '<div class="cards">',
             f'<div class="card"><b id="count-findings">{len(ordered)}</b>findings</div>']
    for s in reversed(Severity):
        parts.append(f'<div class="card"><b style="color:{_COLOURS[s.label]}">{counts.get(s.label, 0)}</b>'
                     f"{s.label}</div>")
    total = sum(f.hourly_cost_usd or 0.0 for f in ordered if f.status not in ("resolved", "expected"))
    parts.append(f'<div class="card"><b>${total:,.2f}</b>per hour at stake</div></div>')
    gaps = (rep or {}).get("gaps") or []
    if gaps:
        parts.append('<div class="gaps" id="coverage-gaps"><b>COVERAGE GAPS: not scanned, not clear</b><ul>'
                     + "".join(f"<li><code>{_e(g.get('source'))}</code>: {_e(g.get('reason'))}</li>" for g in gaps)
                     + "</ul></div>")
    elif rep is not None and rep.get("complete"):
        parts.append('<div class="ok">Every source was read with no problem and no gap.</div>')
    parts.append("<h2>Findings</h2>")
    if not ordered:
        parts.append("<p>No findings.</p>")
    else:
        parts.append("<table id=findings><thead><tr><th>Severity</th><th>Resource</th><th>Cloud / account / region"
                     "</th><th>Started by</th><th>Cost</th><th>Status</th><th>Rules</th><th>Last seen</th></tr>"
                     "</thead><tbody>")
        for f in ordered:
            who = (f.principal or "-") + (f" ({f.principal_type})" if f.principal_type else "")
            parts.append(
                f'<tr class="finding-row" data-finding-id="{_e(f.id)}"><td>{_sev(f.severity)}</td>'
                f'<td><a href="#{_e(f.id)}"><code>{_e(f.resource or f.principal or "-")}</code></a>'
                + (f"<br><span class=meta>{_e(f.instance_type)}</span>" if f.instance_type else "")
                + f"</td><td>{_e(f.cloud)} {_e(f.account)} / {_e(f.region or '-')}</td><td>{_e(who)}</td>"
                f"<td class=num>{_e(_cost(f.hourly_cost_usd))}</td><td>{_e(f.status)}</td>"
                f"<td>{_e(', '.join(f.rules))}</td><td>{_e(_when(f.last_seen))}</td></tr>")
        parts.append("</tbody></table><h2>Evidence</h2>")
        for f in ordered:
            parts.append(f'<div class="finding" id="{_e(f.id)}"><h3>{_sev(f.severity)} {_e(f.summary)}</h3>'
                         f'<div class=meta>id <code>{_e(f.id)}</code> · score {f.score:.2f} · first seen '
                         f'{_e(_when(f.first_seen))} · last seen {_e(_when(f.last_seen))} · detected '
                         f'{_e(_when(f.detected_at))}</div><ul>'
                         + ("".join(f"<li>{_e(e)}</li>" for e in f.evidence) or "<li>(no evidence recorded)</li>")
                         + "</ul>")
            if f.related:
                parts.append("<div>Same principal also launched: " + ", ".join(f"<code>{_e(r)}</code>"
                                                                               for r in f.related) + "</div>")
            png = charts.get(f.id)
            if png:
                data = base64.b64encode(png).decode("ascii")
                parts.append(f'<img src="data:image/png;base64,{data}" alt="chart of {_e(f.resource)} with the '
                             'anomalous span shaded">')
            parts.append("</div>")
    parts.extend(_run_section(rep))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>\n"
            + "\n".join(parts) + "\n</main></body></html>\n")


def write_report(path: Path, findings: Sequence[Finding], report: RunReport | Mapping[str, Any] | None, *,
                 generated_at: datetime, charts: Mapping[str, bytes] | None = None,
                 title: str = "spendwatch report", run_label: str | None = None) -> Path:
    """Write the report to `path` atomically (temporary file in the same folder, then rename)."""
    page = render_report_html(findings, report, generated_at=generated_at, charts=charts, title=title,
                              run_label=run_label)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(page)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
