"""Naming a file's kind: content first, the key layout only for content that says nothing."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import PurePosixPath

import pyarrow.parquet as pq
import pytest
from aws_kit import CUR2_KEY, FLOW_PARQUET_KEY, FLOW_V2_KEY, RESOLVER_KEY, TRAIL_KEY, cur2_table, flow_parquet

from spendwatch.connectors.files.detect import (
    CLOUDTRAIL,
    CUR2,
    FLOW_PARQUET,
    FLOW_TEXT,
    METADATA,
    RESOLVER,
    detect,
)


def parquet_bytes(table: object) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)  # type: ignore[arg-type]
    return sink.getvalue()


@pytest.mark.parametrize(
    ("key", "content", "kind"),
    [
        ("x/a.bin", parquet_bytes(flow_parquet()), FLOW_PARQUET),
        ("x/a.bin", parquet_bytes(cur2_table()), CUR2),
        ("x/Manifest.json", json.dumps({"reportKeys": ["a"], "assemblyId": "1"}).encode(), METADATA),
        ("AWSLogs/012345678901/CloudTrail-Digest/us-east-1/2026/11/20/d.json.gz",
         gzip.compress(json.dumps({"digestStartTime": "2026-11-20T10:00:00Z"}).encode(), mtime=0), METADATA),
        ("cur/legacy/swcur/swcur-RedshiftCommands.sql", b"COPY ...", METADATA),
        # Damaged content: the key decides, so the reader can say what is wrong with it.
        (FLOW_V2_KEY, b"\x1f\x8b\x08\x00garbage", FLOW_TEXT),
        (FLOW_PARQUET_KEY, b"PAR1 not really", FLOW_PARQUET),
        (TRAIL_KEY, gzip.compress(b'{"Events": []}', mtime=0), CLOUDTRAIL),
        (RESOLVER_KEY, gzip.compress(b"{not json", mtime=0), RESOLVER),
        (CUR2_KEY, b"PAR1 broken", CUR2),
        # A truncated first line still shows its field names.
        ("x/q", b'{"version":"1.1","query_timestamp":"2026-11-20T10:00:00Z","query_name":"a.', RESOLVER),
        ("x/readme.txt", b"hello", None),
        ("x/empty", b"", None),
    ],
)
def test_detect(key: str, content: bytes, kind: str | None) -> None:
    assert detect(PurePosixPath(key), content).kind == kind
