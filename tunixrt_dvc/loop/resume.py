"""The resume guard: a checkpoint is resumed only by the run that made it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax

from tunixrt_dvc.distributed import barrier
from tunixrt_dvc.io import atomic_write


def guard_resume(work_dir: Path, fingerprint: dict, *, name: str) -> None:
    """Keep `work_dir` only if it was made by this exact config, data and code; else empty it.

    Tunix resumes silently from whatever is in its checkpoint directory, so this is the only
    thing standing between a stale directory and a silently different result. The first process
    decides; every process of the job (`name` names the loop) waits for it before Tunix looks.
    """
    if jax.process_index() == 0:
        stamp = work_dir / "fingerprint.json"
        want = json.dumps(fingerprint, sort_keys=True)
        if work_dir.exists() and (not stamp.exists() or stamp.read_text() != want):
            shutil.rmtree(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(stamp, want)
    barrier(f"{name}: resume guard")
