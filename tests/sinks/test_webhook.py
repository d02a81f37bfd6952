"""The signed webhook against a local receiver that checks the HMAC, goes down, fails, and recovers."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from spendwatch.delivery import SinkConfig, enqueue, flush
from spendwatch.sinks.ocsf import validate
from spendwatch.sinks.webhook import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookSink, sign, verify
from spendwatch.store import Outbox, Store
from tests.fakes.findings import T0, make_finding
from tests.fakes.receiver import Receiver, Request

SECRET = b"s3cret-for-tests"


def verifying(req: Request) -> tuple[int, object]:
    """The receiver's side, as the module documents it: 401 unless the signature and timestamp check out."""
    ok = verify(SECRET, req.headers[TIMESTAMP_HEADER], req.body, req.headers[SIGNATURE_HEADER],
                now=T0.timestamp())
    return (202, {"ok": True}) if ok else (401, {"error": "bad signature"})


def cfg(url: str, **kw: object) -> SinkConfig:
    return SinkConfig("hook", "webhook", {"url": url}, backoff_s=10, max_backoff_s=80, **kw)  # type: ignore[arg-type]


def sink(url: str, fmt: str = "finding") -> WebhookSink:
    return WebhookSink(url, SECRET, fmt=fmt, clock=lambda: T0.timestamp())


def test_signature_round_trip_and_tamper() -> None:
    body = b'{"a":1}'
    sig = sign(SECRET, "1700000000", body)
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert verify(SECRET, "1700000000", body, sig, now=1700000100)
    assert not verify(SECRET, "1700000000", body + b" ", sig, now=1700000100)
    assert not verify(b"other", "1700000000", body, sig, now=1700000100)
    assert not verify(SECRET, "1700000000", body, sig, now=1700000000 + 301)  # replay window
    assert not verify(SECRET, "not-a-time", body, sig, now=1700000000)


def test_receiver_verifies_and_sees_each_update_once(tmp_path: Path) -> None:
    f = make_finding()
    with Receiver(verifying) as rx, Store(tmp_path / "s.db") as store:
        c = cfg(rx.url + "/hook")
        enqueue([f], [c], store, T0)
        enqueue([f], [c], store, T0)  # the same version again: not queued twice
        res = flush(store, [c], T0, sinks={"hook": sink(rx.url + "/hook")})
        assert res.sinks["hook"].delivered == 1
        flush(store, [c], T0 + timedelta(minutes=1), sinks={"hook": sink(rx.url + "/hook")})
        assert len(rx.accepted) == 1
        doc = rx.accepted[0].json()
        assert doc["activity"] == "create" and doc["finding"]["id"] == f.id
        assert doc["finding"]["severity"] == "critical" and doc["finding"]["evidence"] == f.evidence
        assert rx.accepted[0].headers[DELIVERY_HEADER] == doc["delivery_id"]
        # A new scan's view of the incident is one update; resolving it is a close.
        later = replace(f, last_seen=T0 + timedelta(hours=1), severity=f.severity)
        enqueue([later], [c], store, T0 + timedelta(hours=1))
        enqueue([replace(later, status="resolved")], [c], store, T0 + timedelta(hours=2))
        flush(store, [c], T0 + timedelta(hours=2), sinks={"hook": sink(rx.url + "/hook")})
        acts = [r.json()["activity"] for r in rx.accepted]
        # The update still queued when the close arrived is superseded: the receiver gets the latest state.
        assert acts == ["create", "close"]


def test_wrong_secret_is_refused_and_kept(tmp_path: Path) -> None:
    with Receiver(verifying) as rx, Store(tmp_path / "s.db") as store:
        c = cfg(rx.url)
        enqueue([make_finding()], [c], store, T0)
        res = flush(store, [c], T0, sinks={"hook": WebhookSink(rx.url, b"wrong", clock=lambda: T0.timestamp())})
        assert res.sinks["hook"].failed == 1 and not rx.accepted
        assert [i.state for i in Outbox(store).items("hook")] == ["pending"]


def test_down_then_recovers_nothing_lost_nothing_duplicated(tmp_path: Path) -> None:
    findings = [make_finding(f"i-{n:04d}") for n in range(5)]
    rx = Receiver(verifying)  # not up yet: connections are refused
    db = tmp_path / "s.db"
    c = cfg(rx.url)
    with Store(db) as store:
        enqueue(findings, [c], store, T0)
        res = flush(store, [c], T0, sinks={"hook": sink(rx.url)})
        # The first failure marks the sink down for this flush: one attempt, the rest untouched.
        assert res.sinks["hook"].failed == 1 and res.sinks["hook"].delivered == 0
        attempts = sorted(i.attempts for i in Outbox(store).items("hook"))
        assert attempts == [0, 0, 0, 0, 1]
    rx.up()
    rx.status = 503  # up, but failing
    try:
        with Store(db) as store:  # a new process: the outbox survived
            res = flush(store, [c], T0 + timedelta(seconds=5), sinks={"hook": sink(rx.url)})
            assert res.sinks["hook"].failed == 1
            # The item that failed at T0 backs off 10 s, so it is not due at T0+5: another one is tried.
            tried = sorted(i.next_attempt_at - T0.timestamp() for i in Outbox(store).items("hook") if i.attempts)
            assert tried == [10.0, 15.0]
            rx.status = None
            t = T0 + timedelta(seconds=10)
            for _ in range(4):
                flush(store, [c], t, sinks={"hook": sink(rx.url)})
                t += timedelta(seconds=30)
            assert {i.state for i in Outbox(store).items("hook")} == {"delivered"}
            # Again later: nothing more is sent.
            flush(store, [c], t + timedelta(hours=3), sinks={"hook": sink(rx.url)})
        got = [r.json()["finding"]["id"] for r in rx.accepted]
        assert sorted(got) == sorted(f.id for f in findings)
        assert len(got) == len(set(got)) == 5
    finally:
        rx.down()


def test_rejected_item_does_not_stop_the_others(tmp_path: Path) -> None:
    bad = make_finding("i-bad")

    def responder(req: Request) -> tuple[int, object]:
        return (400, {"error": "no"}) if b"i-bad" in req.body else (200, {})

    with Receiver(responder) as rx, Store(tmp_path / "s.db") as store:
        c = cfg(rx.url)
        enqueue([bad, make_finding("i-good1"), make_finding("i-good2")], [c], store, T0)
        res = flush(store, [c], T0, sinks={"hook": sink(rx.url)})
        assert res.sinks["hook"].delivered == 2 and res.sinks["hook"].failed == 1


def test_ocsf_format_over_the_webhook(tmp_path: Path) -> None:
    with Receiver(verifying) as rx, Store(tmp_path / "s.db") as store:
        c = cfg(rx.url)
        enqueue([make_finding()], [c], store, T0)
        flush(store, [c], T0, sinks={"hook": sink(rx.url, fmt="ocsf")})
        event = rx.accepted[0].json()
        assert event["class_uid"] == 2004 and validate(event) == []


def test_from_settings_reads_the_secret_from_the_environment(monkeypatch: object, tmp_path: Path) -> None:
    import pytest

    from spendwatch.config import ConfigError

    mp = monkeypatch  # type: ignore[assignment]
    mp.setenv("HOOK_SECRET", "abc")  # type: ignore[attr-defined]
    s = WebhookSink.from_settings("hook", {"url": "http://127.0.0.1:1/x", "secret_env": "HOOK_SECRET"})
    assert s.secret == b"abc"
    with pytest.raises(ConfigError, match="MISSING_SECRET"):
        WebhookSink.from_settings("hook", {"url": "http://127.0.0.1:1/x", "secret_env": "MISSING_SECRET"})
    assert json.dumps({"ok": 1})
