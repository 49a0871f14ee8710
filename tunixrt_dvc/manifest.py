"""What a run was made from: params, input hashes, package versions; and stable output files."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

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

# The code a training run executes: the train stage's code deps in dvc.yaml (a test keeps the two
# in step). Its hash is part of the fingerprint, so a checkpoint left by other code is not resumed.
TRAIN_CODE = (
    "stages.train",
    "tunixrt_dvc.training",
    "tunixrt_dvc.model",
    "tunixrt_dvc.manifest",
    "tunixrt_dvc.tokenizer",
)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_tree(root: Path) -> str:
    """One hash over a directory: relative paths and contents, in sorted order."""
    h = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(sha256_file(path).encode() + b"\n")
    return h.hexdigest()


def code_sha256(modules: tuple[str, ...] = TRAIN_CODE) -> str:
    """One hash over the source files of `modules` (module names and file contents)."""
    h = hashlib.sha256()
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError(f"no source for module {name}")
        h.update(name.encode() + b"\0" + sha256_file(Path(spec.origin)).encode() + b"\n")
    return h.hexdigest()


def packages() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def device_kind() -> str:
    import jax

    d = jax.devices()[0]
    return f"{d.platform}:{d.device_kind} x{jax.device_count()}"


def fingerprint(params: Params, *, data_files: list[Path], tokenizer: Path) -> dict:
    """Deterministic description of a training run: same inputs and params, same bytes."""
    data = hashlib.sha256("".join(sha256_file(p) for p in data_files).encode()).hexdigest()
    return {
        "seed": params.seed,
        "data_sha256": data,
        "tokenizer_sha256": sha256_file(tokenizer),
        "code_sha256": code_sha256(),
        "device": device_kind(),
        "packages": packages(),
        "params": params.model_dump(mode="json"),
    }


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


def run_manifest(fp: dict, *, timings: dict) -> dict:
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
    }


def write_json(path: Path, data: dict) -> None:
    """Stable JSON (key order as given, 2-space indent, trailing newline), replaced atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_tsv(path: Path, rows: list[dict]) -> None:
    """Tab-separated rows for `dvc plots` (columns from the first row)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = list(rows[0]) if rows else []
    lines = ["\t".join(cols)] + ["\t".join(_cell(r.get(c)) for c in cols) for r in rows]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)
