"""The Slack alert as a self-contained HTML page, so a person can see it without Slack (`spendwatch demo`).

`render_alert_html(payload, chart_png)` draws the Block Kit blocks that `alert_payload` produces (header,
section text and fields, actions with their button styles, context, image) the way Slack lays them out,
with inline CSS and the chart inlined as a `data:` URI: one file, no network. Slack's mrkdwn is converted
for the subset the alert uses (*bold*, _italic_, `code`, <url|label>, <@user>, :emoji:, line breaks);
everything is HTML-escaped first, so text from the cloud cannot inject markup. It is a preview, not a
pixel-exact copy of Slack.
"""

from __future__ import annotations

import base64
import html
import re
from typing import Any

_EMOJI = {
    "rotating_light": "🚨", "red_circle": "🔴", "large_orange_circle": "🟠", "large_yellow_circle": "🟡",
    "white_circle": "⚪", "warning": "⚠️", "lock": "🔒", "unlock": "🔓", "zzz": "💤", "white_check_mark": "✅",
    "heavy_check_mark": "✔️", "no_entry": "⛔", "x": "❌", "information_source": "ℹ️", "grey_question": "❔",
    "arrows_counterclockwise": "🔄", "alarm_clock": "⏰",
}
_BUTTON_STYLE = {"danger": "btn danger", "primary": "btn primary"}

_CSS = """
body{margin:0;background:#f8f8f8;font:15px/1.46668 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,
 Helvetica,Arial,sans-serif;color:#1d1c1d}
.msg{max-width:760px;margin:24px auto;background:#fff;border:1px solid #ddd;border-radius:8px;padding:16px 20px;
 display:flex;gap:12px}
.avatar{width:36px;height:36px;border-radius:6px;background:#d1242f;color:#fff;font-weight:700;display:flex;
 align-items:center;justify-content:center;flex:none}
.body{flex:1;min-width:0}
.who{font-weight:900}.who .app{font-size:10px;background:#eee;color:#616061;border-radius:2px;padding:1px 3px;
 margin-left:4px;font-weight:700}.who .time{font-weight:400;color:#616061;font-size:12px;margin-left:6px}
h1{font-size:18px;margin:8px 0 4px;font-weight:900}
.section{margin:8px 0;white-space:normal;overflow-wrap:anywhere}
.fields{display:grid;grid-template-columns:1fr 1fr;gap:8px 16px;margin:8px 0}
.actions{display:flex;flex-wrap:wrap;gap:8px;margin:12px 0}
.btn{display:inline-block;border:1px solid #ccc;border-radius:4px;padding:4px 12px;font-weight:700;font-size:13px;
 background:#fff;color:#1d1c1d;text-decoration:none}
.btn.danger{background:#e01e5a;border-color:#e01e5a;color:#fff}
.btn.primary{background:#007a5a;border-color:#007a5a;color:#fff}
.confirm{font-size:11px;color:#616061;margin-left:2px}
.context{color:#616061;font-size:12px;margin:6px 0}
.image img{max-width:100%;border:1px solid #eee;border-radius:4px}
code{font:12px Monaco,Menlo,Consolas,monospace;background:#f6f6f6;border:1px solid #e8e8e8;border-radius:3px;
 padding:1px 3px;color:#e01e5a}
a{color:#1264a3}.mention{background:#e8f5fa;color:#1264a3;border-radius:3px;padding:0 2px}
.thread{color:#1264a3;font-size:13px;margin-top:8px}
"""


_SPECIAL = re.compile(r"<([^<>]*)>")  # Slack's real markup: links and mentions, written with literal < >


def _inline(segment: str) -> str:
    """Plain mrkdwn text (no <...> markup) to HTML: Slack's &-escapes undone, then HTML-escaped, then styled."""
    raw = segment.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    out = html.escape(raw, quote=True)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])", r"<b>\1</b>", out)
    out = re.sub(r"(?<![\w_])_([^_\n]+)_(?![\w_])", r"<i>\1</i>", out)
    out = re.sub(r":([a-z0-9_+-]+):", lambda m: _EMOJI.get(m.group(1), m.group(0)), out)
    return out.replace("\n", "<br>")


def _special(inner: str) -> str:
    """One `<...>` token: a user mention, a link with or without a label; anything else shown as text."""
    if re.fullmatch(r"@[A-Z0-9]+", inner):
        return f'<span class="mention">{html.escape(inner)}</span>'
    url, _, label = inner.partition("|")
    if url.startswith(("https://", "http://")):
        href = html.escape(url.replace("&amp;", "&"), quote=True)
        return f'<a href="{href}">{_inline(label) if label else html.escape(url)}</a>'
    return html.escape(f"<{inner}>")


def mrkdwn_to_html(text: str) -> str:
    """Slack mrkdwn (the subset the alert uses) to HTML. Text is escaped before any markup is added, and only
    real `<...>` tokens become links or mentions: escaped text from the cloud (`&lt;@U1&gt;`) stays text, as
    in Slack."""
    out: list[str] = []
    pos = 0
    for m in _SPECIAL.finditer(text):
        out.append(_inline(text[pos:m.start()]))
        out.append(_special(m.group(1)))
        pos = m.end()
    out.append(_inline(text[pos:]))
    return "".join(out)


def _text(obj: dict[str, Any] | None) -> str:
    if not obj:
        return ""
    if obj.get("type") == "mrkdwn":
        return mrkdwn_to_html(str(obj.get("text", "")))
    return html.escape(str(obj.get("text", "")))


def _button(el: dict[str, Any]) -> str:
    label = html.escape(str((el.get("text") or {}).get("text", "")))
    cls = _BUTTON_STYLE.get(str(el.get("style", "")), "btn")
    title = ""
    if el.get("confirm"):
        c = el["confirm"]
        title = f' title="{html.escape(str((c.get("title") or {}).get("text", "")))} (asks to confirm)"'
    if el.get("url"):
        href = html.escape(str(el["url"]), quote=True)
        return f'<a class="{cls}" href="{href}"{title}>{label} ↗</a>'
    mark = '<span class="confirm">(confirm)</span>' if el.get("confirm") else ""
    return f'<span class="{cls}"{title} data-action="{html.escape(str(el.get("action_id", "")))}">{label}</span>{mark}'


def render_alert_html(payload: dict[str, Any], chart_png: bytes | None = None, *, app_name: str = "spendwatch") -> str:
    """A self-contained HTML page showing `payload` (Block Kit) the way Slack would, with the chart below it."""
    parts: list[str] = []
    for block in payload.get("blocks") or []:
        kind = block.get("type")
        if kind == "header":
            parts.append(f"<h1>{_text(block.get('text'))}</h1>")
        elif kind == "section":
            if block.get("text"):
                parts.append(f'<div class="section">{_text(block["text"])}</div>')
            if block.get("fields"):
                cells = "".join(f"<div>{_text(f)}</div>" for f in block["fields"])
                parts.append(f'<div class="fields">{cells}</div>')
        elif kind == "actions":
            parts.append('<div class="actions">' + "".join(_button(e) for e in block.get("elements") or []) + "</div>")
        elif kind == "context":
            parts.append('<div class="context">' + " &nbsp;·&nbsp; ".join(
                _text(e) for e in block.get("elements") or []) + "</div>")
        elif kind == "image" and str(block.get("image_url", "")).startswith(("https://", "data:image/png")):
            alt = html.escape(str(block.get("alt_text", "")))
            src = html.escape(block["image_url"], quote=True)
            parts.append(f'<div class="image"><img src="{src}" alt="{alt}"></div>')
        elif kind == "divider":
            parts.append("<hr>")
    if not parts and payload.get("text"):
        parts.append(f'<div class="section">{mrkdwn_to_html(str(payload["text"]))}</div>')
    if chart_png:
        data = base64.b64encode(chart_png).decode("ascii")
        parts.append('<div class="thread">1 reply (the chart, in the alert\'s thread)</div>')
        parts.append(f'<div class="image"><img src="data:image/png;base64,{data}" alt="chart of the resource with '
                     'the anomalous span shaded"></div>')
    title = html.escape(str(payload.get("text", "spendwatch alert"))[:150])
    initial = html.escape(app_name[:1].upper() or "S")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{title}</title>"
        f"<style>{_CSS}</style></head><body>\n<div class=\"msg\"><div class=\"avatar\">{initial}</div>"
        f"<div class=\"body\"><div class=\"who\">{html.escape(app_name)}<span class=\"app\">APP</span>"
        "<span class=\"time\">preview</span></div>\n" + "\n".join(parts) + "\n</div></div>\n</body></html>\n"
    )
