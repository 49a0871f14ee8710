"""Running `tunixrt` commands in subprocesses, with fake devices or as several processes."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

from support.params import REPO


def env(devices: int = 1, **extra: str) -> dict[str, str]:
    """The environment of a run on `devices` fake CPU devices (set before JAX is imported)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    path = os.pathsep.join(p for p in (str(REPO), base.get("PYTHONPATH")) if p)
    flags = f"--xla_force_host_platform_device_count={devices}"
    return {**base, "PYTHONPATH": path, "XLA_FLAGS": flags, **extra}


def tunixrt(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tunixrt_dvc.cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def finish(proc: subprocess.Popen, timeout: float = 900) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"{out[-2000:]}\n{err[-4000:]}"
    return out


def train(
    params: Path, data: Path, out: Path, *, devices: int = 1, **extra: str
) -> subprocess.Popen:
    """`tunixrt train` on `devices` fake devices (not waited for)."""
    return tunixrt(
        "train", "--params", params, "--data", data, "--out", out, env=env(devices, **extra)
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_processes(
    params: Path, data: Path, out: Path, *, processes: int, devices: int, **extra: str
) -> list[subprocess.Popen]:
    """`tunixrt train` as one job of `processes` processes on 127.0.0.1, each with `devices`
    fake devices, all writing to `out` (a shared filesystem)."""
    port = free_port()
    return [
        tunixrt(
            "train",
            "--params",
            params,
            "--data",
            data,
            "--out",
            out,
            env=env(
                devices,
                JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                JAX_NUM_PROCESSES=str(processes),
                JAX_PROCESS_ID=str(i),
                **extra,
            ),
            start_new_session=True,
        )
        for i in range(processes)
    ]


def metric(run: Path, name: str, column: str) -> list[float]:
    """A DVCLive metric file of a train run, as a list of values by step."""
    path = run / "plots" / "metrics" / f"{name}.tsv"
    with path.open(encoding="utf-8") as f:
        return [float(r[column]) for r in csv.DictReader(f, delimiter="\t")]
