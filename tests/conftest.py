"""Shared fixtures. `pg_url`: a real PostgreSQL server, started once per test session.

Without PostgreSQL's server binaries a plain `pytest` skips the tests that need it, saying which
package to install; under `CI=true` they fail instead.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.traces import make_stored

PG_USER = "postgres"  # the system user Debian's package creates; initdb refuses to run as root


def _pg_bin() -> Path:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return Path(found[-1]).parent
    if initdb := shutil.which("initdb"):
        return Path(initdb).parent
    why = (
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's `postgresql`"
        " package (.ci/run does: apt-get install -y postgresql)"
    )
    if os.environ.get("CI") == "true":  # CI must run them
        pytest.fail(why, pytrace=False)
    pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """Start a throwaway server (unix socket in a temp dir, free port); yields its base URL."""
    bindir = _pg_bin()
    as_root = os.geteuid() == 0
    if as_root:
        try:
            pw = pwd.getpwnam(PG_USER)
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    PG_USER,
                ],
                check=True,
            )
            pw = pwd.getpwnam(PG_USER)
    # Not under pytest's tmp_path: its parents are private to root and the server runs as PG_USER.
    root = Path(tempfile.mkdtemp(prefix="tunixrt-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if as_root:
        for p in (root, sock):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    user = {"user": pw.pw_uid, "group": pw.pw_gid} if as_root else {}
    env = {**os.environ, "LC_ALL": "C", "HOME": str(root)}

    def run(*cmd: str) -> None:
        r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, **user)
        if r.returncode:
            pytest.fail(f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}", pytrace=False)

    port = _free_port()
    run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
        "--no-locale", "--no-sync")  # fmt: skip
    opts = f"-p {port} -k {sock} -c listen_addresses='' -c fsync=off -c full_page_writes=off"
    run(str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start")
    try:
        yield f"postgresql://postgres@/{{db}}?host={sock}&port={port}"
    finally:
        subprocess.run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       cwd=root, env=env, capture_output=True, **user)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty database on the session's server."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.format(db="postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield pg_server.format(db=name)
    with psycopg.connect(pg_server.format(db="postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def traces_factory():
    """`traces_factory(n)`: n stored traces (make_stored(0..n-1))."""
    return lambda n, start=0: [make_stored(k) for k in range(start, start + n)]
