"""The throwaway server that .ci/run and the fixture start, and what happens when there is none."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.store import postgres_server


def test_start_gives_a_working_server_and_stop_removes_it(tmp_path_factory: pytest.TempPathFactory) -> None:
    if postgres_server.find_bin_dir() is None:
        pytest.skip("no PostgreSQL binaries here (the next test covers what CI does then)")
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="spendwatch-pg-test-"))  # not under pytest's root-only tmp dirs
    url = postgres_server.start(base)
    try:
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert conn.info.host == "127.0.0.1"
    finally:
        postgres_server.stop(base)
    assert not base.exists()


def test_no_postgres_skips_locally_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPENDWATCH_TEST_POSTGRES_URL", raising=False)
    monkeypatch.setattr(postgres_server, "find_bin_dir", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no PostgreSQL"):
        next(postgres_server.session_server())
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no PostgreSQL"):
        next(postgres_server.session_server())


def test_an_explicit_url_is_used_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPENDWATCH_TEST_POSTGRES_URL", "postgresql://ci@127.0.0.1:5999/x")
    monkeypatch.setattr(postgres_server, "find_bin_dir", lambda: None)
    assert next(postgres_server.session_server()) == "postgresql://ci@127.0.0.1:5999/x"
