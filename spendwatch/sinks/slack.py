"""The Slack alert: what is happening, who started it, what it costs, what we could not see, what to do.

Two parts:

- `alert_payload(finding, report)` renders one finding as a Block Kit message (`{"text": ..., "blocks": [...]}`)
  with the buttons the interaction endpoint (`spendwatch.slack_app`) answers: Quarantine (danger style, behind
  a confirmation dialog), Snooze, Mark expected (asks for a reason) and a link to the console. It is pure and
  keeps within Slack's documented limits (header 150 characters, section text 3,000, at most 10 fields of
  2,000, button text 75, confirm text 300), so a long evidence list is cut, never rejected by Slack. Text that
  comes from the cloud (summary, evidence, principal names) is escaped: an agent that names its session
  `<!channel>` must not be able to ping the channel or plant a link.
- `SlackAlerter` posts a new incident with chat.postMessage, uploads its chart to the thread
  (files_upload_v2), and sends later updates of the same incident to that thread, remembering channel and
  ts per finding in the store. Rate limits (HTTP 429) are retried after Retry-After by slack_sdk's
  `RateLimitErrorRetryHandler` (see `make_client`).

A sink renders findings; it never decides severity.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..findings import Finding
from ..report import RunReport

if TYPE_CHECKING:
    from slack_sdk import WebClient

    from ..store import SlackMessage, Store

log = logging.getLogger(__name__)

_EMOJI = {"critical": ":rotating_light:", "high": ":red_circle:", "medium": ":large_orange_circle:",
          "low": ":large_yellow_circle:", "info": ":white_circle:"}
_STATUS = {"quarantined": ":lock: quarantined", "snoozed": ":zzz: snoozed", "expected": ":white_check_mark: expected",
           "resolved": ":heavy_check_mark: resolved", "open": "open"}
HEADER_MAX = 150
TEXT_MAX = 3000
FIELD_MAX = 2000
FIELDS_MAX = 10
BUTTON_TEXT_MAX = 75
BUTTON_VALUE_MAX = 2000
CONFIRM_TITLE_MAX = 100
CONFIRM_TEXT_MAX = 300
CONFIRM_BUTTON_MAX = 30
BLOCKS_MAX = 50

# The interaction endpoint dispatches on these action ids; the value of every button is the finding id.
ACTION_QUARANTINE = "sw_quarantine"
ACTION_RELEASE = "sw_release"
ACTION_SNOOZE = "sw_snooze"
ACTION_EXPECTED = "sw_expected"
ACTION_CONSOLE = "open_console"
ACTIONS_BLOCK = "sw_actions"
SNOOZE_HOURS = 24
# Clouds whose quarantine the button can run (spendwatch.actions); others show the buttons that change no cloud.
QUARANTINE_CLOUDS = frozenset({"aws"})


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def esc(text: str) -> str:
    """Escape text for Slack mrkdwn (the three characters Slack asks apps to escape)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: str) -> str:
    # Inside `code` a backtick would end the span early; there is no escape for it in mrkdwn.
    return "`" + esc(text).replace("`", "'") + "`"


def _plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": _cut(text, limit), "emoji": True}


def console_url(f: Finding) -> str | None:
    """A deep link to the resource in its cloud's console, where we know how to build one."""
    if f.cloud == "aws" and f.resource and f.resource.startswith("i-") and f.region:
        r = quote(f.region)
        return f"https://{r}.console.aws.amazon.com/ec2/home?region={r}#InstanceDetails:instanceId={quote(f.resource)}"
    return None


def cost_lines(f: Finding) -> tuple[str, str]:
    """(cost per hour, projected cost of the next 24 h if left running), "unknown" when billing said nothing."""
    if f.hourly_cost_usd is None:
        return "unknown", "unknown"
    return f"${f.hourly_cost_usd:,.2f}/h", f"${24 * f.hourly_cost_usd:,.0f}"


def _confirm(title: str, text: str, yes: str, *, danger: bool) -> dict[str, Any]:
    dialog: dict[str, Any] = {
        "title": _plain(title, CONFIRM_TITLE_MAX),
        "text": {"type": "mrkdwn", "text": _cut(text, CONFIRM_TEXT_MAX)},
        "confirm": _plain(yes, CONFIRM_BUTTON_MAX),
        "deny": _plain("Cancel", CONFIRM_BUTTON_MAX),
    }
    if danger:
        dialog["style"] = "danger"
    return dialog


def _button(text: str, action_id: str, value: str, *, style: str | None = None,
            confirm: dict[str, Any] | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {"type": "button", "text": _plain(text, BUTTON_TEXT_MAX), "action_id": action_id,
                              "value": _cut(value, BUTTON_VALUE_MAX)}
    if style:
        button["style"] = style
    if confirm:
        button["confirm"] = confirm
    return button


def action_buttons(f: Finding) -> list[dict[str, Any]]:
    """The buttons for the finding's current status: Quarantine while it is not, Release once it is."""
    elements: list[dict[str, Any]] = []
    url = console_url(f)
    if url:
        # First, so a reader's eye meets "look" before "act".
        elements.append({"type": "button", "text": _plain("Open in console", BUTTON_TEXT_MAX), "url": url,
                         "action_id": ACTION_CONSOLE})
    subject = f.resource or f.principal or "?"
    can_act = f.cloud in QUARANTINE_CLOUDS and bool(f.resource)
    if can_act and f.status == "quarantined":
        elements.append(_button("Release", ACTION_RELEASE, f.id, style="primary", confirm=_confirm(
            "Release the quarantine?",
            f"Undo exactly what spendwatch did to {_code(subject)}: restore its security groups and instance "
            "profile, leave Auto Scaling standby, remove the tags. Snapshots are kept.",
            "Release", danger=False)))
    elif can_act:
        elements.append(_button("Quarantine", ACTION_QUARANTINE, f.id, style="danger", confirm=_confirm(
            "Quarantine this resource?",
            f"Isolate {_code(subject)} in {esc(f.cloud)} {esc(f.account)}: cut its network, snapshot its volumes, "
            "detach its instance profile and tag it. It keeps running (nothing is terminated) and Release undoes "
            "it. Your name goes into the audit log.",
            "Quarantine", danger=True)))
    if f.status not in ("quarantined", "resolved"):
        elements.append(_button(f"Snooze {SNOOZE_HOURS} h", ACTION_SNOOZE, f.id))
        elements.append(_button("Mark expected", ACTION_EXPECTED, f.id))
    return elements


def alert_payload(f: Finding, report: RunReport | None = None, *, outcome: str | None = None) -> dict[str, Any]:
    """Block Kit payload for one finding.

    `report` adds the coverage footer (gaps and skipped records); `outcome` is the line the interaction
    endpoint shows after someone acted ("Quarantined by @alice at 12:03Z ...", already mrkdwn).
    """
    sev = f.severity.label
    subject = f.resource or f.principal or "unknown resource"
    header = _cut(f"{sev.upper()}: {f.summary.split(';')[0]}", HEADER_MAX)
    cost, projected = cost_lines(f)
    who = esc(f.principal or "unknown")
    if f.principal_type:
        who = f"{who} ({esc(f.principal_type)})"
    fields = [
        f"*Severity*\n{_EMOJI.get(sev, '')} {sev} (score {f.score:.2f})",
        f"*Resource*\n{_code(subject)}" + (f" ({esc(f.instance_type)})" if f.instance_type else ""),
        f"*Account / region*\n{esc(f.cloud)} {esc(f.account)} / {esc(f.region or '-')}",
        f"*Started by*\n{who}",
        f"*Cost*\n{cost}",
        f"*Next 24 h if left running*\n{projected}",
    ]
    evidence = "\n".join(f"• {esc(e)}" for e in f.evidence) or "• (no evidence recorded)"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(header, HEADER_MAX)},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": _cut(t, FIELD_MAX)} for t in fields[:FIELDS_MAX]]},
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut("*Evidence*\n" + evidence, TEXT_MAX)}},
    ]
    if f.related:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(
            "*Same principal also launched*\n" + ", ".join(_code(r) for r in f.related), TEXT_MAX)}})
    if outcome or f.status != "open":
        line = outcome or f"*Status*: {_STATUS.get(f.status, esc(f.status))}"
        blocks.append({"type": "section", "block_id": "sw_outcome",
                       "text": {"type": "mrkdwn", "text": _cut(line, TEXT_MAX)}})
    buttons = action_buttons(f)
    if buttons:
        blocks.append({"type": "actions", "block_id": ACTIONS_BLOCK, "elements": buttons})
    context = [f"finding `{f.id}` · first seen {f.first_seen:%Y-%m-%d %H:%M}Z · rules: {esc(', '.join(f.rules))}"]
    if f.cloud not in QUARANTINE_CLOUDS:
        context.append(f"quarantine from Slack is not available for {esc(f.cloud)} yet")
    if report is not None:
        if report.gaps:
            context.append(":warning: coverage gaps: " + "; ".join(
                f"{esc(g.source)} ({esc(g.reason)})" for g in report.gaps[:3]))
        if report.problems:
            context.append(f":warning: {report.skipped_records} records could not be read in this scan")
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(t, TEXT_MAX)} for t in context]})
    text = _cut(f"[{sev}] {esc(f.summary)}", TEXT_MAX)
    return {"text": text, "blocks": blocks[:BLOCKS_MAX]}


def update_text(previous: SlackMessage | None, f: Finding) -> str:
    """The thread reply for a new scan's view of an ongoing incident: what changed, and the latest evidence."""
    from ..findings import Severity

    changes: list[str] = []
    sev = f.severity.label
    if previous is not None and previous.severity is not None and previous.severity != int(f.severity):
        changes.append(f"severity {Severity(previous.severity).label} → *{sev}*")
    else:
        changes.append(f"severity {sev}")
    cost, projected = cost_lines(f)
    if (previous is not None and previous.hourly_cost_usd is not None and f.hourly_cost_usd is not None
            and abs(previous.hourly_cost_usd - f.hourly_cost_usd) >= 0.005):
        changes.append(f"cost ${previous.hourly_cost_usd:,.2f}/h → *{cost}* (next 24 h {projected})")
    else:
        changes.append(f"cost {cost}")
    changes.append(f"last seen {f.last_seen:%Y-%m-%d %H:%M}Z")
    evidence = "\n".join(f"• {esc(e)}" for e in f.evidence[:5])
    return _cut(":arrows_counterclockwise: *Update*: " + "; ".join(changes) + ("\n" + evidence if evidence else ""),
                TEXT_MAX)


def make_client(token: str, *, base_url: str | None = None, rate_limit_retries: int = 3,
                timeout: int = 10) -> WebClient:
    """A WebClient that retries HTTP 429 after Slack's Retry-After (and dropped connections) on its own.

    `base_url` is for tests ("http://127.0.0.1:PORT/api/"); production leaves it at slack.com.
    """
    from slack_sdk import WebClient
    from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler

    kwargs: dict[str, Any] = {"token": token, "timeout": timeout, "retry_handlers": [
        ConnectionErrorRetryHandler(max_retry_count=1),
        RateLimitErrorRetryHandler(max_retry_count=rate_limit_retries),
    ]}
    if base_url:
        kwargs["base_url"] = base_url
    return WebClient(**kwargs)


@dataclass(frozen=True)
class Posted:
    """What `SlackAlerter.notify` did: a new alert or a thread reply, where, and the chart's file id."""

    finding_id: str
    kind: str  # "new" or "thread"
    channel: str
    ts: str  # the alert's ts (the thread's parent)
    reply_ts: str | None = None
    file_id: str | None = None


class SlackAlerter:
    """Posts findings to one channel: a new incident as a new alert, an ongoing one as a reply in its thread.

    Example::

        client = make_client(os.environ["SLACK_BOT_TOKEN"])
        alerter = SlackAlerter(client, channel="C0123ALERTS", store=store)
        for finding, change in store.upsert(findings, now=now):
            if change != "unchanged":
                alerter.notify(finding, report=report, chart_png=chart_for_finding(finding, utilization=util))

    Not thread-safe across processes for the very first post of one finding: two scans posting the same
    new finding at once would both post (the scheduler runs one scan at a time).
    """

    def __init__(self, client: WebClient, *, channel: str, store: Store,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        from ..store import SlackRecords

        self.client = client
        self.channel = channel
        self.records = SlackRecords(store)
        self.now = now

    def notify(self, f: Finding, *, report: RunReport | None = None, chart_png: bytes | None = None) -> Posted:
        """Post `f` (new alert, or an update to its thread while the incident lasts) and its chart."""
        previous = self.records.message(f.id)
        if previous is None:
            payload = alert_payload(f, report)
            resp = self.client.chat_postMessage(channel=self.channel, text=payload["text"], blocks=payload["blocks"],
                                                unfurl_links=False, unfurl_media=False)
            channel, ts = str(resp["channel"]), str(resp["ts"])
            self.records.remember_message(f.id, channel=channel, ts=ts, severity=int(f.severity),
                                          hourly_cost_usd=f.hourly_cost_usd, now=self.now())
            file_id = self._upload_chart(f, channel, ts, chart_png)
            return Posted(f.id, "new", channel, ts, None, file_id)
        reply = self.client.chat_postMessage(channel=previous.channel, thread_ts=previous.ts,
                                             text=update_text(previous, f), unfurl_links=False, unfurl_media=False)
        # Keep the parent current too (severity, cost, buttons for the present status, the last outcome line).
        payload = alert_payload(f, report, outcome=previous.outcome)
        self.client.chat_update(channel=previous.channel, ts=previous.ts, text=payload["text"],
                                blocks=payload["blocks"])
        self.records.note_reply(f.id, severity=int(f.severity), hourly_cost_usd=f.hourly_cost_usd, now=self.now())
        file_id = self._upload_chart(f, previous.channel, previous.ts, chart_png)
        return Posted(f.id, "thread", previous.channel, previous.ts, str(reply["ts"]), file_id)

    def _upload_chart(self, f: Finding, channel: str, ts: str, png: bytes | None) -> str | None:
        """Upload the chart into the alert's thread; a failed upload is logged, never loses the alert."""
        if not png:
            return None
        from slack_sdk.errors import SlackClientError

        subject = f.resource or f.principal or f.id
        try:
            resp = self.client.files_upload_v2(
                channel=channel, thread_ts=ts, file=png, filename=f"spendwatch-{f.id}.png",
                title=f"{subject}: activity with the anomaly shaded", alt_txt=f"chart of {subject}",
            )
        except (SlackClientError, OSError) as exc:  # API error, upload URL refused or unreachable
            log.warning("chart for %s not uploaded: %s", f.id, exc)
            return None
        files = resp.get("files") or [resp.get("file") or {}]
        return str(files[0].get("id")) if files and files[0].get("id") else None
