"""Shared test set-up. pytest-socket (configured in pyproject.toml) refuses every host but loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real moto server on 127.0.0.1 (one per test session); reset its state with `reset_moto`."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A freshly reset moto server and dummy credentials; yields the endpoint URL for boto3."""
    import urllib.request

    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }.items():
        monkeypatch.setenv(key, value)
    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")).read()
    yield moto_endpoint


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL (admin URL): $SPENDWATCH_TEST_POSTGRES_URL (.ci/run starts one), else a throwaway
    server started here (tests/store/postgres_server.py); skipped when neither can be had, failed under $CI."""
    from tests.store.postgres_server import session_server

    yield from session_server()


@pytest.fixture(params=["sqlite", "postgres"])
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path | str]:
    """A new, empty state on each backend: an SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield tmp_path / "state.db"
        return
    from tests.store.postgres_server import fresh_schema

    with fresh_schema(request.getfixturevalue("postgres_url")) as url:
        yield url
