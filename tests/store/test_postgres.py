"""What is particular to the PostgreSQL backend: collation, the writer lock's scope, connection errors."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from dataclasses import replace
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from spendwatch.store import Store, StoreError
from tests.fakes.findings import T0, make_finding
from tests.store.postgres_server import fresh_schema


@pytest.fixture
def icu_database(postgres_url: str) -> Iterator[str]:
    """A database whose default collation is ICU en-US: case and punctuation sort unlike bytes there."""
    name = f"icu_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C' LOCALE_PROVIDER icu"
                     " ICU_LOCALE 'en-US'")
    parts = urlsplit(postgres_url)
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_ids_sort_byte_by_byte_in_a_database_with_another_collation(icu_database: str) -> None:
    ids = ["sw-B", "sw-a", "sw_c", "sw-A", "sw.d"]
    with psycopg.connect(icu_database) as conn:  # the database itself would sort them otherwise
        icu_order = [r[0] for r in conn.execute("SELECT x FROM unnest(%s::text[]) AS x ORDER BY x", (ids,))]
    assert icu_order != sorted(ids)
    with Store(icu_database) as store:  # the same findings but for their ids: ordered by id at the end
        store.upsert([replace(make_finding(), id=i) for i in ids], now=T0)
        assert [f.id for f in store.findings()] == sorted(ids)


def test_the_writer_lock_is_per_state(postgres_url: str) -> None:
    """One writer at a time within a state; states in other schemas of the same database do not wait."""
    with fresh_schema(postgres_url) as a_url, fresh_schema(postgres_url) as b_url, \
            Store(a_url) as a, Store(a_url) as a_again, Store(b_url) as b:
        for s in (a_again, b):
            s._db.execute("SET lock_timeout = '200ms'")
        with a._tx() as db:
            db.execute("INSERT INTO serve_alerts (finding_id, digest, alerted_at) VALUES ('f', 'd', 't')")
            b.upsert([make_finding()], now=T0)  # another state: not blocked
            with pytest.raises(psycopg.errors.LockNotAvailable):
                a_again.upsert([make_finding()], now=T0)  # the same state: waits for the writer, times out
        a_again.upsert([make_finding()], now=T0)  # free again once the first writer committed
        assert a_again.count() == 1 and b.count() == 1


def test_an_unreachable_server_is_a_clear_error_without_the_password() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    url = f"postgresql://spendwatch:s3cret-pw@127.0.0.1:{port}/spendwatch?connect_timeout=3"
    with pytest.raises(StoreError, match=f"spendwatch:\\*\\*\\*@127.0.0.1:{port}/spendwatch.*cannot connect") as err:
        Store(url)
    assert "s3cret-pw" not in str(err.value)


def test_a_search_path_without_a_schema_is_a_clear_error(postgres_url: str) -> None:
    from tests.store.postgres_server import with_search_path

    with pytest.raises(StoreError, match="no schema of the search_path exists"):
        Store(with_search_path(postgres_url, "no_such_schema"))
