"""What a training stage (train, grpo) writes under its OUT directory, and how.

    OUT/model/             the model directory (`model.weights.save_model`)
    OUT/fingerprint.json   what made it: params, input and code hashes, and the model's hash
    OUT/run_manifest.json  the same plus what differs from run to run (not a DVC output)

Only the job's first process writes; every process gathers the weights (a collective) and waits
for the files before going on.
"""

from __future__ import annotations

from pathlib import Path

from flax import nnx

from tunixrt_dvc import provenance
from tunixrt_dvc.distributed import Processes, barrier
from tunixrt_dvc.io import sha256_tree, write_json
from tunixrt_dvc.model.config import ModelCard
from tunixrt_dvc.model.weights import save_model

MODEL_DIR = "model"
FINGERPRINT_FILE = "fingerprint.json"
MANIFEST_FILE = "run_manifest.json"


def write_stage_model(
    out: Path,
    *,
    model: nnx.Module | None,
    card: ModelCard,
    adapter: dict | None,
    fingerprint: dict,
    timings: dict,
    procs: Processes,
    name: str,
) -> None:
    """Save the model directory OUT/model (what `card.stored` says: `model`'s weights, the
    `adapter` alone, or the card alone), then the fingerprint (with the directory's hash) and
    the run manifest."""
    save_model(model, card, out / MODEL_DIR, adapter=adapter, write=procs.is_main)
    barrier(f"{name}: outputs")
    if procs.is_main:
        _write_records(out, fingerprint, timings=timings, procs=procs)


def _write_records(out: Path, fingerprint: dict, *, timings: dict, procs: Processes) -> None:
    fingerprint = {**fingerprint, "checkpoint_sha256": sha256_tree(out / MODEL_DIR)}
    write_json(out / FINGERPRINT_FILE, fingerprint)
    processes = {"count": procs.count, "index": procs.index}
    manifest = provenance.run_manifest(fingerprint, timings=timings, processes=processes)
    write_json(out / MANIFEST_FILE, manifest)
