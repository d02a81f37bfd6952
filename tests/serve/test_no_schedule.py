"""`spendwatch serve --no-schedule`: the Slack endpoint and /healthz, no scans: the service half of a deployment whose
scans run as a separate job. Two such processes share one PostgreSQL state (as two Cloud Run instances would,
the URL arriving in $SPENDWATCH_DATABASE_URL): a double click sent to both quarantines once, and no scan runs in
either."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from serve_helpers import ALICE, SECRET, TOKEN, FakeSlack, ServeProcess, moto_instance, write_config
from slack.conftest import block_actions, encode, send

from spendwatch.sinks.slack import SlackAlerter, make_client
from spendwatch.store import Store
from tests.store.postgres_server import fresh_schema


class EndpointProcess(ServeProcess):
    """`spendwatch serve --no-schedule` with the state's URL in the environment."""

    def start_with(self, env: dict[str, str]) -> EndpointProcess:
        full = {**os.environ, "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET,
                "SPENDWATCH_HOME": str(self.home), "PYTHONUNBUFFERED": "1", **env}
        self.proc = subprocess.Popen([sys.executable, "-m", "spendwatch", "serve", "--no-schedule", "--config",
                                      str(self.config)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     env=full, text=True)
        self._lock = threading.Lock()
        self.raw: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        return self


def health(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_two_endpoint_processes_on_postgres_quarantine_once(tmp_path: Path, aws: str, postgres_url: str) -> None:
    fake = FakeSlack().start()
    procs: list[EndpointProcess] = []
    try:
        with fresh_schema(postgres_url) as url:
            clients, iid, finding = moto_instance(aws)
            with Store(url) as store:  # what the scan job stored and alerted
                store.upsert([finding], now=finding.detected_at)
                posted = SlackAlerter(make_client(TOKEN, base_url=fake.base_url), channel="C0ALERTS",
                                      store=store).notify(finding)
            unused = tmp_path / "config-state.db"  # the environment's URL wins over the file's `state`
            config = write_config(tmp_path / "serve.toml", data=tmp_path / "no-data-needed", state=unused,
                                  slack_url=fake.base_url, aws=aws)
            procs = [EndpointProcess(config, tmp_path / f"home{i}").start_with({"SPENDWATCH_DATABASE_URL": url})
                     for i in range(2)]
            ports = [p.port for p in procs]
            started = [p.wait_for("serve.started")[0] for p in procs]
            assert all(s["scheduled"] is False and ":***@" not in s["state"] for s in started)

            code, body = health(ports[0])
            assert code == 200 and body["scheduled"] is False and body["last_stored_run"] is None, body

            bodies = [encode(block_actions("sw_quarantine", finding.id, user=ALICE, channel=posted.channel,
                                           ts=posted.ts)) for _ in ports]  # two clicks: two distinct requests
            answers: list[int] = []

            def click(port: int, body: bytes) -> None:
                answers.append(send(f"http://127.0.0.1:{port}/slack/events", body)[0])

            threads = [threading.Thread(target=click, args=pb) for pb in zip(ports, bodies, strict=True)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert answers == [200, 200]
            deadline = time.monotonic() + 30
            with Store(url) as store:
                while time.monotonic() < deadline:
                    acted = [e for e in store.audit_log() if e.action == "slack.quarantine"]
                    if len(acted) == 2:
                        break
                    time.sleep(0.1)
                assert sorted(e.outcome for e in acted) == ["applied", "ignored"], [(e.outcome, e.description)
                                                                               for e in acted]
                assert len(store.quarantines()) == 1
                assert store.active_quarantine(cloud="aws", account=finding.account, resource=iid) is not None
            inst = clients.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
            assert any(t["Key"].startswith("spendwatch") for t in inst.get("Tags", [])), inst.get("Tags")
            assert not unused.exists()
        for p in procs:
            rc, _ = p.terminate()
            assert rc == 0, "".join(p.raw[-10:])
        for p in procs:  # no scan and no model ran; the approval sweep did, with nothing due (test_sweep_modes.py)
            assert not [e for e in p.events if str(e.get("event", "")).startswith(("scan.", "model.", "approvals."))]
            assert p.of("shutdown.done")
    finally:
        for p in procs:
            if p.proc.poll() is None:
                p.kill()
        fake.stop()


def test_health_is_503_while_the_state_cannot_be_opened(tmp_path: Path) -> None:
    config = tmp_path / "serve.toml"
    config.write_text(f'[serve]\ndata = "{tmp_path}"\nport = 0\n')  # no [slack]: /healthz alone
    sp = EndpointProcess(config, tmp_path / "home").start_with(
        {"SPENDWATCH_STATE": "postgresql://spendwatch:hunter2@127.0.0.1:9/none?connect_timeout=2"})
    try:
        code, body = health(sp.port)
        assert code == 503 and body["status"] == "failed" and "state unreachable" in body["error"], body
        assert "hunter2" not in json.dumps(body)
    finally:
        rc, _ = sp.terminate()
    assert rc == 0


@pytest.mark.parametrize("extra", [["--once", "--no-schedule"]])
def test_once_and_no_schedule_exclude_each_other(tmp_path: Path, extra: list[str]) -> None:
    config = tmp_path / "serve.toml"
    config.write_text(f'[serve]\ndata = "{tmp_path}"\n')
    done = subprocess.run([sys.executable, "-m", "spendwatch", "serve", "--config", str(config), *extra],
                          capture_output=True, text=True, env={**os.environ, "SPENDWATCH_HOME": str(tmp_path)},
                          check=False)
    assert done.returncode == 2 and "exclude each other" in done.stderr
