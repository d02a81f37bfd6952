"""Test kit for the AWS connector: moto in server mode, the simulated organisation in it, and a fault proxy.

One moto server process per test session (a subprocess: the reads are CPU-bound on moto's side, and in a
separate process they do not compete with the test for the GIL) holds the simulated organisation in S3
buckets laid out as `spendwatch.simulate` writes them, plus a few EC2 instances reached by assume-role.
Tests that change server state use buckets and accounts of their own. `FaultProxy` sits between boto3 and
moto on 127.0.0.1 and answers chosen requests itself: throttling, 5xx, access denied.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from spendwatch.connectors.aws import AwsConfig, S3Location
from spendwatch.pipeline import ScanResult, scan_aws, scan_directory
from spendwatch.simulate import Truth, simulate
from spendwatch.store import Store

ROLE = "spendwatch-read"
REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-1", "ap-northeast-1", "us-west-2")
ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
       "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """`python -m moto.server` on 127.0.0.1, credentials for boto3 in the environment."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in ENV.items():
            mp.setenv(k, v)
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.time() > deadline:
                    proc.kill()
                    raise
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def client(endpoint: str, service: str, account: str | None = None, region: str = "us-east-1") -> Any:
    """A plain boto3 client for setting up moto, in `account` through the read role (moto takes any)."""
    import boto3

    if account is None:
        return boto3.client(service, endpoint_url=endpoint, region_name=region)
    creds = boto3.client("sts", endpoint_url=endpoint, region_name=region).assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/{ROLE}", RoleSessionName="setup")["Credentials"]
    return boto3.client(service, endpoint_url=endpoint, region_name=region, aws_access_key_id=creds["AccessKeyId"],
                        aws_secret_access_key=creds["SecretAccessKey"], aws_session_token=creds["SessionToken"])


def upload(endpoint: str, root: Path, *, bucket_map: Callable[[str], str] = lambda b: b) -> int:
    """Every file under `root` into the bucket named by its top folder, key = the rest of its path."""
    s3 = client(endpoint, "s3")
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and p.parent != root]
    for bucket in sorted({bucket_map(p.relative_to(root).parts[0]) for p in files}):
        s3.create_bucket(Bucket=bucket)

    def put(p: Path) -> None:
        rel = p.relative_to(root)
        s3.put_object(Bucket=bucket_map(rel.parts[0]), Key="/".join(rel.parts[1:]), Body=p.read_bytes())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, files))
    return len(files)


@dataclass
class Org:
    endpoint: str
    root: Path
    truth: Truth
    config: AwsConfig
    gpu_instance: str  # launched in moto's EC2 (account 234567890123, us-east-1), seen only through the API
    reference: ScanResult  # one uninterrupted scan of everything
    files: ScanResult  # the files connector on the same data
    calls: list[str]  # IAM action of every call the reference scan made


def org_config(endpoint: str, truth: Truth, **kw: Any) -> AwsConfig:
    base = AwsConfig(accounts=tuple(truth.accounts), role_name=ROLE, regions=REGIONS,
                     trail=S3Location("acme-org-trail"), flow_logs=S3Location("acme-flow-logs"),
                     dns_logs=S3Location("acme-dns-logs"), cur=S3Location("acme-billing", "cur2/acme-cur2/"),
                     metrics=S3Location("acme-metrics", "metric-streams/"), endpoint_url=endpoint, max_attempts=4)
    return replace(base, **kw)


def recorder(calls: list[str]) -> tuple[str, Callable[..., None]]:
    def hook(model: Any, **_: Any) -> None:
        calls.append(f"{model.service_model.service_name}:{model.name}")
    return ("before-call.*.*", hook)


@pytest.fixture(scope="session")
def org(moto_server: str, tmp_path_factory: pytest.TempPathFactory) -> Org:
    root = tmp_path_factory.mktemp("org")
    truth = simulate(root, days=1.5, instances=30)
    upload(moto_server, root)
    ec2 = client(moto_server, "ec2", "234567890123")
    gpu = ec2.run_instances(ImageId="ami-12c6146b", InstanceType="g5.xlarge", MinCount=1, MaxCount=1,
                            TagSpecifications=[{"ResourceType": "instance",
                                                "Tags": [{"Key": "team", "Value": "ml"}]}])["Instances"][0]
    config = org_config(moto_server, truth)
    calls: list[str] = []
    with Store(tmp_path_factory.mktemp("state") / "state.db") as store:
        reference = scan_aws(config, store=store, keep_tables=True, hooks=[recorder(calls)])
    files = scan_directory(root, store=None, keep_tables=True)
    return Org(moto_server, root, truth, config, gpu["InstanceId"], reference, files, calls)


# -- faults between boto3 and moto --------------------------------------------------------------------------

Fault = Callable[[str, str, bytes], tuple[int, bytes] | None]  # (method, path, body) -> (status, body) or None

_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of moto. Each request is offered to `fault` first; a non-None
    answer is sent instead of forwarding (and counted in `faults`)."""

    def __init__(self, target: str, fault: Fault) -> None:
        self.target = target.removeprefix("http://")
        self.fault = fault
        self.faults = 0
        self.requests = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy._lock:
                    proxy.requests += 1
                    answer = proxy.fault(self.command, self.path, body)
                    if answer is not None:
                        proxy.faults += 1
                if answer is not None:
                    status, payload = answer
                    self.send_response(status)
                    self.send_header("Content-Type", "text/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.target, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in _HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def s3_error(code: str, message: str) -> bytes:
    return f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()


def query_error(code: str, message: str) -> bytes:
    """An error as the Query protocol (STS) writes it."""
    return (f'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
            f"<Code>{code}</Code><Message>{message}</Message></Error><RequestId>x</RequestId></ErrorResponse>"
            ).encode()


