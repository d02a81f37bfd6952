"""Routing, rate limits, isolation of a failing sink, and the outbox's bookkeeping."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from spendwatch.config import ConfigError
from spendwatch.delivery import DeliveryError, SinkConfig, deliver, enqueue, flush, parse_sinks
from spendwatch.findings import Severity
from spendwatch.report import RunReport
from spendwatch.store import Outbox, OutboxItem, Store
from tests.fakes.findings import T0, make_finding


class Recorder:
    """An in-process sink: records what it was sent, or fails while `down`."""

    def __init__(self) -> None:
        self.sent: list[OutboxItem] = []
        self.down = False

    def send(self, item: OutboxItem) -> None:
        if self.down:
            raise DeliveryError("connection refused")
        self.sent.append(item)


CONFIG = {
    "sinks": {
        "pager": {"type": "webhook", "url": "http://127.0.0.1:1/", "secret": "x", "rate_limit": 2,
                  "route": {"min_severity": "critical"}},
        "siem": {"type": "ocsf", "path": "unused", "route": {"clouds": ["aws"], "accounts": ["012345678901"]}},
        "pool": {"type": "webhook", "url": "http://127.0.0.1:1/", "secret": "x",
                 "route": {"min_severity": "low", "rules": ["pool-domain"]}},
        "report": {"type": "html_report", "path": "REPLACED", "route": {"min_severity": "info"}},
    }
}


def config(tmp_path: Path) -> dict:
    cfg = {"sinks": {k: dict(v) for k, v in CONFIG["sinks"].items()}}
    cfg["sinks"]["report"]["path"] = str(tmp_path / "report.html")
    return cfg


def test_parse_sinks_validates() -> None:
    cfgs = {c.name: c for c in parse_sinks(CONFIG)}
    assert cfgs["pager"].route.min_severity is Severity.CRITICAL and cfgs["pager"].rate_limit == 2
    assert cfgs["pager"].settings == {"url": "http://127.0.0.1:1/", "secret": "x"}
    for bad, match in [({"x": {"type": "carrier-pigeon"}}, "type"),
                       ({"x": {"type": "ocsf", "route": {"min_severity": "urgent"}}}, "min_severity"),
                       ({"x": {"type": "ocsf", "route": {"colour": 1}}}, "unknown keys"),
                       ({"x": {"type": "ocsf", "route": {"clouds": "aws"}}}, "list"),
                       ({"x": {"type": "ocsf", "rate_limit": -1}}, "rate_limit")]:
        with pytest.raises(ConfigError, match=match):
            parse_sinks({"sinks": bad})


def test_critical_pages_low_only_lands_in_the_report(tmp_path: Path) -> None:
    critical = make_finding("i-crit")
    low = make_finding("i-low", severity=Severity.LOW, rules=["spend-spike"])
    gcp = make_finding("i-gcp", cloud="gcp", account="ml-prod", severity=Severity.HIGH)
    sinks = {"pager": Recorder(), "siem": Recorder(), "pool": Recorder()}
    with Store(tmp_path / "s.db") as store:
        res = deliver([critical, low, gcp], RunReport(), config(tmp_path), store, T0, sinks=sinks)
    assert [i.finding_id for i in sinks["pager"].sent] == [critical.id]
    assert sorted(i.finding_id for i in sinks["siem"].sent) == sorted([critical.id, low.id])
    # "pool" takes low and above when the pool-domain rule fired, whatever the cloud.
    assert sorted(i.finding_id for i in sinks["pool"].sent) == sorted([critical.id, gcp.id])
    page = (tmp_path / "report.html").read_text()
    assert all(f.id in page for f in (critical, low, gcp))
    assert res.sinks["report"].written and res.ok


def test_rate_limit_defers_and_sends_worst_first(tmp_path: Path) -> None:
    findings = [make_finding(f"i-{n}", score=0.5 + n / 100) for n in range(5)]
    findings[3] = replace(findings[3], severity=Severity.CRITICAL, score=0.99)
    rest = [replace(f, severity=Severity.HIGH) for i, f in enumerate(findings) if i != 3]
    cfg = [SinkConfig("pager", "webhook", {}, rate_limit=2)]
    rec = Recorder()
    with Store(tmp_path / "s.db") as store:
        enqueue([findings[3], *rest], cfg, store, T0)
        r1 = flush(store, cfg, T0, sinks={"pager": rec})
        assert (r1.sinks["pager"].delivered, r1.sinks["pager"].deferred) == (2, 3)
        assert rec.sent[0].finding_id == findings[3].id  # the critical one first
        assert flush(store, cfg, T0 + timedelta(seconds=30), sinks={"pager": rec}).sinks["pager"].delivered == 0
        assert flush(store, cfg, T0 + timedelta(seconds=61), sinks={"pager": rec}).sinks["pager"].delivered == 2
        assert flush(store, cfg, T0 + timedelta(seconds=122), sinks={"pager": rec}).sinks["pager"].delivered == 1
    assert len({i.finding_id for i in rec.sent}) == len(rec.sent) == 5


def test_a_failing_sink_does_not_block_the_others(tmp_path: Path) -> None:
    down, up = Recorder(), Recorder()
    down.down = True
    cfgs = [SinkConfig("down", "webhook", {}), SinkConfig("broken", "webhook", {}), SinkConfig("up", "webhook", {})]
    with Store(tmp_path / "s.db") as store:
        enqueue([make_finding("i-1"), make_finding("i-2")], cfgs, store, T0)
        # "broken" has no url: it cannot be built; its items wait, and "up" still gets everything.
        res = flush(store, cfgs, T0, sinks={"down": down, "up": up})
        assert res.sinks["up"].delivered == 2 and res.sinks["down"].failed == 1
        assert res.sinks["broken"].errors and res.sinks["broken"].deferred == 2
        assert not res.ok
        counts = Outbox(store).counts()
        assert counts["down"] == {"pending": 2} and counts["broken"] == {"pending": 2}


def test_backoff_grows_and_is_capped(tmp_path: Path) -> None:
    rec = Recorder()
    rec.down = True
    cfg = [SinkConfig("s", "webhook", {}, backoff_s=10, max_backoff_s=50)]
    with Store(tmp_path / "s.db") as store:
        enqueue([make_finding()], cfg, store, T0)
        t = T0
        delays = []
        for _ in range(5):
            flush(store, cfg, t, sinks={"s": rec})
            item = Outbox(store).items("s")[0]
            delays.append(item.next_attempt_at - t.timestamp())
            t = t.fromtimestamp(item.next_attempt_at, t.tzinfo)
        assert delays == [10, 20, 40, 50, 50]
        rec.down = False
        flush(store, cfg, t, sinks={"s": rec})
        assert Outbox(store).items("s")[0].state == "delivered" and len(rec.sent) == 1


def test_lease_returns_items_of_a_crashed_sender(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        ob = Outbox(store)
        f = make_finding()
        assert ob.enqueue("s", f, version="v1", now=T0.timestamp())
        assert not ob.enqueue("s", f, version="v1", now=T0.timestamp() + 1)
        taken = ob.claim("s", now=T0.timestamp(), limit=10, lease_s=60)
        assert len(taken) == 1
        assert ob.claim("s", now=T0.timestamp() + 30, limit=10) == []  # leased: no second sender takes it
        again = ob.claim("s", now=T0.timestamp() + 61, limit=10)  # the sender died: lease ran out
        assert [i.id for i in again] == [taken[0].id]


def test_failed_create_is_carried_into_the_next_version(tmp_path: Path) -> None:
    rec = Recorder()
    rec.down = True
    cfg = [SinkConfig("s", "webhook", {}, backoff_s=1)]
    f = make_finding()
    with Store(tmp_path / "s.db") as store:
        enqueue([f], cfg, store, T0)
        flush(store, cfg, T0, sinks={"s": rec})
        enqueue([replace(f, last_seen=T0 + timedelta(hours=1))], cfg, store, T0 + timedelta(hours=1))
        rec.down = False
        flush(store, cfg, T0 + timedelta(hours=1), sinks={"s": rec})
        assert [(i.activity, i.finding.last_seen) for i in rec.sent] == [("create", T0 + timedelta(hours=1))]
        assert [i.state for i in Outbox(store).items("s")] == ["superseded", "delivered"]
