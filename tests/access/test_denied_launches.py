"""Launches the guardrail denied, seen in CloudTrail, become approval requests (spendwatch.denied_launches).

Real pieces throughout: a CloudTrail file read by the files connector, the state on SQLite, requests posted to
the fake Slack Web API, clicks sent as signed interaction requests to the real endpoint over HTTP, and the
approval applied to the agent's role in IAM on the moto server. Whether the approved agent's next launch is
allowed is judged from what moto then holds (the role's tags and inline policies), by the access evaluator
with the guardrail SCP above it.
"""

from __future__ import annotations

import copy
import gzip
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pandas as pd
import pytest

from spendwatch import approvals, denied_launches, guardrails
from spendwatch.access.policy import Policy, Request, evaluate
from spendwatch.cli import main
from spendwatch.connectors.files import read_directory
from spendwatch.records import empty
from spendwatch.report import RunReport
from spendwatch.sinks.slack import make_client
from spendwatch.slack_app import SlackSettings, make_app, serve_http
from spendwatch.store import Approvals, Store
from tests.slack.conftest import block_actions, encode, send
from tests.slack.fake_slack import TOKEN, FakeSlack

FIXTURE = Path(__file__).parents[1] / "fixtures" / "aws" / "cloudtrail_denied_launches.json"
ACCOUNT = "123456789012"  # moto's account, so the approval lands on a role moto holds
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/gpu-agent"
SECRET = "denied-launch-signing-secret-0123"
CHANNEL = "C0APPROVALS"
ALICE = "U0ALICE"
T0 = datetime(2026, 11, 20, 10, tzinfo=UTC)
TRAIL_KEY = (f"AWSLogs/o-abc123def4/{ACCOUNT}/CloudTrail/us-east-1/2026/11/20/"
             f"{ACCOUNT}_CloudTrail_us-east-1_20261120T{{hhmm}}Z_{{tag}}.json.gz")
ALLOW_ALL = Policy("all", {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
EC2_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}]}


def records() -> list[dict[str, Any]]:
    return list(json.loads(FIXTURE.read_text())["Records"])


def put_trail(data: Path, events: list[dict[str, Any]], *, hhmm: str = "1005", tag: str = "AbCdEf012345") -> None:
    path = data / TRAIL_KEY.format(hhmm=hhmm, tag=tag)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(json.dumps({"Records": events}).encode(), mtime=0))


def activity(data: Path) -> pd.DataFrame:
    report = RunReport()
    tables = read_directory(data, report)
    assert report.problems == [] and report.gaps == []
    return tables.activity


@dataclass
class World:
    fake: FakeSlack
    iam: Any
    state: Path
    data: Path
    endpoint: str  # the Slack interaction endpoint's URL
    app: Any
    aws: str

    def click(self, action: str, approval_id: str, *, user: str = ALICE) -> None:
        a = stored(self, approval_id)
        payload = block_actions(action, approval_id, user=user, channel=a.channel, ts=a.ts)
        status, _, _ = send(self.endpoint, encode(payload), secret=SECRET)
        assert status == 200 and self.app.wait_idle(20)

    def approval_messages(self) -> list[dict[str, Any]]:
        calls = self.fake.ok_calls("chat.postMessage")
        return [c.args for c in calls if approvals.ACTION_APPROVE in json.dumps(c.args)]


def stored(world: World, approval_id: str) -> Any:
    with Store(world.state) as store:
        return Approvals(store).get(approval_id)


@pytest.fixture
def world(aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    fake = FakeSlack().start()
    iam = boto3.client("iam", endpoint_url=aws, region_name="us-east-1")
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "bedrock.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    iam.create_role(RoleName="gpu-agent", AssumeRolePolicyDocument=json.dumps(trust),
                    Tags=[{"Key": guardrails.AGENT_TAG, "Value": "true"}])
    iam.put_role_policy(RoleName="gpu-agent", PolicyName="ec2", PolicyDocument=json.dumps(EC2_ALL))
    state = tmp_path / "state.db"
    settings = SlackSettings(signing_secret=SECRET, bot_token=TOKEN, channel=CHANNEL,
                             allowed_users=frozenset({ALICE}), allowed_groups=frozenset(),
                             api_base_url=fake.base_url, aws_endpoint_url=aws)
    app = make_app(settings, state)
    server = serve_http(app, "127.0.0.1", 0, background=True)
    for k, v in {"SLACK_BOT_TOKEN": TOKEN, "SPENDWATCH_SLACK_CHANNEL": CHANNEL,
                 "SPENDWATCH_SLACK_API_URL": fake.base_url}.items():
        monkeypatch.setenv(k, v)
    for k in ("SPENDWATCH_STATE", "SPENDWATCH_DATABASE_URL"):
        monkeypatch.delenv(k, raising=False)
    data = tmp_path / "exports"
    put_trail(data, records())
    yield World(fake, iam, state, data, server.url, app, aws)
    server.shutdown()
    server.server_close()
    app.close()
    fake.stop()


def launch_verdict(world: World, instance_type: str, *, at: datetime) -> str:
    """The agent's RunInstances as AWS would judge it with the guardrail SCP above the account, from the role's
    tags and inline policies as moto holds them. The evaluator does not model aws:RequestedRegion; the request
    here knows its region (us-east-1), as AWS's request context does."""
    iam = world.iam
    tags = {t["Key"]: t["Value"] for t in iam.list_role_tags(RoleName="gpu-agent")["Tags"]}
    inline = [Policy(n, iam.get_role_policy(RoleName="gpu-agent", PolicyName=n)["PolicyDocument"])
              for n in iam.list_role_policies(RoleName="gpu-agent")["PolicyNames"]]

    @dataclass(frozen=True)
    class InRegion(Request):
        region: str = "us-east-1"

        def value(self, key: str) -> tuple[bool, str | None]:
            return (True, self.region) if key.lower() == "aws:requestedregion" else super().value(key)

    req = InRegion("ec2:RunInstances", f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/*", instance_type, tags, at)
    return evaluate(req, inline, scp_levels=[[Policy("guardrail", guardrails.scp()), ALLOW_ALL]]).decision


# -- the reader keeps what a request needs -------------------------------------------------------------------

def test_reader_keeps_denied_launches_with_their_counts(tmp_path: Path) -> None:
    base = records()[0]
    spot = {**copy.deepcopy(base), "eventName": "RequestSpotInstances", "eventID": "e-spot",
            "requestParameters": {"instanceCount": "3", "launchSpecification": {"instanceType": "p3.2xlarge"}}}
    fleet = {**copy.deepcopy(base), "eventName": "CreateFleet", "eventID": "e-fleet", "errorCode": "AccessDenied",
             "requestParameters": {"CreateFleetRequest": {
                 "Type": "instant", "TargetCapacitySpecification": {"TotalTargetCapacity": 4},
                 "LaunchTemplateConfigs": {"LaunchTemplateSpecification": {"LaunchTemplateId": "lt-1"},
                                           "Overrides": [{"InstanceType": "g6.xlarge"}]}}}}
    spot_fleet = {**copy.deepcopy(base), "eventName": "RequestSpotFleet", "eventID": "e-sfr",
                  "requestParameters": {"spotFleetRequestConfig": {
                      "targetCapacity": 6, "launchSpecifications": {"items": [{"instanceType": "g4dn.xlarge"}]}}}}
    put_trail(tmp_path, [*records(), spot, fleet, spot_fleet])
    rows = activity(tmp_path).set_index("event_id")
    first = rows.loc["7e1d0000-0000-4000-8000-000000000001"]
    assert (first["event_name"], first["error"], first["instance_type"], first["requested_count"]) == (
        "RunInstances", "Client.UnauthorizedOperation", "g5.12xlarge", 2)  # maxCount
    assert first["principal"] == ROLE_ARN and first["principal_type"] == "agent"
    assert rows.loc["7e1d0000-0000-4000-8000-000000000004", "principal_type"] == "human"
    assert (rows.loc["e-spot", "instance_type"], rows.loc["e-spot", "requested_count"]) == ("p3.2xlarge", 3)
    assert (rows.loc["e-fleet", "instance_type"], rows.loc["e-fleet", "requested_count"]) == ("g6.xlarge", 4)
    sfr = rows.loc["e-sfr"]
    assert (sfr["action"], sfr["instance_type"], sfr["requested_count"], bool(sfr["spot"])) == (
        "launch_request", "g4dn.xlarge", 6, True)
    ok = rows.loc["7e1d0000-0000-4000-8000-000000000005"]  # the successful launch
    assert pd.isna(ok["error"]) and ok["resource"] == "i-0a1b2c3d4e5f60718"


def test_only_the_agents_denied_accelerated_launches_count(tmp_path: Path) -> None:
    put_trail(tmp_path, records())
    found, skipped = denied_launches.find_denied(activity(tmp_path))
    assert [d.event_id[-1:] for d in found if d.event_id] == ["1", "2", "3"]
    assert {(d.principal, d.instance_type, d.region, d.session) for d in found} == {
        (ROLE_ARN, "g5.12xlarge", "us-east-1", "bedrock-agent-run-7")}
    assert [d.count for d in found] == [2, 2, 2]
    assert skipped == {"not an agent (human)": 1, "not an accelerated instance type": 1}
    # An account trail and an organisation trail copied side by side: each event counts once.
    put_trail(tmp_path, records(), hhmm="1006", tag="Copy00000000")
    assert len(denied_launches.find_denied(activity(tmp_path))[0]) == 3


# -- end to end through the command line, Slack and moto --------------------------------------------------------

def run_cli(world: World, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    assert main(["approvals", "from-activity", *extra, "--state", str(world.state), "--json"]) == 0
    return dict(json.loads(capsys.readouterr().out))


def test_one_request_posted_once_then_approved_on_moto(world: World, capsys: pytest.CaptureFixture[str],
                                                        tmp_path: Path) -> None:
    # Dry run: says what it would post, posts and stores nothing.
    dry = run_cli(world, capsys, "--data", str(world.data))
    assert dry["dry_run"] is True and len(dry["requests"]) == 1 and dry["posted"] == []
    assert world.fake.ok_calls("chat.postMessage") == []
    with Store(world.state) as store:
        assert Approvals(store).all() == []

    # Posted: exactly one request, the agent's accelerated one, with who, what, where, cost and the events.
    config = tmp_path / "serve.toml"
    config.write_text(f'[serve]\ndata = "{world.data}"\n\n[slack]\nchannel = "{CHANNEL}"\n'
                      f'allowed_users = ["{ALICE}"]\napi_url = "{world.fake.base_url}"\n')
    posted = run_cli(world, capsys, "--config", str(config), "--post")
    assert len(posted["posted"]) == 1 and posted["failed"] == []
    assert posted["skipped"] == {"not an agent (human)": 1, "not an accelerated instance type": 1}
    request = posted["requests"][0]
    assert (request["principal"], request["instance_type"], request["count"], request["region"], request["hours"],
            request["requested_by"], request["status"]) == (
        ROLE_ARN, "g5.12xlarge", 2, "us-east-1", 4.0, "cloudtrail:agent", "pending")
    assert request["projected_usd"] == round(5.672 * 2 * 4, 2)
    assert request["event_ids"] == [f"7e1d0000-0000-4000-8000-00000000000{i}" for i in (1, 2, 3)]
    [msg] = world.approval_messages()
    assert msg["channel"] == CHANNEL
    text = json.dumps(msg)
    for part in ("Seen in CloudTrail: denied by the guardrail", ROLE_ARN, "asked by cloudtrail:agent",
                 "2 x `g5.12xlarge`", "us-east-1", "$45.38", "account 123456789012", "bedrock-agent-run-7",
                 "3 attempts", "2026-11-20T10:07:05Z", "7e1d0000-0000-4000-8000-000000000003",
                 "Client.UnauthorizedOperation", "2026-11-20T10:01:12Z"):
        assert part in text, part
    assert "alice" not in text and "m5.large" not in text

    # The same trail seen again (another scan, the same command): nothing new.
    again = run_cli(world, capsys, "--config", str(config), "--post")
    assert again["requests"] == [] and again["posted"] == [] and again["already_answered"] == 3
    assert len(world.approval_messages()) == 1

    # Before the approval the guardrail denies the agent; an approver approves through a signed request.
    approval_id = request["id"]
    assert launch_verdict(world, "g5.12xlarge", at=datetime.now(UTC)) == "denied"
    world.click(approvals.ACTION_APPROVE, approval_id)
    a = stored(world, approval_id)
    assert a.status == "approved" and a.decided_by == f"slack:{ALICE}"
    policies = world.iam.list_role_policies(RoleName="gpu-agent")["PolicyNames"]
    assert sorted(policies) == sorted(["ec2", approvals.policy_name(approval_id)])
    during = datetime.fromisoformat(a.expires_at) - timedelta(minutes=30)
    assert launch_verdict(world, "g5.12xlarge", at=during) == "allowed"
    assert launch_verdict(world, "p4d.24xlarge", at=during) == "denied"  # bounded to what was asked
    assert run_cli(world, capsys, "--data", str(world.data), "--post")["posted"] == []  # decided: not again
    with Store(world.state) as store:
        trail = [(e.action, e.outcome, e.actor) for e in store.audit_log(resource=ROLE_ARN)]
    assert trail == [("approval.request", "ok", "cloudtrail:agent"), ("approval.approve", "ok", f"slack:{ALICE}")]


def test_cli_errors(world: World, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["approvals", "from-activity", "--state", str(world.state)]) == 2
    assert main(["approvals", "from-activity", "--data", str(tmp_path / "missing"), "--state", str(world.state)]) == 1
    assert "no such directory" in capsys.readouterr().err
    assert main(["approvals", "from-activity", "--data", str(world.data), "--hours", "500",
                 "--state", str(world.state)]) == 1
    assert "hours must be in" in capsys.readouterr().err


# -- the rules over time: denial window, approval expiry, a post that failed --------------------------------------

def at(event: dict[str, Any], when: datetime, n: int) -> dict[str, Any]:
    out = copy.deepcopy(event)
    out["eventTime"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    out["eventID"] = f"later-{n}"
    return out


def test_decisions_answer_attempts_within_their_window(world: World) -> None:
    denied_event = records()[0]
    iam_factory = approvals.iam_per_account(endpoint_url=world.aws)
    client = make_client(TOKEN, base_url=world.fake.base_url)

    def scan(now: datetime, attempt: tuple[datetime, int] | None = None) -> denied_launches.Outcome:
        """One run at `now`, after a trail file with one more denied attempt (at time, number) arrived."""
        if attempt is not None:
            when, n = attempt
            put_trail(world.data, [at(denied_event, when, n)], hhmm=f"{n:04d}", tag=f"Later{n:07d}")
        with Store(world.state) as store:
            return denied_launches.request_denied(store, activity(world.data), client=client, channel=CHANNEL,
                                                  hours=2, now=now)

    def hours(h: float) -> datetime:
        return T0 + timedelta(hours=h)

    first = scan(hours(1))
    assert len(first.posted) == 1 and first.plan.new[0].hours == 2
    r1 = first.posted[0].id
    with Store(world.state) as store:  # denied at 11:00: a "no" for the 2 h asked, until 13:00
        approvals.decide(store, iam_factory, r1, approve=False, actor=f"slack:{ALICE}", now=hours(1))

    inside = scan(hours(2), (hours(1.5), 1))
    assert inside.posted == [] and inside.plan.answered == 4  # three before the request, one inside the window

    after = scan(hours(4), (hours(3.2), 2))
    assert [a.reason.split(";")[0] for a in after.posted] == [
        "Seen in CloudTrail: denied by the guardrail. 1 attempt in account 123456789012 "
        "(session `bedrock-agent-run-7`)"]
    r2 = after.posted[0].id
    with Store(world.state) as store:  # approved at 14:00 for 2 h: until 16:00
        approvals.decide(store, iam_factory, r2, approve=True, actor=f"slack:{ALICE}", now=hours(4))

    during = scan(hours(5), (hours(4.5), 3))
    assert during.posted == [] and during.plan.answered == 6

    expired = scan(hours(7), (hours(6.5), 4))
    assert len(expired.posted) == 1 and expired.posted[0].id not in (r1, r2)
    assert [d.event_id for d in expired.plan.attempts[expired.posted[0].id]] == ["later-4"]
    assert len(world.approval_messages()) == 3


def test_a_failed_post_is_posted_again_by_the_next_run(world: World) -> None:
    client = make_client(TOKEN, base_url=world.fake.base_url)
    world.fake.fail_next("chat.postMessage", status=500)
    with Store(world.state) as store:
        failed = denied_launches.request_denied(store, activity(world.data), client=client, channel=CHANNEL,
                                                now=T0 + timedelta(hours=1))
        assert failed.posted == [] and len(failed.failed) == 1
        [pending] = Approvals(store).all()
        assert pending.status == "pending" and pending.ts is None
        # The next run sees no attempts at all (a live scan reads only new objects) and still posts it.
        later = denied_launches.request_denied(store, empty("activity"), client=client, channel=CHANNEL,
                                               now=T0 + timedelta(hours=2))
        assert [a.id for a in later.posted] == [pending.id] and later.plan.new == []
        assert Approvals(store).get(pending.id).ts is not None  # type: ignore[union-attr]
        outcomes = [e.outcome for e in store.audit_log(resource=ROLE_ARN)]
    assert outcomes == ["ok", "reposted"]
    assert len(world.approval_messages()) == 1


def test_answered_until(world: World) -> None:
    base = approvals.new_request(principal=ROLE_ARN, instance_type="g5.xlarge", count=1, region="us-east-1",
                                 hours=3, reason="r", requested_by="cloudtrail:agent", now=T0)
    stamp = "2026-11-20T11:00:00.000000Z"
    cases: Mapping[str, tuple[dict[str, Any], datetime]] = {
        "pending": ({}, datetime.max.replace(tzinfo=UTC)),
        "denied": ({"decided_at": stamp}, T0 + timedelta(hours=4)),
        "approved": ({"decided_at": stamp, "expires_at": "2026-11-20T14:00:00.000000Z"}, T0 + timedelta(hours=4)),
        "failed": ({"decided_at": stamp}, T0 + timedelta(hours=1)),
    }
    for status, (fields, expected) in cases.items():
        assert denied_launches.answered_until(replace(base, status=status, **fields)) == expected, status


def test_live_trail_in_s3(world: World, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`--config` with an [aws] table reads the organisation trail from S3 through the live connector (moto)."""
    s3 = boto3.client("s3", endpoint_url=world.aws, region_name="us-east-1")
    s3.create_bucket(Bucket="org-trail")
    key = TRAIL_KEY.format(hhmm="1005", tag="AbCdEf012345")
    s3.put_object(Bucket="org-trail", Key=key, Body=gzip.compress(FIXTURE.read_bytes(), mtime=0))
    config = tmp_path / "live.toml"
    config.write_text('[serve]\ndenied_launch_hours = 3\n\n'
                      f'[aws]\naccounts = ["{ACCOUNT}"]\nregions = ["us-east-1"]\ntrail = "s3://org-trail/"\n'
                      f'endpoint_url = "{world.aws}"\n\n[slack]\nchannel = "{CHANNEL}"\n'
                      f'api_url = "{world.fake.base_url}"\n')
    out = run_cli(world, capsys, "--config", str(config), "--post")
    assert [(r["principal"], r["instance_type"], r["count"], r["hours"], r["projected_usd"])
            for r in out["requests"]] == [(ROLE_ARN, "g5.12xlarge", 2, 3.0, round(5.672 * 2 * 3, 2))]
    assert len(out["posted"]) == 1 and len(world.approval_messages()) == 1
    assert out["report"]["gaps"] == [], out["report"]["gaps"]
    assert run_cli(world, capsys, "--config", str(config), "--post")["posted"] == []
    # A trail that cannot be read is a coverage gap in the report, not an all clear.
    config.write_text(config.read_text().replace("s3://org-trail/", "s3://no-such-trail/"))
    blind = run_cli(world, capsys, "--config", str(config))
    assert blind["requests"] == [] and blind["report"]["complete"] is False
    assert any("cloudtrail" in g["source"].lower() for g in blind["report"]["gaps"]), blind["report"]["gaps"]


def test_reading_a_directory_for_activity_leaves_the_flow_logs_unread(tmp_path: Path) -> None:
    from spendwatch.simulate.scenarios import run_scenario

    truth = run_scenario("classic-miners", tmp_path / "data")
    everything = read_directory(truth.root, RunReport())
    report = RunReport()
    activity = denied_launches._read_directory(truth.root, report)
    pd.testing.assert_frame_equal(activity, everything.activity)
    assert len(everything.flows) and not any(s.kind == "vpc-flow-logs" for s in report.sources)
    assert any(n.startswith("left unread") and "vpc-flow-logs files" in n for n in report.notes)
