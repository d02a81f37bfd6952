from __future__ import annotations

import boto3


def test_moto_server_is_real_and_resets(aws: str) -> None:
    ec2 = boto3.client("ec2", endpoint_url=aws, region_name="us-east-1")
    ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1, InstanceType="g5.xlarge")
    reservations = ec2.describe_instances()["Reservations"]
    assert reservations[0]["Instances"][0]["InstanceType"] == "g5.xlarge"
    assert aws.startswith("http://127.0.0.1:")


def test_state_does_not_leak_between_tests(aws: str) -> None:
    ec2 = boto3.client("ec2", endpoint_url=aws, region_name="us-east-1")
    assert ec2.describe_instances()["Reservations"] == []
