"""The alert's small chart: one resource's utilisation (or spend) over time, with the anomalous span shaded.

Pure functions: plain series or canonical frames in, PNG bytes out. Rendering uses matplotlib's Agg canvas
on a `Figure` built here (never pyplot), so it needs no display and is safe to call from the interaction
endpoint's worker threads. matplotlib is imported on first use: importing this module is cheap.

What it does not do: decide what is anomalous. The span comes from the finding (first_seen .. last_seen).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from .findings import Finding

LINE_COLOUR = "#1f6feb"
SPAN_COLOUR = "#d1242f"  # Slack's danger red, so the chart and the Quarantine button say the same thing
SPAN_ALPHA = 0.18
WIDTH_PX, HEIGHT_PX, DPI = 640, 240, 100
# Utilisation metrics in order of preference: pegged GPUs are the miner's signature, CPU the fallback.
METRICS = ("gpu_util", "cpu_util", "power", "gpu_mem")


@dataclass(frozen=True)
class ChartSeries:
    """One line to draw: times (tz-aware UTC), values, what they are."""

    times: Sequence[datetime]
    values: Sequence[float]
    label: str
    unit: str


def render_chart(
    series: ChartSeries,
    span: tuple[datetime, datetime] | None,
    *,
    title: str = "",
    width_px: int = WIDTH_PX,
    height_px: int = HEIGHT_PX,
) -> bytes:
    """PNG bytes of `series` as a line with `span` shaded (and labelled "anomaly"); `span` None shades nothing.

    Raises ValueError on an empty series or mismatched lengths: a chart of nothing would mislead.
    """
    if len(series.times) == 0 or len(series.times) != len(series.values):
        raise ValueError(f"chart needs matching, non-empty times and values ({len(series.times)} vs "
                         f"{len(series.values)})")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    # Times as matplotlib date numbers (days since the epoch, UTC): the axis is labelled in UTC like the alert.
    ax.plot(date2num(list(series.times)), list(series.values), color=LINE_COLOUR, linewidth=1.6, label=series.label)
    ax.xaxis_date()
    if span is not None:
        lo, hi = span
        if hi <= lo:  # a single observation still gets a visible band
            hi = lo + timedelta(minutes=30)
        start, end = float(date2num(lo)), float(date2num(hi))
        ax.axvspan(start, end, color=SPAN_COLOUR, alpha=SPAN_ALPHA, linewidth=0)
        ax.text(start, 1.0, " anomaly", transform=ax.get_xaxis_transform(), va="top", ha="left",
                fontsize=8, color=SPAN_COLOUR)
    locator = AutoDateLocator(minticks=3, maxticks=7)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_ylabel(series.unit, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.25)
    if series.unit == "%":
        ax.set_ylim(0, 115)  # headroom so the "anomaly" label does not sit on a line pegged at 100
    else:
        ax.set_ylim(bottom=0)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title(title or series.label, fontsize=9, loc="left")
    fig.tight_layout(pad=0.6)
    buf = io.BytesIO()
    # No Software metadata: the same input gives the same bytes whatever matplotlib version drew it.
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def series_for_finding(
    finding: Finding,
    *,
    utilization: pd.DataFrame | None = None,
    spend: pd.DataFrame | None = None,
    context: timedelta = timedelta(hours=12),
) -> ChartSeries | None:
    """The finding's resource's best series from the canonical frames, or None when there is none.

    Utilisation first (mean over devices per sample time, the first metric of `METRICS` present), else
    hourly spend. Only samples from `context` before first_seen to `context` after last_seen are kept, so
    the anomalous span is seen against what came before it.
    """
    if not finding.resource:
        return None
    lo, hi = finding.first_seen - context, finding.last_seen + context
    if utilization is not None and len(utilization):
        rows = utilization[(utilization["resource"] == finding.resource)
                           & (utilization["time"] >= lo) & (utilization["time"] <= hi)]
        for metric in METRICS:
            sel = rows[rows["metric"] == metric]
            if len(sel):
                mean = sel.groupby("time", sort=True)["value"].mean()
                unit = "W" if metric == "power" else "%"
                return ChartSeries([t.to_pydatetime() for t in mean.index], [float(v) for v in mean.to_numpy()],
                                   f"{metric} of {finding.resource}", unit)
    if spend is not None and len(spend):
        rows = spend[(spend["resource"] == finding.resource) & (spend["hour"] >= lo) & (spend["hour"] <= hi)]
        if len(rows):
            total = rows.groupby("hour", sort=True)["cost_usd"].sum()
            return ChartSeries([t.to_pydatetime() for t in total.index], [float(v) for v in total.to_numpy()],
                               f"spend of {finding.resource} per hour", "USD")
    return None


def chart_for_finding(
    finding: Finding,
    *,
    utilization: pd.DataFrame | None = None,
    spend: pd.DataFrame | None = None,
) -> bytes | None:
    """PNG of the finding's resource with first_seen .. last_seen shaded; None when the frames hold no series."""
    series = series_for_finding(finding, utilization=utilization, spend=spend)
    if series is None:
        return None
    return render_chart(series, (finding.first_seen, finding.last_seen))
