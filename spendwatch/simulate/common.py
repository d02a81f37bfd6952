"""Small helpers shared by the simulator's writers: ids, addresses, times, deterministic gzip output.

Everything here is deterministic given the numpy Generator passed in: no wall clock, no `uuid4`, no hash
randomisation (nothing iterates over a set of strings).
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

HEX = np.array(list("0123456789abcdef"))

# EC2 usage-type region prefixes as they appear in billing (us-east-1 has none for instance usage).
REGION_CODE: dict[str, str] = {
    "us-east-1": "USE1", "us-west-2": "USW2", "eu-west-1": "EUW1", "eu-central-1": "EUC1",
    "ap-southeast-1": "APS1", "ap-northeast-1": "APN1",
}
# Availability-zone ids per region (the names and ids differ per account on AWS; a fixed map is enough here).
AZ_IDS: dict[str, tuple[str, ...]] = {
    "us-east-1": ("use1-az1", "use1-az2", "use1-az4"),
    "eu-west-1": ("euw1-az1", "euw1-az2", "euw1-az3"),
    "ap-southeast-1": ("apse1-az1", "apse1-az2", "apse1-az3"),
    "us-west-2": ("usw2-az1", "usw2-az2", "usw2-az3"),
    "eu-central-1": ("euc1-az1", "euc1-az2", "euc1-az3"),
    "ap-northeast-1": ("apne1-az1", "apne1-az2", "apne1-az4"),
}


def hex_id(rng: np.random.Generator, prefix: str, n: int = 17) -> str:
    """An AWS-style id such as `i-0abc...` (17 hex digits, the first a 0 as in current ids) drawn from `rng`."""
    digits = "".join(HEX[rng.integers(0, 16, n)])
    return prefix + ("0" + digits[1:] if n == 17 else digits)


def det_uuid(rng: np.random.Generator) -> str:
    """A version-4-shaped UUID drawn from `rng` (uuid4 would read the OS entropy pool)."""
    x = int.from_bytes(rng.bytes(16), "big")
    x = (x & ~(0xF000 << 64) | (0x4000 << 64)) & ~(0xC000 << 48) | (0x8000 << 48)
    h = f"{x:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def short_hash(*parts: object, n: int = 8) -> str:
    """A stable hex digest of the parts, for the random-looking suffixes AWS puts in object keys."""
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:n]


def ip_int(text: str) -> int:
    a, b, c, d = (int(x) for x in text.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d


def ip_text(value: int) -> str:
    return f"{(value >> 24) & 255}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"


PRIVATE_NETS = [(ip_int("10.0.0.0"), 8), (ip_int("172.16.0.0"), 12), (ip_int("192.168.0.0"), 16)]


def is_private(values: np.ndarray) -> np.ndarray:
    out = np.zeros(values.shape, dtype=bool)
    for base, bits in PRIVATE_NETS:
        out |= (values >> (32 - bits)) == (base >> (32 - bits))
    return out


def iso(ts: float) -> str:
    """`2026-11-20T10:00:00Z`, the timestamp form CloudTrail and the Resolver use."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def key_time(ts: float) -> str:
    """`20261120T1000Z`, the timestamp form in flow-log, CloudTrail and Resolver object keys."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y%m%dT%H%MZ")


def day_path(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y/%m/%d")


class FileWriter:
    """Writes files through a small thread pool: zlib releases the GIL, so compression overlaps.

    Output bytes do not depend on scheduling: each file's content is computed before submission and gzip
    headers carry `mtime=0` and no file name.
    """

    def __init__(self, root: Path, workers: int = 2) -> None:
        self.root = root
        self.files = 0
        self.bytes = 0
        self._pool = ThreadPoolExecutor(max_workers=workers)
        self._pending: list[Future[int]] = []

    def write_gz(self, rel: str, text: str, level: int = 4) -> None:
        self.write_gz_bytes(rel, text.encode(), level)

    def write_gz_bytes(self, rel: str, data: bytes, level: int = 4) -> None:
        path = self.root / rel
        self._pending.append(self._pool.submit(_gz_job, path, data, level))
        self.files += 1
        if len(self._pending) > 256:  # bound memory held by queued file contents
            self._drain(128)

    def write_bytes(self, rel: str, data: bytes) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.files += 1
        self.bytes += len(data)

    def _drain(self, keep: int = 0) -> None:
        while len(self._pending) > keep:
            self.bytes += self._pending.pop(0).result()

    def close(self) -> None:
        self._drain()
        self._pool.shutdown()


def _gz_job(path: Path, data: bytes, level: int) -> int:
    packed = gzip.compress(data, compresslevel=level, mtime=0)
    try:
        path.write_bytes(packed)
    except FileNotFoundError:  # first file in its folder; mkdir here keeps the slow syscall off the main thread
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(packed)
    return len(packed)


def join_lines(lines: Iterable[str]) -> str:
    return "\n".join(lines) + "\n"
