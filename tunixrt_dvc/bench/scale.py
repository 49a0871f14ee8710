"""Bench rows `mesh` and `lora`: the train stage's loop sharded over fake CPU devices, and
LoRA / QLoRA step time against full fine-tuning. Both need `data/formatted` (dvc repro format).

On fake CPU devices a mesh does not add compute (they share the machine's cores): the `mesh` row
measures what sharding costs (collectives, layout), not what it gains on real accelerators.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tunixrt_dvc.bench.context import BenchContext
from tunixrt_dvc.params import load_params
from tunixrt_dvc.registry import LORA_TARGETS

STEPS = 40
DATA = Path("data/formatted")

# One measurement, in a fresh process so that the fake device count can be set before JAX.
_CHILD = """
import json, sys, tempfile
from pathlib import Path
from tunixrt_dvc.distributed import make_mesh
from tunixrt_dvc.model.build import build_model
from tunixrt_dvc.model.lora import apply_lora
from tunixrt_dvc.params import LoraParams, MeshParams, load_params
from tunixrt_dvc.sft.trainer import train
from tunixrt_dvc.text.packing import load_examples
from tunixrt_dvc.text.tokenizer import Tokenizer
params_file, data, steps = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
mesh, lora = map(json.loads, sys.argv[4:6])
params = load_params(params_file)
n = steps + 1  # no evaluation, no checkpoint
tp = params.train.model_copy(update={"steps": steps, "eval_every": n, "checkpoint_every": n})
vocab = Tokenizer.load(data / "tokenizer.model").vocab_size
model, _ = build_model(params.model, vocab_size=vocab, max_len=tp.seq_len, seed=params.seed)
if lora:
    model = apply_lora(model, LoraParams(**lora), seed=params.seed)
with tempfile.TemporaryDirectory() as tmp:
    result = train(model, train_examples=load_examples(data / "train.jsonl"), val_examples=[],
                   params=tp, seed=params.seed, work_dir=Path(tmp), fingerprint={},
                   mesh=make_mesh(MeshParams(**mesh)) if mesh else None)
print(json.dumps({"tokens_per_s": result.tokens_per_s}))
"""


def _measure(ctx: BenchContext, *, devices: int, mesh: dict | None, lora: dict | None) -> float:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    args = [str(ctx.params_file), str(DATA), str(STEPS), json.dumps(mesh), json.dumps(lora)]
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, env=env
    )
    if proc.returncode:
        raise RuntimeError(f"bench: {mesh=} {lora=}: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.splitlines()[-1])["tokens_per_s"]


def _need_data() -> None:
    if not (DATA / "train.jsonl").exists():
        raise FileNotFoundError("data/formatted/train.jsonl: run `dvc repro format` first")


def mesh_row(ctx: BenchContext) -> list[dict[str, Any]]:
    """Tokens/s of the train stage's loop on one device and on meshes of 4 fake CPU devices,
    the same global batch (params.yaml's) in every case; float32 and bfloat16 as configured."""
    _need_data()
    batch = load_params(ctx.params_file).train.batch_size
    cases = [("one device", 1, None), ("one of 4 fake devices", 4, None)]
    cases += [(f"fsdp {f} x tp {t}", 4, {"fsdp": f, "tp": t}) for f, t in ((4, 1), (2, 2))]
    rows, base = [], None
    for name, devices, mesh in cases:
        if mesh is not None and batch % mesh["fsdp"]:
            continue  # rows are split over fsdp
        tps = _measure(ctx, devices=devices, mesh=mesh, lora=None)
        base = base or tps
        rows.append({"run": name, "tokens/s": round(tps, 1), "vs one device": round(tps / base, 3)})
    return rows


def lora_row(ctx: BenchContext) -> list[dict[str, Any]]:
    """Step time of full fine-tuning against LoRA r8, r16 and QLoRA (nf4) r16 on every target
    module, on params.yaml's model and batch, measured in the train stage's loop."""
    _need_data()
    cases: list[tuple[str, dict | None]] = [("full fine-tuning", None)]
    for name, rank, quantize in (("LoRA r8", 8, None), ("LoRA r16", 16, None)) + (
        ("QLoRA nf4 r16", 16, "nf4"),
    ):
        lora = {"rank": rank, "alpha": 2.0 * rank, "targets": list(LORA_TARGETS)}
        cases.append((name, {**lora, "quantize": quantize}))
    rows, full = [], None
    for name, lora in cases:
        tps = _measure(ctx, devices=1, mesh=None, lora=lora)
        full = full or tps
        rows.append(
            {"run": name, "tokens/s": round(tps, 1), "step time vs full": round(full / tps, 3)}
        )
    return rows
