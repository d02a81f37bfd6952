"""Snooze expiry: a snoozed incident that is still going on is re-alerted once its snooze time is over.

The clock is injected (the endpoint's `now`, `to_alert(now=...)`, the alerter's `now`); nothing waits.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from spendwatch.findings import Severity
from spendwatch.serve import to_alert
from spendwatch.sinks.slack import SNOOZE_ENDED, SNOOZE_HOURS, SlackAlerter, make_client, snoozed_until

from .conftest import ALICE, CAROL, CHANNEL, T0, Endpoint
from .fake_slack import TOKEN

CLICKED = T0 + timedelta(hours=1)
UNTIL = CLICKED + timedelta(hours=SNOOZE_HOURS)


def wait(ep: Endpoint) -> None:
    assert ep.app.wait_idle(20), "the endpoint's work did not finish"


def _snooze(endpoint_factory: Any, at: Any = CLICKED, user: str = ALICE) -> Endpoint:
    ep = endpoint_factory(now=lambda: at)
    assert ep.click("sw_snooze", user=user)[0] == 200
    wait(ep)
    return ep


def test_snoozed_finding_stays_quiet_until_its_snooze_ends_then_is_re_alerted(endpoint_factory: Any) -> None:
    ep = _snooze(endpoint_factory)
    with ep.store() as store:
        f = store.get(ep.finding.id)
        assert f is not None and f.status == "snoozed"
        assert snoozed_until(store, f) == UNTIL
        assert to_alert([f], store, Severity.INFO, now=UNTIL - timedelta(minutes=1)) == []
        [(due, _)] = to_alert([f], store, Severity.INFO, now=UNTIL)
        assert due.id == f.id
        later = UNTIL + timedelta(minutes=5)
        alerter = SlackAlerter(make_client(TOKEN, base_url=ep.fake.base_url), channel=CHANNEL, store=store,
                               now=lambda: later)
        posted = alerter.notify(due)
        assert posted.kind == "thread" and posted.ts == ep.ts
        reopened = store.get(f.id)
        assert reopened is not None and reopened.status == "open"
        [expired] = [e for e in store.audit_log(limit=None) if e.action == "slack.snooze-expired"]
        assert expired.actor == "spendwatch" and expired.finding_id == f.id
    reply = ep.fake.ok_calls("chat.postMessage")[-1]
    assert reply.args["thread_ts"] == ep.ts and reply.args["reply_broadcast"] in (True, "true", "1")
    assert reply.args["text"].startswith(SNOOZE_ENDED) and f"{UNTIL:%Y-%m-%d %H:%M}Z" in reply.args["text"]
    parent = json.dumps(ep.message()["blocks"])
    assert "Snooze ended" in parent and "sw_snooze" in ep.button_ids()  # the buttons are back


def test_an_ordinary_update_is_not_broadcast(endpoint_factory: Any) -> None:
    ep = endpoint_factory()
    with ep.store() as store:
        f = store.get(ep.finding.id)
        assert f is not None
        SlackAlerter(make_client(TOKEN, base_url=ep.fake.base_url), channel=CHANNEL, store=store).notify(f)
    reply = ep.fake.ok_calls("chat.postMessage")[-1]
    assert reply.args["thread_ts"] == ep.ts and reply.args.get("reply_broadcast") in (None, False, "false", "0")
    assert SNOOZE_ENDED not in reply.args["text"]


def test_a_snooze_that_has_ended_can_be_snoozed_again(endpoint_factory: Any) -> None:
    _snooze(endpoint_factory)
    again = _snooze(endpoint_factory, at=UNTIL + timedelta(hours=1), user=CAROL)  # before any re-alert ran
    with again.store() as store:
        snoozes = [e for e in store.audit_log(limit=None) if e.action == "slack.snooze"]
        assert [e.outcome for e in snoozes] == ["ok", "ok"]
        f = store.get(again.finding.id)
        assert f is not None and snoozed_until(store, f) == UNTIL + timedelta(hours=1 + SNOOZE_HOURS)
        assert to_alert([f], store, Severity.INFO, now=UNTIL + timedelta(hours=2)) == []


def test_a_second_click_while_snoozed_is_ignored(endpoint_factory: Any) -> None:
    _snooze(endpoint_factory)
    ep = _snooze(endpoint_factory, at=CLICKED + timedelta(hours=2), user=CAROL)
    with ep.store() as store:
        assert [e.outcome for e in store.audit_log(limit=None) if e.action == "slack.snooze"] == ["ok", "ignored"]
        f = store.get(ep.finding.id)
        assert f is not None and snoozed_until(store, f) == UNTIL


def test_a_snooze_without_a_recorded_end_counts_as_ended(endpoint_factory: Any) -> None:
    ep = endpoint_factory()
    with ep.store() as store:
        store.set_finding_status(ep.finding.id, "snoozed", now=T0)  # no Snooze click in the audit log
        f = store.get(ep.finding.id)
        assert f is not None and snoozed_until(store, f) is None
        assert [d.id for d, _ in to_alert([f], store, Severity.INFO, now=T0)] == [f.id]
