"""The alert chart: a real PNG of the right size, with the anomalous span shaded where it belongs."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from spendwatch.chart import (
    HEIGHT_PX,
    SPAN_ALPHA,
    SPAN_COLOUR,
    WIDTH_PX,
    ChartSeries,
    chart_for_finding,
    render_chart,
    series_for_finding,
)

from .conftest import make_finding

T0 = datetime(2026, 11, 20, 0, tzinfo=UTC)


def series(hours: int = 48) -> ChartSeries:
    rng = np.random.default_rng(7)
    times = [T0 + timedelta(hours=h) for h in range(hours)]
    values = np.clip(rng.normal(20, 5, hours), 0, 100)
    values[30:40] = 99.0  # the miner
    return ChartSeries(times, [float(v) for v in values], "gpu_util of i-0abc", "%")


def span_pixels(png: bytes) -> np.ndarray:
    """Mask of pixels painted with the span colour over the white background (what axvspan draws)."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=float) / 255
    colour = np.array([int(SPAN_COLOUR[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    blended = (1 - SPAN_ALPHA) * 1.0 + SPAN_ALPHA * colour
    return np.all(np.abs(rgb - blended) < 0.02, axis=2)


def test_png_decodes_with_the_expected_size_and_is_deterministic() -> None:
    png = render_chart(series(), (T0 + timedelta(hours=30), T0 + timedelta(hours=40)))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png))
    image.verify()
    assert Image.open(io.BytesIO(png)).size == (WIDTH_PX, HEIGHT_PX)
    assert render_chart(series(), (T0 + timedelta(hours=30), T0 + timedelta(hours=40))) == png


def test_anomalous_span_is_shaded_where_it_is() -> None:
    early = span_pixels(render_chart(series(), (T0 + timedelta(hours=2), T0 + timedelta(hours=8))))
    late = span_pixels(render_chart(series(), (T0 + timedelta(hours=38), T0 + timedelta(hours=44))))
    none = span_pixels(render_chart(series(), None))
    assert none.sum() == 0
    assert early.sum() > 1000 and late.sum() > 1000  # a band the height of the axes, not a stray pixel
    early_x = np.nonzero(early.any(axis=0))[0]
    late_x = np.nonzero(late.any(axis=0))[0]
    assert early_x.max() < late_x.min()  # the band follows the span along the time axis
    width = WIDTH_PX
    assert early_x.mean() < width / 3 and late_x.mean() > 2 * width / 3


def test_empty_or_mismatched_series_is_refused() -> None:
    with pytest.raises(ValueError):
        render_chart(ChartSeries([], [], "x", "%"), None)
    with pytest.raises(ValueError):
        render_chart(ChartSeries([T0], [1.0, 2.0], "x", "%"), None)


def test_series_from_canonical_frames_prefers_gpu_utilisation_then_spend() -> None:
    f = make_finding("i-0abc", first_seen=T0 + timedelta(hours=10), last_seen=T0 + timedelta(hours=12))
    times = [T0 + timedelta(hours=h) for h in range(24)]
    util = pd.DataFrame({
        "time": times * 3, "cloud": "aws", "resource": ["i-0abc"] * 48 + ["i-0other"] * 24,
        "metric": ["gpu_util"] * 24 + ["cpu_util"] * 24 + ["gpu_util"] * 24,
        "device": ["0"] * 24 + [None] * 24 + ["0"] * 24, "value": [50.0] * 24 + [5.0] * 24 + [1.0] * 24,
    })
    two_gpus = pd.concat([util, util.iloc[:24].assign(device="1", value=100.0)], ignore_index=True)
    s = series_for_finding(f, utilization=two_gpus)
    assert s is not None and s.unit == "%" and "gpu_util" in s.label
    assert set(s.values) == {75.0}  # mean over the two GPUs, the other instance ignored
    assert min(s.times) >= f.first_seen - timedelta(hours=12)

    spend = pd.DataFrame({"hour": times, "cloud": "aws", "account": "1", "service": "AmazonEC2",
                          "resource": "i-0abc", "cost_usd": 5.672})
    s = series_for_finding(f, spend=spend)
    assert s is not None and s.unit == "USD" and len(s.values) == 24
    assert series_for_finding(make_finding("i-0none"), utilization=util, spend=spend) is None
    png = chart_for_finding(f, utilization=util)
    assert png is not None and span_pixels(png).sum() > 0
