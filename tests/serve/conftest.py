"""Puts this folder on sys.path: with --import-mode=importlib the tests import serve_helpers as a plain module."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
