"""The Slack alert as Block Kit: what is happening, who started it, what it costs, what we could not see.

This module only renders a message payload (`{"text": ..., "blocks": [...]}`); posting it and the
interactive buttons (quarantine, snooze, mark expected) need the interaction endpoint and come with it. The
renderer keeps within Slack's documented limits (header 150 characters, section text 3,000, at most 10
fields of 2,000) so a long evidence list is cut, never rejected by Slack.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ..findings import Finding
from ..report import RunReport

_EMOJI = {"critical": ":rotating_light:", "high": ":red_circle:", "medium": ":large_orange_circle:",
          "low": ":large_yellow_circle:", "info": ":white_circle:"}
HEADER_MAX = 150
TEXT_MAX = 3000
FIELD_MAX = 2000


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def console_url(f: Finding) -> str | None:
    """A deep link to the resource in its cloud's console, where we know how to build one."""
    if f.cloud == "aws" and f.resource and f.resource.startswith("i-") and f.region:
        r = quote(f.region)
        return f"https://{r}.console.aws.amazon.com/ec2/home?region={r}#InstanceDetails:instanceId={quote(f.resource)}"
    return None


def alert_payload(f: Finding, report: RunReport | None = None) -> dict[str, Any]:
    """Block Kit payload for one finding; `report` adds the coverage footer (gaps and skipped records)."""
    sev = f.severity.label
    subject = f.resource or f.principal or "unknown resource"
    header = _cut(f"{sev.upper()}: {f.summary.split(';')[0]}", HEADER_MAX)
    cost = "unknown" if f.hourly_cost_usd is None else f"${f.hourly_cost_usd:,.2f}/h"
    projected = "unknown" if f.hourly_cost_usd is None else f"${24 * f.hourly_cost_usd:,.0f}"
    who = f.principal or "unknown"
    if f.principal_type:
        who = f"{who} ({f.principal_type})"
    fields = [
        f"*Severity*\n{_EMOJI.get(sev, '')} {sev} (score {f.score:.2f})",
        f"*Resource*\n`{subject}`" + (f" ({f.instance_type})" if f.instance_type else ""),
        f"*Account / region*\n{f.cloud} {f.account} / {f.region or '-'}",
        f"*Started by*\n{who}",
        f"*Cost*\n{cost}",
        f"*Next 24 h if left running*\n{projected}",
    ]
    evidence = "\n".join(f"• {e}" for e in f.evidence) or "• (no evidence recorded)"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": _cut(t, FIELD_MAX)} for t in fields]},
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut("*Evidence*\n" + evidence, TEXT_MAX)}},
    ]
    if f.related:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(
            "*Same principal also launched*\n" + ", ".join(f"`{r}`" for r in f.related), TEXT_MAX)}})
    url = console_url(f)
    if url:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Open in console"}, "url": url,
             "action_id": "open_console"}]})
    context = [f"finding `{f.id}` · first seen {f.first_seen:%Y-%m-%d %H:%M}Z · rules: {', '.join(f.rules)}"]
    if report is not None:
        if report.gaps:
            context.append(":warning: coverage gaps: " + "; ".join(f"{g.source} ({g.reason})" for g in report.gaps[:3]))
        if report.problems:
            context.append(f":warning: {report.skipped_records} records could not be read in this scan")
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(t, TEXT_MAX)} for t in context]})
    text = _cut(f"[{sev}] {f.summary}", TEXT_MAX)
    return {"text": text, "blocks": blocks}
