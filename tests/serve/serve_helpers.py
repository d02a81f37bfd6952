"""Shared helpers for the serve tests: a simulated org, a moto instance with its finding, the serve process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:  # --import-mode=importlib: reach tests/slack's helpers as a package
    sys.path.insert(0, str(TESTS))

from slack.conftest import ALICE, CHANNEL, SECRET, make_finding  # noqa: E402
from slack.fake_slack import TOKEN, FakeSlack  # noqa: E402

from spendwatch.actions.aws import AwsClients  # noqa: E402
from spendwatch.findings import Finding  # noqa: E402

__all__ = ["ALICE", "CHANNEL", "SECRET", "TOKEN", "FakeSlack", "ServeProcess", "moto_instance", "write_config"]
HELD = ("20261120T11", "20261120T12")  # the last two hours' exports, held back to arrive "later"


def hold_back(data: Path, held: Path) -> int:
    """Move the last hours' files out of `data` (to put back later, as new exports arrive)."""
    n = 0
    for p in sorted(data.rglob("*")):
        if p.is_file() and any(h in p.name for h in HELD):
            dest = held / p.relative_to(data)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(p, dest)
            n += 1
    return n


def put_back(data: Path, held: Path) -> None:
    for p in sorted(held.rglob("*")):
        if p.is_file():
            dest = data / p.relative_to(held)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(p, dest)


def moto_instance(aws: str) -> tuple[AwsClients, str, Finding]:
    """A GPU instance on moto and a finding for it (the simulated org's accounts do not exist on moto)."""
    clients = AwsClients.build(region="us-east-1", endpoint_url=aws)
    ec2 = clients.ec2
    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.40.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    web = ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc)["GroupId"]
    iid = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1, InstanceType="g5.xlarge",
                            NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": subnet, "Groups": [web]}],
                            )["Instances"][0]["InstanceId"]
    return clients, iid, make_finding(iid)


def write_config(path: Path, *, data: Path, state: Path, slack_url: str, aws: str | None = None,
                 interval: float = 2.0) -> Path:
    path.write_text(f"""
[serve]
data = "{data}"
state = "{state}"
interval_s = {interval}
jitter_s = 0.2
misfire_grace_s = 30
port = 0
alert_min_severity = "medium"
shutdown_grace_s = 5

[slack]
channel = "{CHANNEL}"
allowed_users = ["{ALICE}"]
api_url = "{slack_url}"
{f'aws_endpoint_url = "{aws}"' if aws else ""}
""")
    return path


@dataclass
class ServeProcess:
    """`spendwatch serve` as a real subprocess, its JSON log lines collected as they come."""

    config: Path
    home: Path
    events: list[dict[str, Any]] = field(default_factory=list)

    def start(self) -> ServeProcess:
        env = {**os.environ, "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET,
               "SPENDWATCH_HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "spendwatch", "serve", "--config", str(self.config)],
                                     stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True)
        self._lock = threading.Lock()
        self.raw: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._lock:
                self.raw.append(line)
                try:
                    self.events.append(json.loads(line))
                except ValueError:
                    self.events.append({"event": "unparsed", "line": line})

    def of(self, event: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e.get("event") == event]

    def wait_for(self, event: str, count: int = 1, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.of(event)
            if len(found) >= count:
                return found
            if self.proc.poll() is not None:
                time.sleep(0.2)  # let the reader drain
                break
            time.sleep(0.05)
        raise AssertionError(f"{count} x {event} not seen; log:\n" + "".join(self.raw[-40:]))

    @property
    def port(self) -> int:
        return int(self.wait_for("serve.started")[0]["port"])

    def terminate(self, timeout: float = 10.0) -> tuple[int, float]:
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        return rc, time.monotonic() - t0

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
