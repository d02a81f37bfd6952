"""The interaction endpoint over real HTTP, with requests signed exactly as Slack signs them.

The AWS side is a real moto server (fixture `instance`); the Slack side is the fake Web API. "Nothing
changed" is checked where it matters: the instance's security groups and tags on moto, the store's
quarantines, finding status and audit log, and the calls the endpoint made to Slack.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any
from urllib.parse import quote

from spendwatch.slack_app import EXPECTED_VIEW, PATH, REPLAY_TTL_S

from .conftest import ALICE, CAROL, MALLORY, SECRET, Endpoint, Instance, block_actions, encode, signed_headers

REFUSED = {400, 401, 404, 405, 411, 413}


def wait(ep: Endpoint) -> None:
    assert ep.app.wait_idle(20), "the endpoint's work did not finish"


def view_submission(ep: Endpoint, user: str, reason: str) -> bytes:
    meta = json.dumps({"finding": ep.finding.id, "channel": ep.channel, "ts": ep.ts})
    payload = {
        "type": "view_submission", "team": {"id": "T0EXAMPLE"}, "api_app_id": "A0SPENDWATCH",
        "user": {"id": user, "username": user.lower(), "team_id": "T0EXAMPLE"}, "trigger_id": "1.2.3",
        "view": {"id": "V1", "type": "modal", "callback_id": EXPECTED_VIEW, "private_metadata": meta,
                 "state": {"values": {"reason": {"reason_input": {"type": "plain_text_input", "value": reason}}}}},
    }
    return encode(payload)


def test_forged_stale_replayed_malformed_and_unauthorised_requests_are_all_refused(
        endpoint: Endpoint, instance: Instance) -> None:
    ep = endpoint
    groups_before, tags_before, policies_before = instance.security_groups(), instance.tags(), instance.role_policies()
    actions = ["sw_quarantine", "sw_release", "sw_snooze", "sw_expected", "sw_contain_principal",
               "sw_release_principal"]
    now = int(time.time())
    results: dict[str, list[int]] = {"forged": [], "stale": [], "replayed": [], "malformed": [], "unauthorised": []}

    def add(kind: str, status: int) -> None:
        results[kind].append(status)

    # Forged: Alice's real clicks (which would act if accepted), signed with the wrong secret ...
    wrong_secrets = ["", "x", SECRET[:-1], SECRET + "0", SECRET.upper(), SECRET[::-1],
                     "8f742231b10e8888abcd99yyyzzz85a6", " " + SECRET, SECRET + " ", "xoxb-test-token"]
    for i, secret in enumerate(wrong_secrets * 2):
        body = encode(ep.payload(actions[i % len(actions)]))
        headers = signed_headers(body, secret=secret or "unused") if secret else {
            "X-Slack-Request-Timestamp": str(now), "X-Slack-Signature": "v0=",
            "Content-Type": "application/x-www-form-urlencoded"}
        add("forged", ep.send(body, headers=headers)[0])
    # ... with signatures that are not the signature of this body ...
    body = encode(ep.payload("sw_quarantine"))
    good = signed_headers(body)
    other = signed_headers(encode(ep.payload("sw_snooze")))["X-Slack-Signature"]
    bad_signatures = [
        "v0=" + "0" * 64, "v0=" + "f" * 64, good["X-Slack-Signature"].upper(), good["X-Slack-Signature"][:-1],
        good["X-Slack-Signature"] + "0", good["X-Slack-Signature"].replace("v0=", "v1="),
        good["X-Slack-Signature"][3:], other, "sha256=" + good["X-Slack-Signature"][3:], "v0=" + "g" * 64,
        good["X-Slack-Signature"][:-1] + ("0" if good["X-Slack-Signature"][-1] != "0" else "1"),
        "v0=" + good["X-Slack-Signature"][3:][::-1], "", "v0", "v0=" + "a" * 63,
    ]
    for sig in bad_signatures:
        add("forged", ep.send(body, headers={**good, "X-Slack-Signature": sig})[0])
    # ... and bodies tampered with after Slack signed them: Mallory's signed click rewritten as Alice's, etc.
    mallory = ep.payload("sw_snooze", user=MALLORY)
    mallory_body = encode(mallory)
    mallory_headers = signed_headers(mallory_body)
    tampered = [
        mallory_body.replace(MALLORY.encode(), ALICE.encode()),
        mallory_body.replace(b"sw_snooze", b"sw_quarantine"),
        mallory_body + b"&x=1", mallory_body + b" ", b" " + mallory_body, mallory_body[:-1],
        mallory_body.replace(ep.finding.id.encode(), b"sw-0000000000000000"),
        mallory_body.upper(), mallory_body.replace(b"payload=", b"payload=%20"), b"",
    ]
    for i, t in enumerate(tampered * 2):
        t = t + (b"&n=%d" % i if i >= len(tampered) else b"")
        add("forged", ep.send(t, headers=mallory_headers)[0])

    # Stale or from the future: correctly signed, but outside five minutes.
    # The clock is read per request: a future stamp taken seconds earlier would drift inside the window on a
    # loaded machine and stop testing what it says. Future stamps keep a margin for the request's own latency.
    for offset in (-301, -302, -330, -600, -3600, -86400, -10**7, 320, 330, 600, 3600, 86400):
        body = encode(ep.payload("sw_quarantine"))
        add("stale", ep.send(body, ts=int(time.time()) + offset)[0])
    for ts in (0, 1, 1_000_000_000):
        add("stale", ep.send(encode(ep.payload("sw_quarantine")), ts=ts)[0])

    # Replayed: a request Slack really sent (an unauthorised click, a console click), sent again.
    sent: list[tuple[bytes, dict[str, str]]] = []
    for action in ("sw_snooze", "open_console"):
        body = encode(ep.payload(action, user=MALLORY))
        headers = signed_headers(body)
        status = ep.send(body, headers=headers)[0]
        assert status == 200
        sent.append((body, headers))
    for i in range(16):
        body, headers = sent[i % 2]
        add("replayed", ep.send(body, headers=headers)[0])

    # Malformed: wrong method or path, no or broken headers, oversized, signed bodies that do not parse.
    body = encode(ep.payload("sw_quarantine"))
    h = signed_headers(body)
    add("malformed", ep.send(body, headers={})[0])
    add("malformed", ep.send(body, headers={"X-Slack-Request-Timestamp": h["X-Slack-Request-Timestamp"]})[0])
    add("malformed", ep.send(body, headers={"X-Slack-Signature": h["X-Slack-Signature"]})[0])
    add("malformed", ep.send(body, headers={**h, "X-Slack-Request-Timestamp": "abc"})[0])
    add("malformed", ep.send(body, headers={**h, "X-Slack-Request-Timestamp": "-5"})[0])
    add("malformed", ep.send(body, headers={**h, "X-Slack-Request-Timestamp": f"{now}.5"})[0])
    add("malformed", ep.send(body, headers={**h, "X-Slack-Request-Timestamp": "9" * 40})[0])
    add("malformed", ep.send(body, method="GET")[0])
    add("malformed", ep.send(body, method="PUT")[0])
    add("malformed", ep.send(body, path="/slack/other")[0])
    add("malformed", ep.send(body, path="/")[0])
    add("malformed", ep.send(b"payload=" + b"x" * (1 << 20))[0])  # over the 1 MiB limit
    for raw in (b"payload=not-json", b"payload=%7B", b"\xff\xfe\x00payload", b"payload=" + quote("[1,2]").encode(),
                b"payload=%7B%7D", b"{}", b"payload=" + quote(json.dumps({"type": "block_actions"})).encode()):
        add("malformed", ep.send(raw)[0])  # signed with the right secret, but not something Slack sends

    # Unauthorised: correctly signed clicks by a user who is neither allowed nor in the allowed group.
    unauthorised = 0
    for i in range(24):
        user = MALLORY if i % 2 else "U0EVE"
        status = ep.click(actions[i % len(actions)], user=user)[0]
        add("unauthorised", status)
        unauthorised += 1
    add("unauthorised", ep.send(view_submission(ep, MALLORY, "trust me"))[0])
    unauthorised += 1
    wait(ep)

    total = sum(len(v) for v in results.values())
    assert total >= 100, total
    assert results["forged"] and all(s == 401 for s in results["forged"]), results["forged"]
    assert all(s == 401 for s in results["stale"]), results["stale"]
    assert all(s == 401 for s in results["replayed"]), results["replayed"]
    assert all(s in REFUSED for s in results["malformed"]), results["malformed"]
    assert all(s == 200 for s in results["unauthorised"])  # acknowledged, then refused ephemerally

    # Every unauthorised click (and the two genuine ones replayed above) got an ephemeral refusal, nothing else.
    ephemerals = ep.fake.ok_calls("chat.postEphemeral")
    assert len(ephemerals) == unauthorised + 1  # + the genuine unauthorised snooze that was later replayed
    assert all("Not done" in c.args["text"] and c.args["user"] in (MALLORY, "U0EVE") for c in ephemerals)
    assert ep.fake.calls_to("chat.update") == [] and ep.fake.calls_to("views.open") == []

    # Nothing changed on AWS or in the store; the audit log holds only the refusals.
    assert instance.security_groups() == groups_before and instance.tags() == tags_before
    assert instance.role_policies() == policies_before == []  # Contain principal clicks changed no IAM either
    with ep.store() as store:
        assert store.quarantines() == []
        assert store.get(ep.finding.id).status == "open"  # type: ignore[union-attr]
        audit = store.audit_log(limit=None)
    assert len(audit) == unauthorised + 1
    assert {e.outcome for e in audit} == {"refused"} and all(e.action.startswith("slack.") for e in audit)
    assert {e.actor for e in audit} == {f"slack:{MALLORY}", "slack:U0EVE"}


def test_allowed_click_quarantines_on_moto_and_updates_the_message(endpoint: Endpoint, instance: Instance) -> None:
    before = instance.security_groups()
    status, _, seconds = endpoint.click("sw_quarantine", user=ALICE)
    assert status == 200 and seconds < 2.5  # Slack waits 3 s
    wait(endpoint)

    after = instance.security_groups()
    assert after.keys() == before.keys() and all(groups != before[eni] for eni, groups in after.items())
    assert all(len(g) == 1 for g in after.values())  # only the isolation group
    assert instance.tags()["spendwatch:quarantine"] == endpoint.finding.id
    with endpoint.store() as store:
        [q] = store.quarantines()
        assert q.state == "active" and q.actor == f"slack:{ALICE}" and q.finding_id == endpoint.finding.id
        assert store.get(endpoint.finding.id).status == "quarantined"  # type: ignore[union-attr]
        audit = store.audit_log(limit=None)
    assert {e.actor for e in audit} == {f"slack:{ALICE}"}
    assert [e.outcome for e in audit if e.action == "slack.quarantine"] == ["applied"]
    assert any(e.action == "aws.quarantine" and e.step == "isolate-interface" and e.outcome == "ok" for e in audit)

    [update] = endpoint.fake.ok_calls("chat.update")
    assert (update.args["channel"], update.args["ts"]) == (endpoint.channel, endpoint.ts)
    message = endpoint.fake.messages[(endpoint.channel, endpoint.ts)]
    text = json.dumps(message["blocks"])
    assert "Quarantined" in text and f"<@{ALICE}>" in text
    ids = [e["action_id"] for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert "sw_release" in ids and "sw_quarantine" not in ids


def test_double_click_and_slack_retry_act_once(endpoint: Endpoint, instance: Instance) -> None:
    statuses: list[int] = []

    def click() -> None:
        statuses.append(endpoint.click("sw_quarantine", user=ALICE)[0])

    threads = [threading.Thread(target=click) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Slack retrying a delivery: a freshly signed request with X-Slack-Retry-Num, acknowledged and ignored.
    body = encode(endpoint.payload("sw_quarantine", user=CAROL))
    status, _, _ = endpoint.send(body, headers={**signed_headers(body), "X-Slack-Retry-Num": "1",
                                                "X-Slack-Retry-Reason": "http_timeout"})
    wait(endpoint)
    assert statuses == [200, 200] and status == 200

    with endpoint.store() as store:
        assert len(store.quarantines()) == 1
        audit = store.audit_log(limit=None)
    assert [e.outcome for e in audit if e.action == "aws.quarantine" and not e.step] == ["applied"]
    assert sorted(e.outcome for e in audit if e.action == "slack.quarantine") == ["applied", "ignored"]
    assert all(e.actor == f"slack:{ALICE}" for e in audit)  # Carol's retried click did nothing
    assert len(endpoint.fake.ok_calls("chat.update")) == 1
    [note] = endpoint.fake.ok_calls("chat.postEphemeral")
    assert note.args["user"] == ALICE and "already quarantined" in note.args["text"]


def test_ack_comes_back_at_once_while_a_slow_quarantine_runs(endpoint_factory: Any, instance: Instance,
                                                              aws: str) -> None:
    from spendwatch.actions.aws import AwsClients
    from spendwatch.actions.base import Target

    release = threading.Event()

    def slow_clients(target: Target) -> AwsClients:
        release.wait(10)  # the AWS side takes as long as the test says
        return AwsClients.build(region=target.region, endpoint_url=aws)

    ep = endpoint_factory(clients_factory=slow_clients)
    before = instance.security_groups()
    status, _, seconds = ep.click("sw_quarantine", user=ALICE)
    assert status == 200 and seconds < 2.5  # Slack's limit is 3 s; the work is still blocked below
    assert instance.security_groups() == before  # acknowledged before the work
    release.set()
    wait(ep)
    assert instance.security_groups() != before


def test_replay_is_refused_by_another_process_sharing_the_state(endpoint_factory: Any) -> None:
    first, second = endpoint_factory(), endpoint_factory()
    body = encode(first.payload("sw_snooze", user=ALICE))
    headers = signed_headers(body)
    assert first.send(body, headers=headers)[0] == 200
    assert second.send(body, headers=headers)[0] == 401
    assert first.send(body, headers=headers)[0] == 401
    wait(first)
    wait(second)
    with first.store() as store:
        assert [e.outcome for e in store.audit_log(limit=None)] == ["ok"]
        assert store.get(first.finding.id).status == "snoozed"
    assert REPLAY_TTL_S >= 600


def test_group_member_snoozes_then_marks_expected_with_a_reason(endpoint: Endpoint, instance: Instance) -> None:
    before = instance.security_groups()
    assert endpoint.click("sw_snooze", user=CAROL)[0] == 200  # allowed through user group S0SECOPS
    wait(endpoint)
    message = json.dumps(endpoint.fake.messages[(endpoint.channel, endpoint.ts)]["blocks"])
    assert "Snoozed" in message and f"<@{CAROL}>" in message

    assert endpoint.click("sw_expected", user=CAROL)[0] == 200
    wait(endpoint)
    [opened] = endpoint.fake.ok_calls("views.open")
    view = json.loads(opened.args["view"]) if isinstance(opened.args["view"], str) else opened.args["view"]
    assert view["callback_id"] == EXPECTED_VIEW and json.loads(view["private_metadata"])["ts"] == endpoint.ts

    status, body, _ = endpoint.send(view_submission(endpoint, CAROL, "   "))  # no reason: the modal says so
    assert status == 200 and json.loads(body)["response_action"] == "errors"
    assert endpoint.send(view_submission(endpoint, CAROL, "nightly <b>benchmark</b> run"))[0] == 200
    wait(endpoint)
    with endpoint.store() as store:
        assert store.get(endpoint.finding.id).status == "expected"  # type: ignore[union-attr]
        [marked] = [e for e in store.audit_log(limit=None) if e.action == "slack.mark-expected"]
    assert marked.actor == f"slack:{CAROL}" and marked.detail["reason"] == "nightly <b>benchmark</b> run"
    message = json.dumps(endpoint.fake.messages[(endpoint.channel, endpoint.ts)]["blocks"])
    assert "Marked expected" in message and "nightly &lt;b&gt;benchmark&lt;/b&gt; run" in message
    assert instance.security_groups() == before


def test_release_from_the_button_restores_the_groups(endpoint: Endpoint, instance: Instance) -> None:
    before = instance.security_groups()
    endpoint.click("sw_quarantine", user=ALICE)
    wait(endpoint)
    assert instance.security_groups() != before
    endpoint.click("sw_release", user=CAROL)
    wait(endpoint)
    assert instance.security_groups() == before
    with endpoint.store() as store:
        assert store.quarantines(active_only=True) == []
        assert store.get(endpoint.finding.id).status == "open"  # type: ignore[union-attr]
    message = endpoint.fake.messages[(endpoint.channel, endpoint.ts)]
    ids = [e["action_id"] for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert "sw_quarantine" in ids and "Released" in json.dumps(message["blocks"])


def test_unknown_finding_gets_an_answer_and_changes_nothing(endpoint: Endpoint) -> None:
    payload = block_actions("sw_quarantine", "sw-doesnotexist", user=ALICE, channel=endpoint.channel, ts=endpoint.ts)
    assert endpoint.send(encode(payload))[0] == 200
    wait(endpoint)
    [note] = endpoint.fake.ok_calls("chat.postEphemeral")
    assert "no finding" in note.args["text"]
    with endpoint.store() as store:
        assert store.quarantines() == [] and store.audit_log() == []
    assert PATH == "/slack/events"


def test_requests_without_a_length_are_refused_before_reading(endpoint: Endpoint) -> None:
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(endpoint.url)
    start = b"POST /slack/events HTTP/1.1\r\nHost: x\r\n"
    for head in (start + b"\r\n", start + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"):
        with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
            sock.sendall(head)
            assert sock.recv(100).startswith(b"HTTP/1.1 411")


def test_protected_instance_is_refused_from_the_button_too(endpoint: Endpoint, instance: Instance) -> None:
    instance.clients.ec2.create_tags(Resources=[instance.iid], Tags=[{"Key": "spendwatch:protected", "Value": "true"}])
    before = instance.security_groups()
    assert endpoint.click("sw_quarantine", user=ALICE)[0] == 200
    wait(endpoint)
    assert instance.security_groups() == before
    with endpoint.store() as store:
        assert store.quarantines() == []
        assert [e.outcome for e in store.audit_log(limit=None) if e.action == "slack.quarantine"] == ["refused"]
    message = json.dumps(endpoint.fake.messages[(endpoint.channel, endpoint.ts)]["blocks"])
    assert "Quarantine refused" in message and f"<@{ALICE}>" in message and "protected" in message
