"""A throwaway PostgreSQL server for tests: initdb into a fresh directory, start it on a free loopback port,
stop it and delete the directory afterwards.

One module for both users: `.ci/run` calls it as a script (`python3 tests/store/postgres_server.py start DIR`
prints the URL; `... stop DIR` stops and removes it; `... find` says whether the binaries are here) before
`make test`, and the `postgres_url` fixture in
tests/conftest.py imports it when $SPENDWATCH_TEST_POSTGRES_URL is not set. So a local run and CI start the
server the same way. Standard library only: .ci/run runs it with the system Python, before the venv exists.

initdb refuses to run as root, so as root every server command runs as the `postgres` user (Debian's package
creates it) through `runuser`, and the directory is handed to that user. The server is for tests only: trust
authentication on 127.0.0.1, and fsync off (a crashed test server is thrown away, not recovered).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SERVER_USER = "postgres"
START_TRIES = 3


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here, or the server would not start."""


def find_bin_dir() -> Path | None:
    """The directory holding initdb and pg_ctl: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(candidates[-1]).parent if candidates else None


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    if shutil.which("runuser") is None:
        raise PostgresUnavailable("running as root and `runuser` is missing: initdb cannot run as root")
    return ["runuser", "-u", SERVER_USER, "--", *cmd]


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(_as_server_user(cmd), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PostgresUnavailable(f"{what} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(base: Path | None = None) -> str:
    """Create and start a server under `base` (default: a new directory in the system temp dir); its URL.

    The directory must not be under a root-only path when running as root: the server runs as `postgres`.
    """
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise PostgresUnavailable("no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin "
                                  "(Debian: apt-get install postgresql)")
    base = Path(base) if base is not None else Path(tempfile.mkdtemp(prefix="spendwatch-pg-"))
    base.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        try:
            shutil.chown(base, user=SERVER_USER)
        except LookupError as exc:
            raise PostgresUnavailable(f"running as root and there is no `{SERVER_USER}` user: {exc}") from exc
    data = base / "data"
    _run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale",
          "--no-sync"], "initdb")
    last = ""
    for _ in range(START_TRIES):  # the port is free when picked; another process may take it before we bind
        port = _free_port()
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={base} -c fsync=off "
                   f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        try:
            _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w", "-t", "60",
                  "-o", options, "start"], "pg_ctl start")
        except PostgresUnavailable as exc:
            last = f"{exc}; log: {_tail(base / 'server.log')}"
            continue
        (base / "url").write_text(url := f"postgresql://postgres@127.0.0.1:{port}/postgres")
        return url
    raise PostgresUnavailable(last)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop(base: Path) -> None:
    """Stop the server started under `base` (immediately: its data is thrown away) and delete the directory."""
    bin_dir = find_bin_dir()
    data = Path(base) / "data"
    if bin_dir is not None and (data / "postmaster.pid").exists():
        subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                       capture_output=True, check=False)
    shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[1] == "find":
        found = find_bin_dir()
        if found is not None:
            print(found)
        return 0 if found is not None else 1
    if len(argv) != 3 or argv[1] not in ("start", "stop"):
        print("usage: postgres_server.py find | start DIR | stop DIR", file=sys.stderr)
        return 2
    try:
        if argv[1] == "start":
            print(start(Path(argv[2])))
        else:
            stop(Path(argv[2]))
    except PostgresUnavailable as exc:
        print(f"postgres_server: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))


# -- for the pytest fixtures in tests/conftest.py -----------------------------------------------------------


def session_server() -> Iterator[str]:
    """The admin URL of a real PostgreSQL for one test session (module doc). Skips when none can be had, but
    fails when $CI is set: CI must never pass by skipping the PostgreSQL half of the store tests."""
    import pytest

    url = os.environ.get("SPENDWATCH_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    base = Path(tempfile.mkdtemp(prefix="spendwatch-pg-"))
    try:
        url = start(base)
    except PostgresUnavailable as exc:
        shutil.rmtree(base, ignore_errors=True)
        message = (f"no PostgreSQL for the store tests: {exc}. Set SPENDWATCH_TEST_POSTGRES_URL, or install "
                   f"Debian's postgresql (.ci/run does)")
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        yield url
    finally:
        stop(base)


def with_search_path(url: str, schema: str) -> str:
    """`url` whose sessions use `schema` (libpq's `options=-csearch_path=...`)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    options = " ".join([*(v for k, v in parse_qsl(parts.query) if k == "options"), f"-csearch_path={schema}"])
    return urlunsplit(parts._replace(query=urlencode([*query, ("options", options)])))


@contextmanager
def fresh_schema(admin_url: str) -> Iterator[str]:
    """A new, empty schema on the server, as a URL whose sessions use it; dropped afterwards. Cheaper than a
    database per test, and it also shows the store works in a schema other than `public`."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield with_search_path(admin_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')
