"""Shared test set-up. pytest-socket (configured in pyproject.toml) refuses every host but loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES
