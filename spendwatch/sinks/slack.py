"""The Slack alert: what is happening, who started it, what it costs, what we could not see, what to do.

Two parts:

- `alert_payload(finding, report)` renders one finding as a Block Kit message (`{"text": ..., "blocks": [...]}`)
  with the buttons the interaction endpoint (`spendwatch.slack_app`) answers: Quarantine (danger style, behind
  a confirmation dialog; AWS, GCP and Azure instances), Contain principal (the AWS role or user that launched
  it, same dialog), Snooze, Mark expected (asks for a reason) and a link to the console. It is pure and
  keeps within Slack's documented limits (header 150 characters, section text 3,000, at most 10 fields of
  2,000, button text 75, confirm text 300), so a long evidence list is cut, never rejected by Slack. Text that
  comes from the cloud (summary, evidence, principal names) is escaped: an agent that names its session
  `<!channel>` must not be able to ping the channel or plant a link.
- `SlackAlerter` posts a new incident with chat.postMessage, uploads its chart to the thread
  (files_upload_v2), and sends later updates of the same incident to that thread, remembering channel and
  ts per finding in the store. Rate limits (HTTP 429) are retried after Retry-After by slack_sdk's
  `RateLimitErrorRetryHandler` (see `make_client`). A snoozed incident that is still going on when its snooze
  ends is re-alerted: a reply in its thread, also sent to the channel, and the finding is open again.

A sink renders findings; it never decides severity.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..findings import Finding
from ..report import RunReport

if TYPE_CHECKING:
    from slack_sdk import WebClient

    from ..store import SlackMessage, Store, StoredQuarantine

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
ACTION_CONTAIN = "sw_contain_principal"
ACTION_RELEASE_PRINCIPAL = "sw_release_principal"
ACTION_CONSOLE = "open_console"
ACTIONS_BLOCK = "sw_actions"
SNOOZE_HOURS = 24
SNOOZE_ENDED = ":alarm_clock: *Snooze ended*"
# Clouds whose quarantine the button can run (spendwatch.actions); others show the buttons that change no cloud.
QUARANTINE_CLOUDS = frozenset({"aws", "gcp", "azure"})
# What Quarantine and Release do, per cloud, in the confirmation dialogs (the actions' docstrings say it all).
_DOES = {
    "aws": ("cut its network, snapshot its volumes, detach its instance profile and tag it",
            "restore its security groups and instance profile, leave Auto Scaling standby, remove the tags"),
    "gcp": ("deny all its traffic (IPv4 and IPv6) with priority-0 firewall rules on a quarantine network tag, "
            "label it and snapshot its disks",
            "remove the quarantine network tag and label (the shared firewall rules stay)"),
    "azure": ("attach a deny-all network security group to its network interfaces, flush their connections, "
              "tag it and snapshot its disks",
              "put back each network interface's own security group and remove the tag"),
}
# An IAM user or role as CloudTrail names it; the account root and federated users cannot be contained by policy.
_IAM_PRINCIPAL = re.compile(r"arn:aws[a-z-]*:(iam|sts)::[0-9]{12}:(user|role|assumed-role)/.+")
_GCP_INSTANCE = re.compile(r"projects/([^/]+)/zones/([^/]+)/instances/([^/]+)")


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
    if f.cloud == "gcp" and f.resource and (m := _GCP_INSTANCE.fullmatch(f.resource)):
        project, zone, name = (quote(g, safe="") for g in m.groups())
        return f"https://console.cloud.google.com/compute/instancesDetail/zones/{zone}/instances/{name}?project={project}"
    if f.cloud == "azure" and f.resource and f.resource.startswith("/subscriptions/"):
        return "https://portal.azure.com/#resource" + quote(f.resource, safe="/")
    return None


def can_contain(f: Finding) -> bool:
    """Whether the finding names a principal the Contain principal button can act on (an AWS IAM user or role)."""
    return f.cloud == "aws" and bool(f.principal) and bool(_IAM_PRINCIPAL.fullmatch(f.principal or ""))


def contained_principal(store: Store, f: Finding) -> StoredQuarantine | None:
    """spendwatch's active containment of `f`'s principal, if there is one (whichever finding it was for: one
    agent role often launches several instances). Matched on account, kind and name, since the finding may
    name an assumed-role session where the record keeps the role's ARN."""
    if not can_contain(f):
        return None
    from ..actions.aws import parse_principal
    from ..actions.base import Refused

    try:
        kind, name, account = parse_principal(f.principal or "")
    except Refused:
        return None
    for q in store.quarantines(active_only=True, limit=1000):
        if (q.action == "aws.contain-principal" and q.account == account and q.record.get("kind") == kind
                and q.record.get("name") == name):
            return q
    return None


def snoozed_until(store: Store, f: Finding) -> datetime | None:
    """When `f`'s snooze ends: the `until` of the last Snooze click the audit log holds for it, or None."""
    subject = f.resource or f.principal or f.id  # how the interaction endpoint names it in the audit log
    for entry in reversed(store.audit_log(resource=subject, limit=None)):
        if entry.finding_id == f.id and entry.action == "slack.snooze" and entry.outcome == "ok":
            try:
                until = datetime.fromisoformat(str(entry.detail["until"]))
            except (KeyError, ValueError):
                return None
            return until if until.tzinfo else until.replace(tzinfo=UTC)
    return None


def snooze_over(store: Store, f: Finding, now: datetime) -> bool:
    """True when `f` is snoozed and the snooze has ended. A snooze whose end cannot be found counts as ended:
    re-alerting once is better than silencing a live incident for good."""
    if f.status != "snoozed":
        return False
    until = snoozed_until(store, f)
    return until is None or until <= now


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


def action_buttons(f: Finding, *, principal_contained: bool = False) -> list[dict[str, Any]]:
    """The buttons for the finding's current status: Quarantine while it is not, Release once it is; Contain
    principal while its AWS principal is free, Release principal once spendwatch contains it."""
    elements: list[dict[str, Any]] = []
    url = console_url(f)
    if url:
        # First, so a reader's eye meets "look" before "act".
        elements.append({"type": "button", "text": _plain("Open in console", BUTTON_TEXT_MAX), "url": url,
                         "action_id": ACTION_CONSOLE})
    subject = f.resource or f.principal or "?"
    can_act = f.cloud in QUARANTINE_CLOUDS and bool(f.resource)
    does, undoes = _DOES.get(f.cloud, ("isolate it", "undo the quarantine"))
    if can_act and f.status == "quarantined":
        elements.append(_button("Release", ACTION_RELEASE, f.id, style="primary", confirm=_confirm(
            "Release the quarantine?",
            f"Undo exactly what spendwatch did to {_code(subject)}: {undoes}. Snapshots are kept.",
            "Release", danger=False)))
    elif can_act:
        elements.append(_button("Quarantine", ACTION_QUARANTINE, f.id, style="danger", confirm=_confirm(
            "Quarantine this resource?",
            f"Isolate {_code(subject)} in {esc(f.cloud)} {esc(f.account)}: {does}. It keeps running (nothing is "
            "stopped or deleted) and Release undoes it. Your name goes into the audit log.",
            "Quarantine", danger=True)))
    if can_contain(f) and principal_contained:
        elements.append(_button("Release principal", ACTION_RELEASE_PRINCIPAL, f.id, confirm=_confirm(
            "Release the principal?",
            f"Remove spendwatch's deny policy from {_code(f.principal or '?')} and reactivate the access keys "
            "spendwatch deactivated. Its sessions work again.", "Release principal", danger=False)))
    elif can_contain(f) and f.status != "resolved":
        elements.append(_button("Contain principal", ACTION_CONTAIN, f.id, style="danger", confirm=_confirm(
            "Contain the principal that launched it?",
            f"Deny everything to sessions of {_code(f.principal or '?')} issued before now (an inline policy on "
            "the role or user) and deactivate a user's access keys. New sessions still work. Release principal "
            "undoes it. Your name goes into the audit log.",
            "Contain", danger=True)))
    if f.status not in ("quarantined", "resolved"):
        elements.append(_button(f"Snooze {SNOOZE_HOURS} h", ACTION_SNOOZE, f.id))
        elements.append(_button("Mark expected", ACTION_EXPECTED, f.id))
    return elements


def alert_payload(f: Finding, report: RunReport | None = None, *, outcome: str | None = None,
                  principal_contained: bool = False) -> dict[str, Any]:
    """Block Kit payload for one finding.

    `report` adds the coverage footer (gaps and skipped records); `outcome` is the line the interaction
    endpoint shows after someone acted ("Quarantined by @alice at 12:03Z ...", already mrkdwn);
    `principal_contained` (see `contained_principal`) swaps Contain principal for Release principal.
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
    buttons = action_buttons(f, principal_contained=principal_contained)
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

    A snoozed finding passed in after its snooze has ended (`snooze_over`) is re-alerted: the thread reply
    says the snooze ended and is also sent to the channel, the parent shows the buttons again, and the finding
    is set back to open (audited as `slack.snooze-expired`) once Slack has the message.
    """

    def __init__(self, client: WebClient, *, channel: str, store: Store,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        from ..store import SlackRecords

        self.client = client
        self.channel = channel
        self.store = store
        self.records = SlackRecords(store)
        self.now = now

    def notify(self, f: Finding, *, report: RunReport | None = None, chart_png: bytes | None = None) -> Posted:
        """Post `f` (new alert, or an update to its thread while the incident lasts) and its chart."""
        previous = self.records.message(f.id)
        woken = self._snooze_ended(f)
        if woken is not None:
            f = replace(f, status="open")  # rendered open; stored open only after Slack took the message
        contained = contained_principal(self.store, f) is not None
        if previous is None:
            payload = alert_payload(f, report, outcome=woken, principal_contained=contained)
            resp = self.client.chat_postMessage(channel=self.channel, text=payload["text"], blocks=payload["blocks"],
                                                unfurl_links=False, unfurl_media=False)
            channel, ts = str(resp["channel"]), str(resp["ts"])
            self.records.remember_message(f.id, channel=channel, ts=ts, severity=int(f.severity),
                                          hourly_cost_usd=f.hourly_cost_usd, now=self.now())
            self._reopen(f, woken)
            file_id = self._upload_chart(f, channel, ts, chart_png)
            return Posted(f.id, "new", channel, ts, None, file_id)
        text = update_text(previous, f)
        if woken is not None:
            text = _cut(f"{woken}\n{text}", TEXT_MAX)
        # A re-alert after a snooze goes to the channel too: a thread reply alone notifies nobody new.
        reply = self.client.chat_postMessage(channel=previous.channel, thread_ts=previous.ts, text=text,
                                             reply_broadcast=woken is not None, unfurl_links=False,
                                             unfurl_media=False)
        # Keep the parent current too (severity, cost, buttons for the present status, the last outcome line).
        outcome = woken or previous.outcome
        payload = alert_payload(f, report, outcome=outcome, principal_contained=contained)
        self.client.chat_update(channel=previous.channel, ts=previous.ts, text=payload["text"],
                                blocks=payload["blocks"])
        self.records.note_reply(f.id, severity=int(f.severity), hourly_cost_usd=f.hourly_cost_usd, now=self.now())
        self._reopen(f, woken)
        file_id = self._upload_chart(f, previous.channel, previous.ts, chart_png)
        return Posted(f.id, "thread", previous.channel, previous.ts, str(reply["ts"]), file_id)

    def _snooze_ended(self, f: Finding) -> str | None:
        """The outcome line for a snoozed finding whose snooze is over (None while it lasts, or not snoozed)."""
        now = self.now()
        if not snooze_over(self.store, f, now):
            return None
        until = snoozed_until(self.store, f)
        when = f"at {until:%Y-%m-%d %H:%M}Z" if until else "(its end was not recorded)"
        return f"{SNOOZE_ENDED} {when}: the incident is still going on; the buttons are back."

    def _reopen(self, f: Finding, line: str | None) -> None:
        """After a re-alert: the finding is open again, the outcome line kept for later updates, and audited."""
        if line is None:
            return
        now = self.now()
        self.store.set_finding_status(f.id, "open", now=now)
        self.records.set_outcome(f.id, line, now=now)
        self.store.write_audit(
            at=now, actor="spendwatch", action="slack.snooze-expired", cloud=f.cloud, account=f.account,
            region=f.region, resource=f.resource or f.principal or f.id, finding_id=f.id, step="",
            description=line, outcome="ok", dry_run=False, detail=json.dumps({"channel": self.channel}),
        )

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
