"""key-then-launch: a new access key, then launches by the key's user."""

from __future__ import annotations

from spendwatch.models.rules import KeyThenLaunchRule

ADMIN = "arn:aws:iam::012345678901:role/admin"
USER = "arn:aws:iam::012345678901:user/backup-exporter"


def _rows(build, launch_after_min: float, principal: str = USER):
    key = {"time": build.at(0), "principal": ADMIN, "principal_type": "human", "action": "key_create",
           "resource": "AKIAEXAMPLE", "target": "backup-exporter"}
    run = {"time": build.at(launch_after_min), "principal": principal, "principal_type": "human",
           "action": "launch", "resource": "i-1", "instance_type": "g5.12xlarge", "region": "eu-central-1"}
    return build.activity([key, run])


def test_gpu_launch_by_the_new_keys_user_fires(build):
    hits = KeyThenLaunchRule().run(build.tables(activity=_rows(build, 90)))
    assert len(hits) == 1 and hits[0].principal == USER and hits[0].resource is None
    assert hits[0].belief == 0.45 and hits[0].facts["gpus"] == 4


def test_launch_long_after_or_by_someone_else_does_not_fire(build):
    assert KeyThenLaunchRule().run(build.tables(activity=_rows(build, 5 * 1440))) == []
    assert KeyThenLaunchRule().run(build.tables(activity=_rows(build, 90, principal=ADMIN))) == []
