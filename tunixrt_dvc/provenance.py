"""What a run was made from: params, input and code hashes, package versions, device."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from tunixrt_dvc.codegraph import ROOT, import_closure, module_file
from tunixrt_dvc.io import sha256_file
from tunixrt_dvc.params import Params

PACKAGES = (
    "tunixrt-dvc",
    "google-tunix",
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "sentencepiece",
    "numpy",
)


def code_sha256(entries: list[str], *, root: Path = ROOT) -> str:
    """One hash over the source of every project module `entries` can import (names and bytes).

    A checkpoint made by other code is then not resumed: the hash is part of the fingerprint.
    """
    h = hashlib.sha256()
    for name in import_closure(entries, root):
        path = module_file(name, root)
        assert path is not None
        h.update(name.encode() + b"\0" + sha256_file(path).encode() + b"\n")
    return h.hexdigest()


def packages() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


# CPU instruction sets that change which kernels XLA compiles, and so the low bits of results:
# runs are byte-identical only on machines that agree on these (docs/reproducibility.md).
KERNEL_ISA = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def cpu_kind() -> str:
    """The CPU's model name and the instruction sets of KERNEL_ISA it has (from Linux's
    /proc/cpuinfo; elsewhere, what `platform` knows)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    first_cpu = lines[: lines.index("")] if "" in lines else lines
    fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first_cpu)}
    flags = set(fields.get("flags", "").split())
    isa = " ".join(f for f in KERNEL_ISA if f in flags)
    return f"{fields.get('model name', platform.machine())} [{isa}]"


def max_isa() -> str | None:
    """The instruction set XLA's CPU kernels are capped at (`--xla_cpu_max_isa` in XLA_FLAGS)."""
    found = re.findall(r"--xla_cpu_max_isa=(\S+)", os.environ.get("XLA_FLAGS", ""))
    return found[-1] if found else None


def device_kind() -> str:
    """The devices JAX computes on; for the CPU, its model and kernel-relevant ISA too, and the
    cap XLA_FLAGS puts on that ISA (another kernel choice, so another kind of machine)."""
    import jax

    d = jax.devices()[0]
    kind = f"{d.platform}:{d.device_kind} x{jax.device_count()}"
    if d.platform != "cpu":
        return kind
    cap = max_isa()
    return f"{kind} {cpu_kind()}" + (f" xla_cpu_max_isa={cap}" if cap else "")


def fingerprint(
    params: Params,
    *,
    sections: Sequence[str],
    data_files: list[Path],
    tokenizer: Path,
    code: list[str],
) -> dict:
    """Deterministic description of a training run: same inputs, params and code, same bytes.

    `sections` are the params the run reads (its stage's `params` in dvc.yaml): an edit to any
    other section neither changes the fingerprint nor spoils a resume. `code` are the entry
    modules of the run (`codegraph.stage_entries`).
    """
    data = hashlib.sha256("".join(sha256_file(p) for p in data_files).encode()).hexdigest()
    return {
        "seed": params.seed,
        "data_sha256": data,
        "tokenizer_sha256": sha256_file(tokenizer),
        "code_sha256": code_sha256(code),
        "device": device_kind(),
        "packages": packages(),
        "params": params.model_dump(mode="json", include=_include(sections)),
    }


def _include(sections: Sequence[str]) -> dict:
    """pydantic's `include` for params keys as dvc.yaml lists them (`train`, `model.checkpoint`)."""
    out: dict = {}
    for key in sections:
        head, _, rest = key.partition(".")
        if not rest:
            out[head] = True
        elif out.get(head) is not True:
            out.setdefault(head, {})[rest] = True
    return out


def git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_manifest(fp: dict, *, timings: dict, processes: dict | None = None) -> dict:
    """The fingerprint plus what differs from run to run (so it is not a DVC output)."""
    return {
        **fp,
        "git_sha": git_sha(),
        "host": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
        },
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "timings": timings,
        "processes": processes or {"count": 1, "index": 0},
    }
