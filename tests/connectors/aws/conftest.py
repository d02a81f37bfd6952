"""Fixtures for the AWS connector tests; the kit lives in moto_kit.py (a plain module: with
--import-mode=importlib a conftest cannot be imported by the tests, so this folder is put on sys.path)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from moto_kit import moto_server, org  # noqa: F401  (fixtures)
