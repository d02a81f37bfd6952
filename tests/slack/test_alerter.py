"""Posting alerts to the fake Slack Web API: new incident, chart upload, updates in the thread, rate limits."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from spendwatch.chart import ChartSeries, render_chart
from spendwatch.findings import Severity
from spendwatch.sinks.slack import SlackAlerter, make_client
from spendwatch.store import SlackRecords, Store

from .conftest import CHANNEL, T0, make_finding
from .fake_slack import TOKEN, FakeSlack


def alerter(fake: FakeSlack, store: Store) -> SlackAlerter:
    return SlackAlerter(make_client(TOKEN, base_url=fake.base_url), channel=CHANNEL, store=store, now=lambda: T0)


def chart() -> bytes:
    return render_chart(ChartSeries([T0, T0.replace(hour=11)], [10.0, 99.0], "gpu_util", "%"), (T0, T0))


def test_new_incident_posts_once_and_uploads_its_chart_to_the_thread(fake_slack: FakeSlack, tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        f = make_finding("i-0abc", severity=Severity.HIGH)
        png = chart()
        posted = alerter(fake_slack, store).notify(f, chart_png=png)
        assert posted.kind == "new" and posted.channel == CHANNEL and posted.file_id
        [post] = fake_slack.ok_calls("chat.postMessage")
        assert post.args["channel"] == CHANNEL and "thread_ts" not in post.args
        assert any(b["type"] == "actions" for b in fake_slack.messages[(CHANNEL, posted.ts)]["blocks"])
        assert fake_slack.uploads[posted.file_id] == png  # files_upload_v2: URL, upload, complete
        meta = fake_slack.files[posted.file_id]
        assert meta["thread_ts"] == posted.ts and meta["channel"] == CHANNEL
        stored = SlackRecords(store).message(f.id)
        assert stored is not None and (stored.channel, stored.ts) == (CHANNEL, posted.ts)


def test_updates_to_an_ongoing_incident_go_to_its_thread(fake_slack: FakeSlack, tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        a = alerter(fake_slack, store)
        f = make_finding("i-0abc", severity=Severity.HIGH, hourly_cost_usd=2.0)
        first = a.notify(f)
        later = replace(f, severity=Severity.CRITICAL, hourly_cost_usd=5.672, evidence=["now 3 GPUs pegged"])
        second = a.notify(later)
        third = a.notify(later)
    assert second.kind == third.kind == "thread" and second.ts == third.ts == first.ts
    posts = fake_slack.ok_calls("chat.postMessage")
    assert [p.args.get("thread_ts") for p in posts] == [None, first.ts, first.ts]  # one top-level message
    assert "high → *critical*" in posts[1].args["text"] and "now 3 GPUs pegged" in posts[1].args["text"]
    parent = fake_slack.messages[(CHANNEL, first.ts)]
    assert parent["blocks"][0]["text"]["text"].startswith("CRITICAL")  # the parent follows the incident
    with Store(tmp_path / "s.db") as store:
        assert SlackRecords(store).message(f.id).replies == 2  # type: ignore[union-attr]


def test_rate_limit_is_retried_after_retry_after(fake_slack: FakeSlack, tmp_path: Path) -> None:
    fake_slack.fail_next("chat.postMessage", status=429, retry_after=1)
    with Store(tmp_path / "s.db") as store:
        started = time.perf_counter()
        posted = alerter(fake_slack, store).notify(make_finding("i-0abc"))
        waited = time.perf_counter() - started
    statuses = [c.status for c in fake_slack.calls_to("chat.postMessage")]
    assert statuses == [429, 200] and posted.ts
    assert waited >= 1.0  # Retry-After honoured, not hammered


def test_a_failed_chart_upload_does_not_lose_the_alert(fake_slack: FakeSlack, tmp_path: Path) -> None:
    fake_slack.fail_next("files.getUploadURLExternal", status=500)
    with Store(tmp_path / "s.db") as store:
        posted = alerter(fake_slack, store).notify(make_finding("i-0abc"), chart_png=chart())
    assert posted.file_id is None and (CHANNEL, posted.ts) in fake_slack.messages
