"""A shared DVC remote on S3: `dvc push` from one clone, `dvc pull` in another.

The S3 server is moto's (`moto[server]`), started by the test on 127.0.0.1 on a free port and
stopped after it; DVC talks to it through `dvc-s3` (the `dvc[s3]` extra), as it would to AWS or to
an S3-compatible service, with `endpointurl` set. Credentials come from the environment only:
`.dvc/config`, which is committed, must not hold them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

BUCKET, PREFIX = "tunixrt-cache", "shared/dvc"
KEY_ID, SECRET = "AKIATUNIXRTTEST00001", "tunixrt-test-secret-never-in-git"
TIMEOUT = 180  # seconds for one command; a few seconds each on an idle machine


def _require(module: str, package: str) -> None:
    try:
        __import__(module)
    except ImportError:
        why = f"{module} not installed: `pip install -e '.[test]'` installs {package}"
        if os.environ.get("CI") == "true":  # CI must run this test
            pytest.fail(why, pytrace=False)
        pytest.skip(why)


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    """An S3 server on 127.0.0.1 on a free port, for this test only."""
    _require("moto.server", "moto[server]")
    _require("dvc_s3", "dvc-s3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def _env(root: Path) -> dict[str, str]:
    """The caller's environment isolated from the user's DVC config and site cache (as
    tests/test_pipeline.py's `base_env`) and from any AWS configuration: the S3 credentials are
    the test's, in the environment only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    for name in ("global", "system", "site"):
        (root / f"dvc-{name}").mkdir(exist_ok=True)
    env.update(
        DVC_GLOBAL_CONFIG_DIR=str(root / "dvc-global"),
        DVC_SYSTEM_CONFIG_DIR=str(root / "dvc-system"),
        DVC_SITE_CACHE_DIR=str(root / "dvc-site"),
        DVC_NO_ANALYTICS="1",
        GIT_AUTHOR_NAME="tunixrt tests",
        GIT_AUTHOR_EMAIL="tests@tunixrt.invalid",
        GIT_COMMITTER_NAME="tunixrt tests",
        GIT_COMMITTER_EMAIL="tests@tunixrt.invalid",
        AWS_ACCESS_KEY_ID=KEY_ID,
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(root / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(root / "no-aws-credentials"),
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    return env


def _run(cmd: Sequence[str], *, cwd: Path, env: dict[str, str]) -> str:
    """Run `cmd`, return stdout+stderr; fail the test (with the output) on error or timeout."""
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} (in {cwd}) timed out after {TIMEOUT} s:\n{out[-4000:]}")
    if proc.returncode:
        pytest.fail(f"{' '.join(cmd)} (in {cwd}) exited {proc.returncode}:\n{out[-4000:]}")
    return out


def _dvc(cwd: Path, env: dict[str, str], *args: str) -> str:
    return _run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env)


def _git(cwd: Path, env: dict[str, str], *args: str) -> str:
    return _run(["git", *args], cwd=cwd, env=env)


MAKE = """\
import pathlib, sys
raw = pathlib.Path("data/raw.bin").read_bytes()
out = pathlib.Path("out")
out.mkdir(exist_ok=True)
(out / "reversed.bin").write_bytes(raw[::-1])
(out / "size.txt").write_text(f"{len(raw)}\\n")
"""

DVC_YAML = """\
stages:
  make:
    cmd: python3 make.py
    deps: [make.py, data/raw.bin]
    outs: [out]
"""

OUTPUTS = ["data/raw.bin", "out/reversed.bin", "out/size.txt"]


def test_push_to_s3_then_pull_in_a_second_clone(tmp_path, s3_endpoint):
    import boto3

    env = _env(tmp_path)
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    ).create_bucket(Bucket=BUCKET)

    # Clone a: a file tracked with `dvc add` and a stage whose output directory is cached.
    a = tmp_path / "a"
    a.mkdir()
    _git(a, env, "init", "-q")
    _dvc(a, env, "init", "-q")
    # As this repository's .dvc/config (without a `dvc config` process for each).
    (a / ".dvc" / "config").write_text("[core]\n    analytics = false\n    check_update = false\n")
    (a / "data").mkdir()
    (a / "data" / "raw.bin").write_bytes(bytes(range(256)) * 64 + os.urandom(1000))
    (a / "make.py").write_text(MAKE)
    (a / "dvc.yaml").write_text(DVC_YAML)
    _dvc(a, env, "add", "-q", "data/raw.bin")
    _dvc(a, env, "repro", "-q")
    _dvc(a, env, "remote", "add", "-d", "store", f"s3://{BUCKET}/{PREFIX}")
    _dvc(a, env, "remote", "modify", "store", "endpointurl", s3_endpoint)
    _git(a, env, "add", "-A")
    _git(a, env, "commit", "-q", "-m", "data, a stage, an S3 remote")

    config = (a / ".dvc" / "config").read_text()
    assert f"s3://{BUCKET}/{PREFIX}" in config and s3_endpoint in config
    assert SECRET not in config and KEY_ID not in config, config
    assert not (a / ".dvc" / "config.local").exists()
    tracked = _git(a, env, "ls-files")
    assert "out/reversed.bin" not in tracked and "data/raw.bin\n" not in tracked, tracked

    pushed = _dvc(a, env, "push")
    # raw.bin, out's two files and out's .dir listing
    assert "4 files pushed" in pushed, pushed
    assert "Cache and remote 'store' are in sync." in _dvc(a, env, "status", "-c")
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert len(keys) == 4 and all(k.startswith(f"{PREFIX}/files/md5/") for k in keys), keys

    # Clone b: git only, then the data from S3.
    b = tmp_path / "b"
    _git(tmp_path, env, "clone", "-q", str(a), str(b))
    assert not (b / "data" / "raw.bin").exists() and not (b / "out").exists()
    _dvc(b, env, "pull")
    for rel in OUTPUTS:
        assert (b / rel).read_bytes() == (a / rel).read_bytes(), rel
    # Nothing to rerun (`dvc repro` would skip `make`), nothing to push or pull.
    assert "Data and pipelines are up to date." in _dvc(b, env, "status")
    assert "Cache and remote 'store' are in sync." in _dvc(b, env, "status", "-c")
    assert _git(b, env, "status", "--porcelain") == ""
