"""The scheduled-scan Lambda on PostgreSQL state, the URL arriving as the AWS module passes it: the name of an
SSM parameter (SPENDWATCH_DATABASE_URL_SSM_PARAMETER), read once and decrypted, here from moto's SSM."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import boto3

from spendwatch.lambda_handlers import scan_handler
from spendwatch.simulate import simulate
from spendwatch.store import Store
from tests.store.postgres_server import fresh_schema

CONTEXT = SimpleNamespace(function_name="spendwatch-scan", aws_request_id="req-1")


def test_scan_handler_stores_in_postgres_from_an_ssm_url(tmp_path: Path, aws: str, postgres_url: str) -> None:
    simulate(tmp_path / "data", days=1, instances=16)
    with fresh_schema(postgres_url) as url:
        ssm = boto3.client("ssm", region_name="us-east-1", endpoint_url=aws)
        ssm.put_parameter(Name="/spendwatch/database-url", Value=url, Type="SecureString")
        env = {"SPENDWATCH_CONFIG_TOML": f'[serve]\ndata = "{tmp_path / "data"}"\nstate = "{tmp_path / "no.db"}"\n',
               "SPENDWATCH_DATABASE_URL_SSM_PARAMETER": "/spendwatch/database-url"}
        first = scan_handler({}, CONTEXT, environ=env, ssm=ssm)
        again = scan_handler({}, CONTEXT, environ=env, ssm=ssm)
        assert first["status"] == again["status"] == "ok" and first["findings"] == 3
        with Store(url) as store:
            assert store.count() == 3
            assert [r.new_findings for r in store.runs()] == [0, 3]  # the second run found nothing new
        assert not (tmp_path / "no.db").exists()  # the URL wins over the config file's `state`
