"""The scan Lambda's retraining path: the module's daily schedule invokes the scan function with
`{"action": "retrain"}`, and the handler retrains the baseline model from the live clouds' history (moto's S3,
holding a simulated organisation, reached through the real boto3 clients) and keeps it beside the state,
without scanning. Other events keep scanning; an unknown action and a configuration without a live cloud fail
loudly, so the invocation counts in the function's Errors metric."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from spendwatch.config import ConfigError
from spendwatch.lambda_handlers import scan_handler
from spendwatch.models.model_store import StoredModel
from spendwatch.simulate import simulate
from spendwatch.store import Store
from tests.connectors.aws.moto_kit import REGIONS, ROLE, upload

CONTEXT = SimpleNamespace(function_name="spendwatch-scheduled-scan", aws_request_id="req-retrain",
                          invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:spendwatch-scan")
# What the Terraform module's retrain schedule sends (deploy/terraform/aws/main.tf, aws_scheduler_schedule.retrain).
RETRAIN_EVENT = {"source": "spendwatch.schedule", "action": "retrain"}


def aws_config(accounts: tuple[str, ...], endpoint: str) -> str:
    return f"""
[aws]
accounts = {list(accounts)!r}
role_name = "{ROLE}"
regions = {list(REGIONS)!r}
trail = "s3://acme-org-trail/"
flow_logs = "s3://acme-flow-logs/"
dns_logs = "s3://acme-dns-logs/"
cur = "s3://acme-billing/cur2/acme-cur2/"
metrics = "s3://acme-metrics/metric-streams/"
endpoint_url = "{endpoint}"
max_attempts = 4
""".replace("'", '"')


def test_retrain_event_trains_the_model_beside_the_state_and_scans_nothing(tmp_path: Path, aws: str) -> None:
    # Two days: the newest day is held out, the day before is the baseline (well over min_baseline_rows).
    truth = simulate(tmp_path / "org", days=2, instances=16)
    upload(aws, tmp_path / "org")
    state = tmp_path / "state.db"
    env = {"SPENDWATCH_CONFIG_TOML": aws_config(truth.accounts, aws), "SPENDWATCH_STATE": str(state)}

    out = scan_handler(RETRAIN_EVENT, CONTEXT, environ=env)

    assert out["action"] == "retrain" and out["trained"] is True, out
    with Store(state) as store:
        model = StoredModel.beside(store)
        assert model is not None
        loaded = model.load()
        assert store.runs() == []  # a retrain is not a scan: no run recorded, no watermark advanced
    assert loaded is not None and loaded.rows == out["rows"] > 200
    assert loaded.resources == out["resources"] > 0


def test_unknown_action_fails_and_retrain_needs_a_live_cloud(tmp_path: Path) -> None:
    env = {"SPENDWATCH_CONFIG_TOML": f'[serve]\ndata = "{tmp_path}"\n', "SPENDWATCH_STATE": str(tmp_path / "s.db")}
    with pytest.raises(ValueError, match="'action': 'retrian'"):
        scan_handler({"action": "retrian"}, CONTEXT, environ=env)
    with pytest.raises(ConfigError, match="retraining needs a live cloud"):
        scan_handler(RETRAIN_EVENT, CONTEXT, environ=env)
    assert not (tmp_path / "s.db").exists()  # neither touched the state
