"""The `dvc` bench row: `dvc repro` from a fresh clone, then a no-op `dvc repro`, timed.

A user's numbers, measured as a user gets them: `git clone`, then `dvc repro` (the install is not
timed). The clone is of the committed HEAD of the checkout the bench runs in, with its params.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from tunixrt_dvc.bench.context import BenchContext

TARGET_FULL_S = 180.0  # issue 7: default `dvc repro` from a fresh clone on 2 cores
TARGET_NOOP_S = 2.0  # issue 7: `dvc repro` with nothing to do

_STAGE_LINE = re.compile(r"(?:Running stage|Stage) '([^']+)'")


@dataclass(frozen=True)
class ReproTiming:
    seconds: float  # wall time of the `dvc repro` process
    cpu_s: float  # user + system CPU time of it and its stage commands
    ran: list[str]  # the stages that really ran, in order


def _git(*args: str, cwd: Path | None = None) -> str:
    r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"git {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def _children_cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def timed_repro(clone: Path, *, env: dict[str, str], desc: str = "dvc repro") -> ReproTiming:
    """Run `dvc repro` in `clone`; a progress bar counts the stages as DVC reaches them."""
    listed = subprocess.run(
        [sys.executable, "-m", "dvc", "stage", "list", "--name-only"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
    )
    if listed.returncode:
        raise RuntimeError(f"dvc stage list in {clone}: {listed.stdout}{listed.stderr}")
    n_stages = len(listed.stdout.split())
    lines: list[str] = []
    c0, t0 = _children_cpu(), time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro"],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    with tqdm(total=n_stages, desc=desc, unit="stage", disable=None) as bar:
        for line in proc.stdout:
            lines.append(line)
            if m := _STAGE_LINE.match(line):
                bar.set_postfix_str(m.group(1))
                bar.update(1)
    proc.wait()
    seconds, cpu_s = time.perf_counter() - t0, _children_cpu() - c0
    if proc.returncode:
        tail = "".join(lines[-40:])
        raise RuntimeError(f"dvc repro failed in {clone} ({proc.returncode}):\n{tail}")
    ran = re.findall(r"Running stage '([^']+)'", "".join(lines))
    return ReproTiming(seconds=seconds, cpu_s=cpu_s, ran=ran)


def measure_repro(repo: Path, dest: Path, *, noop_runs: int = 3) -> list[dict[str, Any]]:
    """Clone `repo` (its committed HEAD) to `dest`, time `dvc repro` there, then no-op ones.

    The stage commands import the clone's code (PYTHONPATH), as after `pip install -e .` in it.
    """
    shutil.rmtree(dest, ignore_errors=True)
    _git("clone", "-q", str(repo), str(dest))
    path = os.pathsep.join(p for p in (str(dest), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    committed = bool(_git("ls-files", "dvc.lock", cwd=dest).strip())

    full = timed_repro(dest, env=env, desc="dvc repro (fresh clone)")
    # Every output hash is in dvc.lock, and the metrics files are in git: nothing may change.
    changed = [ln[3:] for ln in _git("status", "--porcelain", "-uno", cwd=dest).splitlines()]
    if not committed:
        reproduced = "no lock committed"
    else:
        reproduced = "yes" if not changed else "NO, differs: " + " ".join(changed)
    noops = [timed_repro(dest, env=env, desc="dvc repro (no-op)") for _ in range(noop_runs)]
    if ran := [r.ran for r in noops if r.ran]:
        raise RuntimeError(f"a second dvc repro in {dest} ran stages again: {ran}")
    return [
        {
            "run": "fresh clone",
            "stages_run": len(full.ran),
            "seconds": round(full.seconds, 1),
            "cpu_s": round(full.cpu_s, 1),
            "target_s": TARGET_FULL_S,
            "lock_reproduced": reproduced,
        },
        {
            "run": f"no-op (median of {noop_runs})",
            "stages_run": 0,
            "seconds": round(statistics.median(r.seconds for r in noops), 2),
            "cpu_s": round(statistics.median(r.cpu_s for r in noops), 2),
            "target_s": TARGET_NOOP_S,
            "lock_reproduced": "",
        },
    ]


def dvc_row(ctx: BenchContext) -> list[dict[str, Any]]:
    """Bench row `dvc` (ignores `--sizes`): the checkout's default pipeline from a fresh clone."""
    r = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    top = Path(r.stdout.strip())
    if r.returncode or not (top / "dvc.yaml").exists():
        raise RuntimeError("bench dvc: run it inside a git checkout of tunixrt-dvc")
    return measure_repro(top, ctx.workdir / "dvc-clone")
