"""The container image and `spendwatch serve` agree: the HEALTHCHECK asks the port serve listens on (both read
SPENDWATCH_PORT, which the image sets), serve listens on every interface in the image, and the image carries
the Lambda runtime interface client as an extra, not as a core dependency."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from test_dockerfile import ROOT, stages

from spendwatch.config import ConfigError
from spendwatch.serve import ServeSettings


def runtime() -> list[tuple[str, str]]:
    return stages()[-1][1]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for op, args in runtime():
        if op == "ENV":
            for item in args.replace("\\", " ").split():
                key, _, value = item.partition("=")
                env[key] = value
    return env


def test_image_sets_the_port_the_healthcheck_asks_and_exposes() -> None:
    env = image_env()
    assert env["SPENDWATCH_HOST"] == "0.0.0.0"
    expose = next(a for op, a in runtime() if op == "EXPOSE")
    assert env["SPENDWATCH_PORT"] == expose == "8080"
    check = next(a for op, a in runtime() if op == "HEALTHCHECK")
    assert "os.environ.get('SPENDWATCH_PORT', '8080')" in check


def test_the_environment_overrides_the_configured_port_and_host() -> None:
    data = {"serve": {"data": "/x", "port": 9000, "host": "127.0.0.1"}}
    settings = ServeSettings.from_dict(data, environ={"SPENDWATCH_PORT": "8080", "SPENDWATCH_HOST": "0.0.0.0"})
    assert (settings.host, settings.port) == ("0.0.0.0", 8080)
    assert ServeSettings.from_dict(data, environ={}).port == 9000
    with pytest.raises(ConfigError, match="SPENDWATCH_PORT"):
        ServeSettings.from_dict(data, environ={"SPENDWATCH_PORT": "http"})
    with pytest.raises(ConfigError, match="unknown key"):  # the file is still checked when the env overrides
        ServeSettings.from_dict({"serve": {"data": "/x", "prot": 1}}, environ={"SPENDWATCH_PORT": "8080"})


def test_the_healthcheck_command_reaches_serve_on_the_same_port(tmp_path: Path) -> None:
    """The image's HEALTHCHECK command, run as written, against `serve --no-schedule` given the same variable."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    config = tmp_path / "serve.toml"
    config.write_text(f'[serve]\ndata = "{tmp_path}"\nport = 1\n')  # the variable wins over the file's port
    env = {**os.environ, "SPENDWATCH_PORT": port, "SPENDWATCH_HOST": "127.0.0.1",
           "SPENDWATCH_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, "-m", "spendwatch", "serve", "--no-schedule", "--config", str(config)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # wait until it says it listens
            event = json.loads(line)
            if event.get("event") == "serve.started":
                assert event["port"] == int(port)
                break
        check = json.loads(next(a for op, a in runtime() if op == "HEALTHCHECK").split("CMD", 1)[1])
        assert check[0] == "python"
        done = subprocess.run([sys.executable, *check[1:]], env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
    finally:
        proc.terminate()
        proc.wait(20)


def test_lambda_runtime_client_is_an_extra_installed_in_the_image() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("awslambdaric") for d in project["optional-dependencies"]["lambda"])
    assert not any(d.startswith("awslambdaric") for d in project["dependencies"])
    installs = " ".join(a for op, a in runtime() if op == "RUN")
    assert "[all,lambda]" in installs
