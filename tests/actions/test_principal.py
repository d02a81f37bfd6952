"""Containing the launching principal: deny-all bounded by token issue time, keys deactivated, all undone."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from spendwatch.actions import ActionSettings, Outcome, Target, execute
from spendwatch.actions.aws import PRINCIPAL_POLICY, AwsContainPrincipal, AwsReleasePrincipal
from spendwatch.store import Store

from .conftest import ROLE, World

ACCOUNT = "123456789012"


def contain(world: World, store: Store, arn: str, *, apply: bool = True,
            protected_ids: frozenset[str] = frozenset()) -> Outcome:
    action = AwsContainPrincipal(clients=world.clients, store=store, actor="test",
                                 settings=ActionSettings(protected_ids=protected_ids))
    return execute(action, Target("aws", arn), apply=apply)


def release(world: World, store: Store, arn: str) -> Outcome:
    return execute(AwsReleasePrincipal(clients=world.clients, store=store, actor="test"), Target("aws", arn),
                   apply=True)


def keys(world: World, user: str) -> dict[str, str]:
    return {k["AccessKeyId"]: k["Status"] for k in world.iam.list_access_keys(UserName=user)["AccessKeyMetadata"]}


def test_user_keys_deactivated_and_policy_added_then_exactly_undone(world: World, store: Store) -> None:
    world.iam.create_user(UserName="ci-bot")
    active = world.iam.create_access_key(UserName="ci-bot")["AccessKey"]["AccessKeyId"]
    retired = world.iam.create_access_key(UserName="ci-bot")["AccessKey"]["AccessKeyId"]
    world.iam.update_access_key(UserName="ci-bot", AccessKeyId=retired, Status="Inactive")
    arn = f"arn:aws:iam::{ACCOUNT}:user/ci-bot"

    dry = contain(world, store, arn, apply=False)
    assert dry.status == "planned" and keys(world, "ci-bot") == {active: "Active", retired: "Inactive"}

    outcome = contain(world, store, arn)
    assert outcome.status == "applied", outcome.message
    assert keys(world, "ci-bot") == {active: "Inactive", retired: "Inactive"}
    doc = world.iam.get_user_policy(UserName="ci-bot", PolicyName=PRINCIPAL_POLICY)["PolicyDocument"]
    if isinstance(doc, str):
        doc = json.loads(doc)
    cond = doc["Statement"][0]["Condition"]["DateLessThan"]["aws:TokenIssueTime"]
    assert doc["Statement"][0]["Effect"] == "Deny"
    assert abs((datetime.fromisoformat(cond) - datetime.now(UTC)).total_seconds()) < 60

    assert release(world, store, arn).status == "applied"
    assert keys(world, "ci-bot") == {active: "Active", retired: "Inactive"}  # the retired key stays retired
    assert world.iam.list_user_policies(UserName="ci-bot")["PolicyNames"] == []


def test_assumed_role_arn_contains_the_role(world: World, store: Store) -> None:
    outcome = contain(world, store, f"arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE}/agent-session")
    assert outcome.status == "applied"
    assert outcome.target.resource == f"arn:aws:iam::{ACCOUNT}:role/{ROLE}"
    assert PRINCIPAL_POLICY in world.iam.list_role_policies(RoleName=ROLE)["PolicyNames"]
    again = contain(world, store, f"arn:aws:iam::{ACCOUNT}:role/{ROLE}")
    assert again.status == "refused"
    assert release(world, store, f"arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE}/other").status == "applied"
    assert world.iam.list_role_policies(RoleName=ROLE)["PolicyNames"] == []


def test_refusals_change_nothing(world: World, store: Store) -> None:
    world.iam.create_user(UserName="moto")  # moto's caller identity is arn:aws:iam::123456789012:user/moto
    world.iam.create_user(UserName="admin", Tags=[{"Key": "spendwatch:protected", "Value": "true"}])
    world.iam.create_user(UserName="break-glass")
    cases = {
        f"arn:aws:iam::{ACCOUNT}:user/moto": "spendwatch runs as",
        f"arn:aws:iam::{ACCOUNT}:user/admin": "protected",
        f"arn:aws:iam::{ACCOUNT}:user/break-glass": "protected",
        f"arn:aws:iam::{ACCOUNT}:root": "account root",
        "arn:aws:iam::210987654321:user/elsewhere": "belongs to account 210987654321",
        f"arn:aws:iam::{ACCOUNT}:user/nobody": "no IAM user nobody",
        "not-an-arn": "not an IAM principal ARN",
    }
    for arn, why in cases.items():
        outcome = contain(world, store, arn, protected_ids=frozenset({"break-glass"}))
        assert outcome.status == "refused" and why in outcome.message, (arn, outcome.message)
    for user in ("moto", "admin", "break-glass"):
        assert world.iam.list_user_policies(UserName=user)["PolicyNames"] == []
    assert store.quarantines() == []


def test_release_refuses_a_principal_spendwatch_did_not_contain(world: World, store: Store) -> None:
    outcome = release(world, store, f"arn:aws:iam::{ACCOUNT}:role/{ROLE}")
    assert outcome.status == "refused" and "no active quarantine" in outcome.message
