"""The container image definition, checked statically (no docker daemon here): stages, user, caches, paths."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in text.splitlines():
        if line.strip().startswith("#") and not buf:
            continue
        buf += line.rstrip("\\").strip() + " " if line.rstrip().endswith("\\") else line.strip()
        if line.rstrip().endswith("\\"):
            continue
        if buf.strip():
            op, _, args = buf.strip().partition(" ")
            out.append((op.upper(), args.strip()))
        buf = ""
    return out


def stages() -> list[tuple[str, list[tuple[str, str]]]]:
    result: list[tuple[str, list[tuple[str, str]]]] = []
    for op, args in instructions((ROOT / "Dockerfile").read_text()):
        if op == "FROM":
            parts = args.split()
            result.append((parts[-1] if "AS" in [p.upper() for p in parts] else parts[0], []))
        result[-1][1].append((op, args))
    return result


def test_multi_stage_wheel_into_slim_runtime_as_non_root() -> None:
    built = stages()
    assert [name for name, _ in built] == ["builder", "runtime"]
    runtime = built[-1][1]
    assert runtime[0] == ("FROM", "python:3.11-slim AS runtime")
    builder_runs = " ".join(a for op, a in built[0][1] if op == "RUN")
    assert "pip wheel" in builder_runs and "--wheel-dir /wheels" in builder_runs
    copies = [a for op, a in runtime if op == "COPY"]
    assert copies == ["--from=builder /wheels /wheels"], copies  # nothing but the wheel reaches the runtime
    runs = " ".join(a for op, a in runtime if op == "RUN")
    assert "/wheels/spendwatch-" in runs and "rm -rf /wheels" in runs
    for run in [a for _, s in built for op, a in s if op == "RUN"]:
        if "pip " in run:
            assert "--no-cache-dir" in run, run
    assert not re.search(r"apt-get|gcc|build-essential|g\+\+|make ", runs), runs
    users = [a for op, a in runtime if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), users
    assert [op for op, _ in runtime].index("USER") > max(i for i, (op, _) in enumerate(runtime) if op == "RUN")


def test_entrypoint_healthcheck_and_sources() -> None:
    runtime = dict((op, a) for op, a in stages()[-1][1] if op in ("ENTRYPOINT", "CMD", "HEALTHCHECK", "EXPOSE"))
    assert json.loads(runtime["ENTRYPOINT"]) == ["spendwatch"]
    assert json.loads(runtime["CMD"])[0] == "serve"
    assert "/healthz" in runtime["HEALTHCHECK"] and "CMD" in runtime["HEALTHCHECK"]
    assert runtime["EXPOSE"] == "8080"
    for op, args in stages()[0][1]:
        if op == "COPY" and not args.startswith("--from"):
            for src in shlex.split(args)[:-1]:
                assert (ROOT / src).exists(), src
    ignored = (ROOT / ".dockerignore").read_text().split()
    for must in (".git", ".venv", "tests"):
        assert must in ignored
    for needed in ("spendwatch", "connectors", "models", "pyproject.toml", "README.md"):
        assert needed not in ignored
