"""Where the state lives: a path or a PostgreSQL URL, from a flag, the environment or the config file."""

from __future__ import annotations

from pathlib import Path

from spendwatch.store import describe, is_postgres_url, resolve_state, state_location

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


def test_messages_never_show_the_password() -> None:
    assert describe(URL) == "postgresql://spendwatch:***@db.internal:5432/spendwatch?sslmode=require"
    assert describe("postgresql://db/x") == "postgresql://db/x"
    assert describe(Path("/var/lib/spendwatch/state.db")) == "/var/lib/spendwatch/state.db"
