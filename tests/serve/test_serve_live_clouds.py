"""`spendwatch serve` on a `[gcp]` configuration: the run goes through `pipeline.scan_live` (not `scan_aws`), and
the daily model job retrains from GCP's history into a PostgreSQL state.

The GCS fake serves a simulated GCP organisation's sink, billing and monitoring buckets through the real
google-cloud-storage client; `storage_endpoint` and `anonymous = true` in the TOML point the connector at it
(the keys exist for local fakes and private endpoints), so the file carries everything a real deployment's
would. `serve --once` is a real subprocess; the state arrives as $SPENDWATCH_DATABASE_URL, as the deployments
pass it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from fakes.gcs import FakeGcs  # noqa: E402
from fakes.raw_http import serve  # noqa: E402

from spendwatch.findings import Severity  # noqa: E402
from spendwatch.models.model_store import MODEL_NAME, StoredModel  # noqa: E402
from spendwatch.serve import ServeSettings, Service  # noqa: E402
from spendwatch.simulate import gcp as gsim  # noqa: E402
from spendwatch.store import ModelRecords, Store, Watermarks  # noqa: E402
from tests.store.postgres_server import fresh_schema  # noqa: E402


@pytest.fixture(scope="module")
def gcp_org(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """Three days of a GCP organisation: past the held-out newest day, enough resource-hours for a baseline."""
    root = tmp_path_factory.mktemp("gcp") / "exports"
    return root, gsim.simulate_gcp(root, seed=11, days=3.0, instances=24, write_truth=False)


def gcp_config(path: Path, gcs_url: str) -> Path:
    path.write_text(f"""
[serve]
port = 0
shutdown_grace_s = 5

[gcp]
logs = ["gs://{gsim.LOGS}/"]
billing = ["gs://{gsim.BILLING}/billing_export/"]
monitoring = ["gs://{gsim.MONITORING}/timeseries/"]
inventory = false
storage_endpoint = "{gcs_url}"
anonymous = true
""")
    return path


def serve_once(config: Path, env: dict[str, str]) -> tuple[int, list[dict[str, Any]], str]:
    done = subprocess.run([sys.executable, "-m", "spendwatch", "serve", "--once", "--config", str(config)],
                          capture_output=True, text=True, env={**os.environ, **env}, timeout=300, check=False)
    events = []
    for line in done.stderr.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            events.append({"event": "unparsed", "line": line})
    return done.returncode, events, done.stderr


def test_serve_once_scans_gcp_live_and_retrains_its_model_in_postgres(gcp_org: tuple[Path, Any], tmp_path: Path,
                                                                      postgres_url: str) -> None:
    root, truth = gcp_org
    gcs = FakeGcs()
    for bucket in (gsim.LOGS, gsim.BILLING, gsim.MONITORING):
        gcs.upload_tree(root / bucket, bucket)
    with serve(gcs) as gcs_url, fresh_schema(postgres_url) as url:
        config = gcp_config(tmp_path / "serve.toml", gcs_url)
        env = {"SPENDWATCH_DATABASE_URL": url, "SPENDWATCH_HOME": str(tmp_path / "home")}
        code, events, stderr = serve_once(config, env)
        assert code == 0, stderr[-3000:]
        [end] = [e for e in events if e.get("event") == "scan.end"]
        assert end["status"] == "ok" and not end["gaps"], end
        assert end["records"]["activity"] > 0 and end["records"]["flows"] > 0 and end["findings"] >= 1
        assert [e["target"] for e in events if e.get("event") == "serve.once"] == ["gcp"]
        with Store(url) as store:
            [run] = store.runs()
            assert run.source.startswith("gcp:") and run.complete  # scan_live's label, not scan_aws's "aws:"
            assert Watermarks(store).load("gcp") and not Watermarks(store).load("aws")
            found = {f.resource: f for f in store.findings(min_severity=Severity.INFO)}
        for incident in truth.incidents:
            for resource in incident.resources:
                assert resource in found and found[resource].severity >= Severity.MEDIUM, (incident.name, resource)
                assert found[resource].cloud == "gcp" and found[resource].principal == incident.principal

        # The daily model job, for a GCP target, into the PostgreSQL state (no file to keep it beside).
        service = Service(ServeSettings.load(config, environ=env), state=url)
        assert service.retrain_model() is True
        with Store(url) as store:
            saved = ModelRecords(store).get(MODEL_NAME)
            model = StoredModel.beside(store)
            assert saved is not None and model is not None
            loaded = model.load()
        assert loaded is not None and loaded.rows == saved.metadata["rows"] > 200
        assert not list(tmp_path.rglob("*.skops")) and not list(tmp_path.rglob("*.db"))

        again_code, again, stderr = serve_once(config, env)  # incremental: nothing new in the buckets
        assert again_code == 0, stderr[-3000:]
        [end] = [e for e in again if e.get("event") == "scan.end"]
        assert end["status"] == "ok" and end["new"] == 0


def test_serve_settings_refuse_a_data_directory_beside_a_live_cloud(tmp_path: Path) -> None:
    from spendwatch.config import ConfigError

    config = tmp_path / "serve.toml"
    config.write_text(f'[serve]\ndata = "{tmp_path}"\n[gcp]\nlogs = ["gs://acme-gcp-logs/"]\n')
    with pytest.raises(ConfigError, match=r"\[serve\].*data.*\[gcp\]"):
        ServeSettings.load(config, environ={})
    config.write_text('[serve]\nport = 0\n[gcp]\nlogs = ["not-a-bucket"]\n')
    with pytest.raises(ConfigError, match=r"logs"):  # checked at start-up, not at the first run
        ServeSettings.load(config, environ={})
    config.write_text('[serve]\nport = 0\n[aws]\n[gcp]\nlogs = ["gs://acme-gcp-logs/"]\n')
    settings = ServeSettings.load(config, environ={})
    assert settings.clouds == ("aws", "gcp") and settings.target == "aws+gcp"
    assert set(settings.live_configs()) == {"aws", "gcp"}


def test_serve_slack_acts_through_the_member_roles_the_environment_names(tmp_path: Path) -> None:
    # `serve` is the container deployment of what the Lambda does: the same variables name the quarantine role
    # (with its trust's external ID) and the approver role assumed in a finding's or principal's account.
    config = tmp_path / "serve.toml"
    config.write_text(f'[serve]\ndata = "{tmp_path}"\nport = 0\n[slack]\nchannel = "C0ALERTS"\n'
                      'allowed_users = ["U0ALICE"]\n')
    env = {"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_SIGNING_SECRET": "s" * 32,
           "SPENDWATCH_AWS_QUARANTINE_ROLE_NAME": "spendwatch-quarantine", "SPENDWATCH_AWS_EXTERNAL_ID": "acme-7f3a",
           "SPENDWATCH_AWS_APPROVER_ROLE_NAME": "spendwatch-approver"}
    slack = ServeSettings.load(config, environ=env).slack
    assert slack is not None
    assert (slack.quarantine_role, slack.external_id, slack.approver_role) == (
        "spendwatch-quarantine", "acme-7f3a", "spendwatch-approver")
    bare = ServeSettings.load(config, environ={k: env[k] for k in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET")}).slack
    assert bare is not None and (bare.quarantine_role, bare.external_id, bare.approver_role) == (None, None, None)

