"""Fixtures for the files connector tests. The builders and key layouts live in aws_kit.py (a plain module:
with --import-mode=importlib a conftest cannot be imported by the tests, so this folder is put on sys.path)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from aws_kit import (
    CUR2_KEY,
    CUR2_MANIFEST,
    CUR2_MANIFEST_KEY,
    CUR_CSV_KEY,
    FLOW_PARQUET_KEY,
    FLOW_V2_KEY,
    FLOW_V5_KEY,
    METRIC_CSV_KEY,
    RESOLVER_KEY,
    STREAM_KEY,
    TRAIL_KEY,
    Bucket,
    cur2_table,
    flow_parquet,
)

from spendwatch.report import RunReport


@pytest.fixture
def samples(fixtures: Path) -> Path:
    return fixtures / "aws"


@pytest.fixture
def bucket(tmp_path: Path, samples: Path) -> Bucket:
    return Bucket(tmp_path / "exports", samples)


@pytest.fixture
def org(bucket: Bucket) -> Bucket:
    """One of every native format, as an organisation's buckets would hold them."""
    bucket.put(FLOW_V2_KEY, bucket.sample("vpcflow_v2.log"))
    bucket.put(FLOW_V5_KEY, bucket.sample("vpcflow_v5.log"))
    bucket.put_parquet(FLOW_PARQUET_KEY, flow_parquet())
    bucket.put(TRAIL_KEY, bucket.sample("cloudtrail.json"))
    bucket.put(RESOLVER_KEY, bucket.sample("resolver.jsonl"))
    bucket.put(CUR_CSV_KEY, bucket.sample("cur_legacy.csv"))
    bucket.put_parquet(CUR2_KEY, cur2_table())
    bucket.put(CUR2_MANIFEST_KEY, CUR2_MANIFEST)
    bucket.put(STREAM_KEY, bucket.sample("metric_stream.jsonl"))
    bucket.put(METRIC_CSV_KEY, bucket.sample("gpu_util.csv"))
    return bucket


@pytest.fixture
def problems_of() -> Callable[[RunReport, Path], list[tuple[int | None, str, int]]]:
    """(line, reason, records) of every problem the report holds for one file."""

    def get(report: RunReport, path: Path) -> list[tuple[int | None, str, int]]:
        return [(p.line, p.reason, p.records) for p in report.problems if p.source == str(path)]

    return get
