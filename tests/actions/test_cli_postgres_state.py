"""Every command's `--state` takes a PostgreSQL URL as `serve` does (spendwatch.store.resolve_state): `findings`,
`quarantine` (dry run), `release`, `audit`, `deliver`, `report` and `approvals` read and write the same
PostgreSQL state, a message names it without its password, and nothing is written to a file named after the
URL (what `Path(url)` made of it before)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from spendwatch.cli import main
from spendwatch.findings import Finding, Severity, finding_id
from spendwatch.store import Outbox, Store
from tests.store.postgres_server import fresh_schema

from .conftest import ROLE, World

ACCOUNT = "123456789012"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def with_password(url: str, password: str) -> str:
    """`url` with a password (the test server trusts 127.0.0.1 and ignores it; messages must not show it)."""
    parts = urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def stored_finding(iid: str) -> Finding:
    now = datetime(2026, 11, 1, 12, tzinfo=UTC)
    return Finding(id=finding_id("aws", ACCOUNT, iid), cloud="aws", account=ACCOUNT, region="us-east-1",
                   resource=iid, principal=f"arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE}/agent-7",
                   severity=Severity.CRITICAL, score=0.9, rules=["pool-domain"], evidence=["e"], first_seen=now,
                   last_seen=now, detected_at=now, hourly_cost_usd=3.0, summary="mining")


def test_commands_read_and_write_a_postgres_state(world: World, postgres_url: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # Path("postgresql://...") would have made directories here
    monkeypatch.setenv("SPENDWATCH_HOME", str(tmp_path / "home"))
    for name in ("SPENDWATCH_STATE", "SPENDWATCH_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    iid = world.launch()
    before = world.state(iid)
    finding = stored_finding(iid)
    with fresh_schema(postgres_url) as plain:
        url = with_password(plain, "hunter2")
        with Store(url) as store:
            store.upsert([finding], now=finding.detected_at)

        code, out, _ = run(capsys, "findings", "--state", url, "--json")
        assert code == 0 and [json.loads(line)["id"] for line in out.splitlines()] == [finding.id]

        code, out, err = run(capsys, "quarantine", iid, "--state", url, "--endpoint-url", world.endpoint, "--json")
        doc = json.loads(out)
        assert code == 0, err
        # the stored finding was found in PostgreSQL: its id and region went with the plan
        assert doc["outcomes"][0]["dry_run"] and doc["outcomes"][0]["finding"] == finding.id
        assert world.state(iid) == before

        code, out, _ = run(capsys, "audit", "--state", url, "--json", "--resource", iid)
        lines = [json.loads(line) for line in out.splitlines()]
        assert code == 0 and lines and {(e["action"], e["dry_run"]) for e in lines} == {("aws.quarantine", True)}

        code, _, err = run(capsys, "release", iid, "--state", url, "--endpoint-url", world.endpoint, "--apply")
        assert code == 1 and "no active quarantine" in err
        assert f"(state postgresql://postgres:***@{urlsplit(plain).hostname}" in err and "hunter2" not in err

        config = tmp_path / "sinks.toml"
        config.write_text(f'[sinks.lake]\ntype = "ocsf"\npath = "{tmp_path / "ocsf.jsonl"}"\n')
        code, out, err = run(capsys, "deliver", "--config", str(config), "--state", url, "--json")
        assert code == 0, err
        assert json.loads(out)["sinks"]["lake"]["delivered"] == 1
        events = [json.loads(line) for line in (tmp_path / "ocsf.jsonl").read_text().splitlines()]
        assert [e["finding_info"]["uid"] for e in events] == [finding.id]
        with Store(url) as store:
            assert Outbox(store).counts()["lake"].get("delivered") == 1

        code, _, err = run(capsys, "report", "--state", url, "-o", str(tmp_path / "report.html"))
        assert code == 0, err
        assert iid in (tmp_path / "report.html").read_text()

        code, out, _ = run(capsys, "approvals", "list", "--state", url, "--json")
        assert code == 0 and json.loads(out) == []

        # no --state: $SPENDWATCH_DATABASE_URL, as serve and the Lambda handlers read it
        monkeypatch.setenv("SPENDWATCH_DATABASE_URL", url)
        code, out, _ = run(capsys, "findings", "--json")
        assert code == 0 and [json.loads(line)["id"] for line in out.splitlines()] == [finding.id]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ocsf.jsonl", "report.html", "sinks.toml"]


def test_an_unreachable_url_is_an_error_without_the_password(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://spendwatch:hunter2@127.0.0.1:9/none?connect_timeout=2"
    for argv in (["findings"], ["audit"], ["approvals", "list"]):
        code, _, err = run(capsys, *argv, "--state", url)
        assert code == 1 and "cannot connect to PostgreSQL" in err, (argv, err)
        assert err.startswith("spendwatch: error: postgresql://spendwatch:***@127.0.0.1:9/"), err
        assert "hunter2" not in err, err
