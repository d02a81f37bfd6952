"""Where the state lives: a path or a PostgreSQL URL, from a flag, the environment or the config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from spendwatch.store import StoreError, describe, is_postgres_url, resolve_state, state_location

URL = "postgresql://spendwatch:pw@db.internal:5432/spendwatch?sslmode=require"


def test_a_url_stays_a_url_and_a_path_is_expanded() -> None:
    assert state_location(URL) == URL  # Path(URL) would fold "//" and lose the host
    assert state_location("postgres://db/x") == "postgres://db/x"
    assert state_location("~/state.db") == Path.home() / "state.db"
    assert state_location(":memory:") == ":memory:"
    assert not is_postgres_url("postgresql.db") and not is_postgres_url(Path("postgresql:/x"))


def test_precedence_flag_environment_config_default(tmp_path: Path) -> None:
    env = {"SPENDWATCH_DATABASE_URL": URL, "SPENDWATCH_HOME": str(tmp_path)}
    assert resolve_state("/x/flag.db", environ=env, configured="/x/config.db") == Path("/x/flag.db")
    assert resolve_state(None, environ={**env, "SPENDWATCH_STATE": "/x/env.db"}, configured="/x/c.db") \
        == Path("/x/env.db")
    assert resolve_state(None, environ=env, configured="/x/config.db") == URL
    assert resolve_state(None, environ={}, configured="/x/config.db") == Path("/x/config.db")
    assert resolve_state(None, environ={}, default="/x/default.db") == Path("/x/default.db")


def test_a_database_url_that_is_no_url_is_refused_not_opened_as_a_file() -> None:
    """A secret still holding its placeholder (the Azure module's `set-out-of-band`) would otherwise be opened
    as an SQLite file of that name in each container: every replica its own state, without a word."""
    with pytest.raises(StoreError, match=r"SPENDWATCH_DATABASE_URL is set but is not a postgresql:// URL "
                                         r"\('set-out-of-band'\)"):
        resolve_state(None, environ={"SPENDWATCH_DATABASE_URL": "set-out-of-band"}, configured="/x/config.db")
    with pytest.raises(StoreError, match=r"\(a mysql:// URL\)") as refused:  # its password is not shown
        resolve_state(None, environ={"SPENDWATCH_DATABASE_URL": "mysql://u:secret@db/x"})
    assert "secret" not in str(refused.value).replace("the secret's value", "")
    # what comes before it wins, and an empty value is unset
    assert resolve_state("/x/flag.db", environ={"SPENDWATCH_DATABASE_URL": "x"}) == Path("/x/flag.db")
    assert resolve_state(None, environ={"SPENDWATCH_STATE": "/x/env.db", "SPENDWATCH_DATABASE_URL": "x"}) == \
        Path("/x/env.db")
    assert resolve_state(None, environ={"SPENDWATCH_DATABASE_URL": ""}, configured="/x/c.db") == Path("/x/c.db")


def test_messages_never_show_the_password() -> None:
    assert describe(URL) == "postgresql://spendwatch:***@db.internal:5432/spendwatch?sslmode=require"
    assert describe("postgresql://db/x") == "postgresql://db/x"
    assert describe(Path("/var/lib/spendwatch/state.db")) == "/var/lib/spendwatch/state.db"


def test_commands_say_so_and_stop(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    from spendwatch.cli import main

    monkeypatch.delenv("SPENDWATCH_STATE", raising=False)
    monkeypatch.setenv("SPENDWATCH_DATABASE_URL", "set-out-of-band")
    monkeypatch.chdir(tmp_path)
    assert main(["findings"]) == 1
    assert "SPENDWATCH_DATABASE_URL is set but is not a postgresql:// URL" in capsys.readouterr().err
    assert main(["model", "show"]) == 1
    assert "SPENDWATCH_DATABASE_URL is set but is not a postgresql:// URL" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no SQLite file named after the placeholder
