"""The store's SQL is written once, with SQLite's `?` placeholders: it means the same on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from spendwatch.store import Store


def test_placeholders_beside_percent_signs_quotes_and_comments(store_location: Path | str) -> None:
    with Store(store_location) as store:
        row = store._db.execute("SELECT ? || '%?' AS \"odd?name\", -- why? 100%\n ?", ("a", "b")).fetchone()
        assert tuple(row) == ("a%?", "b")
        with store._tx() as db:  # RETURNING and ON CONFLICT as both dialects read them
            first = db.execute("INSERT INTO serve_alerts (finding_id, digest, alerted_at) VALUES (?, ?, ?)"
                               " ON CONFLICT (finding_id) DO NOTHING RETURNING finding_id", ("f", "d", "t"))
            assert first.fetchone()[0] == "f"
            again = db.execute("INSERT INTO serve_alerts (finding_id, digest, alerted_at) VALUES (?, ?, ?)"
                               " ON CONFLICT (finding_id) DO NOTHING", ("f", "d2", "t"))
            assert again.rowcount == 0
