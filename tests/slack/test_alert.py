"""The alert's Block Kit: buttons and their confirm dialog, Slack's limits, escaping, and the HTML preview."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import replace
from typing import Any

from spendwatch.findings import Severity
from spendwatch.sinks.slack import (
    ACTION_CONSOLE,
    ACTION_CONTAIN,
    ACTION_EXPECTED,
    ACTION_QUARANTINE,
    ACTION_RELEASE,
    ACTION_RELEASE_PRINCIPAL,
    ACTION_SNOOZE,
    BUTTON_TEXT_MAX,
    CONFIRM_TEXT_MAX,
    CONFIRM_TITLE_MAX,
    HEADER_MAX,
    TEXT_MAX,
    alert_payload,
    update_text,
)
from spendwatch.sinks.slack_html import render_alert_html
from spendwatch.store import SlackMessage

from .conftest import make_finding


def buttons(payload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    [actions] = [b for b in payload["blocks"] if b["type"] == "actions"]
    return {e["action_id"]: e for e in actions["elements"]}


def test_open_finding_offers_console_quarantine_contain_snooze_and_mark_expected() -> None:
    f = make_finding("i-0abc")
    payload = alert_payload(f)
    b = buttons(payload)
    assert list(b) == [ACTION_CONSOLE, ACTION_QUARANTINE, ACTION_CONTAIN, ACTION_SNOOZE, ACTION_EXPECTED]
    contain = b[ACTION_CONTAIN]
    assert contain["style"] == "danger" and contain["value"] == f.id and contain["confirm"]["style"] == "danger"
    assert "assumed-role/gpu-worker/agent-7" in contain["confirm"]["text"]["text"]
    assert "Release principal" in contain["confirm"]["text"]["text"]
    assert "i-0abc" in b[ACTION_CONSOLE]["url"] and "us-east-1" in b[ACTION_CONSOLE]["url"]
    q = b[ACTION_QUARANTINE]
    assert q["style"] == "danger" and q["value"] == f.id
    confirm = q["confirm"]
    assert {"title", "text", "confirm", "deny"} <= set(confirm) and confirm["style"] == "danger"
    assert "i-0abc" in confirm["text"]["text"] and "Release" in confirm["text"]["text"]
    assert b[ACTION_SNOOZE]["value"] == f.id and b[ACTION_EXPECTED]["value"] == f.id
    assert "confirm" not in b[ACTION_SNOOZE]
    body = json.dumps(payload)
    assert "$5.67/h" in body and "$136" in body and "(agent)" in body and "123456789012 / us-east-1" in body
    assert "gulf.moneroocean.stream" in body


def test_quarantined_finding_offers_release_not_quarantine() -> None:
    payload = alert_payload(make_finding("i-0abc", status="quarantined"), outcome=":lock: *Quarantined* by <@U1>")
    b = buttons(payload)
    assert ACTION_RELEASE in b and ACTION_QUARANTINE not in b and ACTION_SNOOZE not in b
    assert b[ACTION_RELEASE]["confirm"]["confirm"]["text"] == "Release"
    [outcome] = [blk for blk in payload["blocks"] if blk.get("block_id") == "sw_outcome"]
    assert "<@U1>" in outcome["text"]["text"]


def test_gcp_and_azure_findings_offer_quarantine_with_their_own_dialog_and_console_link() -> None:
    gcp = make_finding("projects/ml-prod/zones/us-central1-a/instances/miner", cloud="gcp", account="ml-prod",
                       region="us-central1", principal="serviceAccount:ci@ml-prod.iam.gserviceaccount.com")
    vm = "/subscriptions/1111/resourcegroups/gpu-rg/providers/microsoft.compute/virtualmachines/gpu-1"
    azure = make_finding(vm, cloud="azure", account="1111", region="eastus", principal="alice@example.com")
    for f, words, url in ((gcp, "firewall rules", "console.cloud.google.com/compute/instancesDetail/zones/"
                           "us-central1-a/instances/miner?project=ml-prod"),
                          (azure, "network security group", f"portal.azure.com/#resource{vm}")):
        b = buttons(alert_payload(f))
        assert list(b) == [ACTION_CONSOLE, ACTION_QUARANTINE, ACTION_SNOOZE, ACTION_EXPECTED], f.cloud
        assert words in b[ACTION_QUARANTINE]["confirm"]["text"]["text"] and b[ACTION_CONSOLE]["url"].endswith(url)
        assert "instance profile" not in b[ACTION_QUARANTINE]["confirm"]["text"]["text"]  # AWS's words, not theirs
        released = buttons(alert_payload(replace(f, status="quarantined")))
        assert ACTION_RELEASE in released and ACTION_QUARANTINE not in released
    assert "not available" not in json.dumps(alert_payload(gcp))


def test_cloud_without_a_quarantine_action_gets_no_quarantine_button() -> None:
    payload = alert_payload(make_finding("ocid1.instance.oc1..x", cloud="oci", region="eu-frankfurt-1"))
    assert ACTION_QUARANTINE not in buttons(payload) and ACTION_SNOOZE in buttons(payload)
    assert "not available for oci" in json.dumps(payload)


def test_contained_principal_offers_release_principal_and_others_no_contain_button() -> None:
    b = buttons(alert_payload(make_finding("i-0abc"), principal_contained=True))
    assert ACTION_RELEASE_PRINCIPAL in b and ACTION_CONTAIN not in b and ACTION_QUARANTINE in b
    assert b[ACTION_RELEASE_PRINCIPAL]["confirm"]["confirm"]["text"] == "Release principal"
    for principal in ("arn:aws:iam::123456789012:root", "arn:aws:sts::123456789012:federated-user/bob", None,
                      "ci-bot"):
        assert ACTION_CONTAIN not in buttons(alert_payload(make_finding("i-0abc", principal=principal))), principal


def test_text_from_the_cloud_cannot_ping_or_plant_links() -> None:
    f = make_finding("i-0abc", principal="arn:aws:iam::1:role/<!channel>",
                     evidence=["user agent <https://evil.example|click me> & more"], summary="x <!here>")
    payload = alert_payload(f)
    # Slack parses mentions and links in mrkdwn and in the notification text; plain_text (the header) is literal.
    parsed = [payload["text"]] + [t for t in mrkdwn_texts(payload["blocks"])]
    body = "\n".join(parsed)
    assert "<!channel>" not in body and "<!here>" not in body and "<https://evil" not in body
    assert "&lt;!channel&gt;" in body and "&amp; more" in body and "&lt;!here&gt;" in payload["text"]


def mrkdwn_texts(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["text"]] if node.get("type") == "mrkdwn" else []
        return own + [t for v in node.values() for t in mrkdwn_texts(v)]
    if isinstance(node, list):
        return [t for v in node for t in mrkdwn_texts(v)]
    return []


def test_everything_stays_within_slack_limits() -> None:
    f = make_finding("i-" + "0" * 300, summary="y" * 500, evidence=["e" * 1000] * 20, principal="p" * 3000,
                     related=["i-" + "1" * 40] * 200)
    payload = alert_payload(f, outcome="o" * 5000)
    assert len(payload["blocks"]) <= 50 and len(payload["text"]) <= TEXT_MAX
    assert len(payload["blocks"][0]["text"]["text"]) <= HEADER_MAX
    for block in payload["blocks"]:
        if block["type"] == "section":
            assert len(block.get("text", {}).get("text", "")) <= TEXT_MAX
            assert len(block.get("fields", [])) <= 10 and all(len(x["text"]) <= 2000 for x in block.get("fields", []))
        if block["type"] == "actions":
            assert len(block["elements"]) <= 25
            for el in block["elements"]:
                assert len(el["text"]["text"]) <= BUTTON_TEXT_MAX and len(el.get("value", "")) <= 2000
                if "confirm" in el:
                    assert len(el["confirm"]["title"]["text"]) <= CONFIRM_TITLE_MAX
                    assert len(el["confirm"]["text"]["text"]) <= CONFIRM_TEXT_MAX
                    assert len(el["confirm"]["confirm"]["text"]) <= 30


def test_thread_update_says_what_changed() -> None:
    previous = SlackMessage("sw-1", "C1", "1.1", "", "", int(Severity.HIGH), 2.0, 0, None)
    text = update_text(previous, make_finding("i-0abc"))
    assert "high → *critical*" in text and "$2.00/h → *$5.67/h*" in text and "next 24 h $136" in text


def test_html_preview_is_self_contained_and_looks_like_the_message() -> None:
    png = b"\x89PNG\r\n\x1a\nfake-bytes"
    f = make_finding("i-0abc", principal="arn:aws:iam::1:role/<script>alert(1)</script>")
    page = render_alert_html(alert_payload(f), png)
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert "CRITICAL: Likely GPU mining on i-0abc" in page
    assert 'class="btn danger"' in page and "Quarantine" in page and "Snooze 24 h" in page
    assert "Mark expected" in page and "Open in console" in page
    assert f"data:image/png;base64,{base64.b64encode(png).decode()}" in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert not re.search(r'src="https?:', page)  # nothing fetched from the network
    assert "<b>Evidence</b>" in page and "<code>i-0abc</code>" in page
