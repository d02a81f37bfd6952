"""CloudTrail: every event kind taken, who did it (human / role / service / agent), and damaged trail files."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from aws_kit import ACCOUNT, TRAIL_KEY, Bucket

from spendwatch.connectors.files.cloudtrail import AGENT_MARKERS, agent_marker, principal_of
from spendwatch.report import RunReport

Problems = Callable[[RunReport, Path], list[tuple[int | None, str, int]]]


@pytest.fixture
def activity(bucket: Bucket) -> pd.DataFrame:
    bucket.put(TRAIL_KEY, bucket.sample("cloudtrail.json"))
    tables, report = bucket.scan()
    assert report.problems == []
    return tables.activity.set_index("event_id")


def event_row(activity: pd.DataFrame, n: int) -> pd.Series:
    return activity.loc[f"00000000-0000-0000-0000-{n:012d}"]


def test_every_event_kind_becomes_its_action(activity: pd.DataFrame) -> None:
    actions = activity.groupby("event_name")["action"].first().to_dict()
    assert actions == {
        "RunInstances": "launch", "RequestSpotInstances": "launch_request", "CreateFleet": "launch",
        "StartInstances": "start", "StopInstances": "stop", "TerminateInstances": "terminate",
        "GetServiceQuota": "quota_lookup", "RequestServiceQuotaIncrease": "quota_request",
        "CreateAccessKey": "key_create",
    }
    assert "DescribeInstances" not in set(activity["event_name"])  # read-only calls are not activity
    assert set(activity["account"]) == {ACCOUNT}
    assert activity["time"].dt.tz is not None


def test_run_instances_by_an_agent_session(activity: pd.DataFrame) -> None:
    row = event_row(activity, 1)
    assert row["principal"] == f"arn:aws:iam::{ACCOUNT}:role/platform-automation"
    assert row["session_name"] == "bedrock-agent-run-42"
    assert row["principal_type"] == "agent"
    assert (row["resource"], row["instance_type"], row["gpus"], row["vcpus"]) == ("i-0a100000000000001", "g5.xlarge",
                                                                                  1, 4)
    assert not row["spot"] and pd.isna(row["error"])


def test_spot_fleet_failed_launch_quota_and_key_rows(activity: pd.DataFrame) -> None:
    sso = event_row(activity, 2)
    assert sso["principal_type"] == "human" and bool(sso["spot"]) is True
    spot = event_row(activity, 3)
    assert (spot["resource"], spot["instance_type"], spot["gpus"], bool(spot["spot"])) == ("sir-0abc1234",
                                                                                          "p3.2xlarge", 1, True)
    assert spot["principal"] == f"arn:aws:iam::{ACCOUNT}:user/alice" and spot["principal_type"] == "human"
    fleet = event_row(activity, 4)
    assert (fleet["resource"], fleet["instance_type"], bool(fleet["spot"])) == ("i-0d400000000000004", "g4dn.xlarge",
                                                                                True)
    assert fleet["principal_type"] == "role"
    asg = event_row(activity, 5)
    assert (asg["principal"], asg["principal_type"]) == ("autoscaling.amazonaws.com", "service")
    failed = event_row(activity, 12)
    assert failed["error"] == "Client.VcpuLimitExceeded" and pd.isna(failed["resource"])
    assert (failed["instance_type"], failed["gpus"], failed["vcpus"]) == ("p4d.24xlarge", 8, 96)
    lookup, request = event_row(activity, 9), event_row(activity, 10)
    assert (lookup["resource"], lookup["principal_type"]) == ("L-DB2E81BA", "agent")  # langchain user agent
    assert (request["resource"], request["desired_value"]) == ("L-DB2E81BA", 256.0)
    key = event_row(activity, 11)
    assert (key["resource"], key["target"], key["region"]) == ("AKIAEXAMPLEMALLORY01", "mallory", "us-east-1")


def test_inventory_and_states_from_launches(bucket: Bucket) -> None:
    bucket.put(TRAIL_KEY, bucket.sample("cloudtrail.json"))
    tables, _ = bucket.scan()
    inv = tables.inventory.set_index("resource")
    assert sorted(inv.index) == ["i-0a100000000000001", "i-0b200000000000002", "i-0d400000000000004",
                                 "i-0e500000000000005"]
    a = inv.loc["i-0a100000000000001"]
    assert (a["state"], a["gpus"], a["vcpus"], a["launched_by_type"]) == ("running", 1, 4, "agent")
    assert a["launched_at"] == pd.Timestamp("2026-11-20T09:59:00Z")
    assert json.loads(a["tags"]) == {"Name": "train-a"}
    assert (a["interfaces"], a["private_ips"]) == ("eni-0c0c0c0c0c0c0c0a1", "10.0.2.20")
    assert inv.loc["i-0b200000000000002", "state"] == "stopped"
    assert inv.loc["i-0d400000000000004", "state"] == "terminated"
    assert inv.loc["i-0e500000000000005", "state"] == "running"  # started again after launch
    assert bool(inv.loc["i-0b200000000000002", "spot"]) is True


def ident(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, **extra}


def assumed(role: str, session: str, path: str = "/") -> dict[str, Any]:
    return ident("AssumedRole", arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{session}",
                 sessionContext={"sessionIssuer": {"type": "Role", "userName": role,
                                                   "arn": f"arn:aws:iam::{ACCOUNT}:role{path}{role}"}})


@pytest.mark.parametrize(
    ("identity", "user_agent", "expected"),
    [
        (ident("IAMUser", arn=f"arn:aws:iam::{ACCOUNT}:user/bob", userName="bob"), "aws-cli/2.17", "human"),
        (ident("Root", arn=f"arn:aws:iam::{ACCOUNT}:root"), "console.amazonaws.com", "human"),
        (ident("IAMUser", arn=f"arn:aws:iam::{ACCOUNT}:user/bob", userName="bob"), "claude-code/1.0.3", "agent"),
        (assumed("AWSReservedSSO_Dev_0123abcd", "carol@example.com", "/aws-reserved/sso.amazonaws.com/"),
         "aws-cli/2.17", "human"),
        (assumed("etl-runner", "i-0123"), "Boto3/1.35 ua/2.0", "role"),
        (assumed("etl-runner", "crewai-worker-3"), "Boto3/1.35", "agent"),
        (assumed("mcp-server-aws", "s1"), "Boto3/1.35", "agent"),
        (assumed("AWSServiceRoleForEC2Spot", "spot", "/aws-service-role/spot.amazonaws.com/"), "spot.amazonaws.com",
         "service"),
        (ident("AWSService", invokedBy="autoscaling.amazonaws.com"), "autoscaling.amazonaws.com", "service"),
        (assumed("ops", "amazon-ssm-agent-session"), "amazon-ssm-agent/3.3", "role"),  # not an AI agent
    ],
)
def test_principal_types(identity: dict[str, Any], user_agent: str, expected: str) -> None:
    assert principal_of(identity, user_agent)[1] == expected


def test_agent_markers_match_at_word_starts_only() -> None:
    assert {"agent", "bedrock", "langchain", "autogen", "crewai", "mcp", "claude", "openai", "gpt"} <= set(
        AGENT_MARKERS)
    assert agent_marker("my-GPT-runner") == "gpt"
    assert agent_marker("mcpherson") is None and agent_marker("gptools") is None
    assert agent_marker("session", "gpt4o-runner") == "gpt"
    assert agent_marker("AgentCore-Runtime") == "agent"
    assert agent_marker("AmazonSSMAgentRole") is None


def trail(records: list[Any]) -> str:
    return json.dumps({"Records": records})


def run_event(n: int, **over: Any) -> dict[str, Any]:
    event = {
        "eventVersion": "1.09", "eventTime": "2026-11-20T10:00:00Z", "eventSource": "ec2.amazonaws.com",
        "eventName": "RunInstances", "awsRegion": "us-east-1", "recipientAccountId": ACCOUNT,
        "eventID": f"e-{n}", "userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::{ACCOUNT}:user/bob"},
        "requestParameters": {"instanceType": "g5.xlarge"},
        "responseElements": {"instancesSet": {"items": [{"instanceId": f"i-{n:017x}", "instanceType": "g5.xlarge"}]}},
    }
    event.update(over)
    return event


def test_file_without_records_is_a_problem(bucket: Bucket, problems_of: Problems) -> None:
    path = bucket.put(TRAIL_KEY, json.dumps({"Events": []}))
    tables, report = bucket.scan()
    assert problems_of(report, path) == [(None, "CloudTrail file has no 'Records' list (found: Events)", 0)]
    assert report.sources[0].kind == "cloudtrail"
    assert tables.activity.empty


def test_truncated_trail_keeps_the_complete_events(bucket: Bucket, problems_of: Problems) -> None:
    text = trail([run_event(1), run_event(2), run_event(3)])
    cut = text[: text.index('"e-3"')]
    path = bucket.put(TRAIL_KEY, cut)
    tables, report = bucket.scan()
    [(line, reason, records)] = problems_of(report, path)
    assert reason.startswith("JSON is truncated or malformed (") and "kept the 2 complete events" in reason
    assert (line, records) == (3, 1)
    assert sorted(tables.activity["event_id"]) == ["e-1", "e-2"]


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"eventTime": "yesterday"}, "RunInstances: eventTime 'yesterday' is missing or not a time"),
        ({"eventTime": "1999-12-31T23:00:00Z"}, "RunInstances: eventTime 1999-12-31T23:00:00Z is before 2000"),
        ({"eventTime": "2099-01-01T00:00:00Z"},
         "RunInstances: eventTime 2099-01-01T00:00:00Z is more than a year in the future"),
        ({"recipientAccountId": None},
         "RunInstances: neither recipientAccountId nor userIdentity.accountId is present"),
        ({"responseElements": {"instancesSet": ["i-1"]}}, "RunInstances has fields of unexpected shape"),
    ],
)
def test_bad_event_is_a_problem_at_its_record_number(bucket: Bucket, problems_of: Problems, over: dict[str, Any],
                                                     reason: str) -> None:
    path = bucket.put(TRAIL_KEY, trail([run_event(1), run_event(2, **over), run_event(3)]))
    tables, report = bucket.scan()
    [(line, got, records)] = problems_of(report, path)
    assert got.startswith(reason) and (line, records) == (2, 1)
    assert sorted(tables.activity["event_id"]) == ["e-1", "e-3"]


def test_same_event_in_two_trails_counts_once(bucket: Bucket) -> None:
    bucket.put(TRAIL_KEY, trail([run_event(1)]))
    bucket.put(TRAIL_KEY.replace("o-abc123def4/", ""), gzip.decompress(gzip.compress(trail([run_event(1)]).encode())))
    tables, report = bucket.scan()
    assert len(report.sources) == 2
    assert len(tables.activity) == 1 and len(tables.inventory) == 1
