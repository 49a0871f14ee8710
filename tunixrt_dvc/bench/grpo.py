"""Bench row `grpo`: one GRPO step split into rollout, reference log-probs and policy update,
with full fine-tuning and with LoRA, from the checkout's trained model."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from tunixrt_dvc.bench.context import BenchContext
from tunixrt_dvc.model.lora import apply_lora
from tunixrt_dvc.model.weights import load_model
from tunixrt_dvc.params import LoraParams, load_params
from tunixrt_dvc.rl.grpo import grpo
from tunixrt_dvc.rl.prompts import load_prompts
from tunixrt_dvc.text.chat_format import read_chat_format
from tunixrt_dvc.text.tokenizer import Tokenizer

STEPS = 12  # the first compiles and is left out of the means
TARGETS = ["q_einsum", "kv_einsum", "attn_vec_einsum", "gate_proj", "up_proj", "down_proj"]


def grpo_row(ctx: BenchContext) -> list[dict[str, Any]]:
    """Seconds per GRPO step by part (params.yaml's `grpo`, 12 steps each) from `train/model`
    on `data/formatted` (run `dvc repro train` first); full fine-tuning, then LoRA r16."""
    params = load_params(ctx.params_file)
    data, model_dir = Path("data/formatted"), Path("train/model")
    if not (model_dir / "config.json").exists():
        raise FileNotFoundError("train/model: run `dvc repro train` first")
    chat = read_chat_format(data / "stats.json")
    tokenizer = Tokenizer.load(data / "tokenizer.model")
    prompts = load_prompts(data / "train.jsonl", recipe=chat.recipe)
    g = params.grpo.model_copy(update={"steps": STEPS, "checkpoint_every": STEPS + 1})
    rows = []
    for name, lora in (
        ("full", None),
        ("LoRA r16", LoraParams(rank=16, alpha=32.0, targets=TARGETS, quantize=None)),
    ):
        reference = load_model(model_dir)[0]
        actor = apply_lora(reference, lora, seed=params.seed) if lora else load_model(model_dir)[0]
        with tempfile.TemporaryDirectory() as tmp:
            result = grpo(
                actor,
                reference=reference,
                tokenizer=tokenizer,
                prompts=prompts,
                recipe=chat.recipe,
                params=g.model_copy(update={"lora": lora}),
                seed=params.seed,
                work_dir=Path(tmp),
                fingerprint={},
            )
        samples = g.prompts_per_step * g.num_generations
        for part in ("step_s", "rollout_s", "reference_s", "update_s"):
            rows.append(
                {
                    "row": "grpo",
                    "metric": f"{name}: {part} ({samples} samples)",
                    "value": round(result.timings[part], 3),
                }
            )
    return rows
