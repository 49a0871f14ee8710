"""Bench row `train`: the train stage's loop against a bare jitted JAX step, in one run."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from tunixrt_dvc.bench.context import BenchContext
from tunixrt_dvc.model.build import build_model
from tunixrt_dvc.model.size import model_flops_per_token
from tunixrt_dvc.params import load_params
from tunixrt_dvc.sft.inputs import model_inputs
from tunixrt_dvc.sft.loss import make_loss_fn
from tunixrt_dvc.sft.optimizer import make_optimizer
from tunixrt_dvc.sft.trainer import train
from tunixrt_dvc.text.packing import batch_stream, epoch_batches, load_examples, real_token_fraction
from tunixrt_dvc.text.tokenizer import Tokenizer


def train_row(ctx: BenchContext) -> list[dict]:
    """The train stage's throughput against a bare jitted JAX step, measured in one run.

    Same model (params.yaml's `model`), batch, optimizer and data (the format stage's output in
    data/formatted, which must exist: run `dvc repro format`); 60 steps each.
    """
    params = load_params(ctx.params_file)
    data = Path("data/formatted")
    if not (data / "train.jsonl").exists():
        raise FileNotFoundError("data/formatted/train.jsonl: run `dvc repro format` first")
    steps = 60
    tp = params.train.model_copy(
        update={"steps": steps, "eval_every": steps + 1, "checkpoint_every": steps + 1}
    )
    vocab = Tokenizer.load(data / "tokenizer.model").vocab_size
    examples = load_examples(data / "train.jsonl")

    def fresh():
        return build_model(params.model, vocab_size=vocab, max_len=tp.seq_len, seed=params.seed)[0]

    config = build_model(params.model, vocab_size=vocab, max_len=tp.seq_len, seed=params.seed)[1]

    with tempfile.TemporaryDirectory() as tmp:
        result = train(
            fresh(),
            train_examples=examples,
            val_examples=[],
            params=tp,
            seed=params.seed,
            work_dir=Path(tmp) / "w",
            fingerprint={},
        )

    net = fresh()
    opt = nnx.Optimizer(net, make_optimizer(tp), wrt=nnx.Param)

    loss_fn = make_loss_fn(tp.compute_dtype)

    @nnx.jit
    def step(m, o, batch):
        loss, grads = nnx.value_and_grad(lambda mm: loss_fn(mm, **model_inputs(batch)))(m)
        o.update(m, grads)
        return loss

    stream = batch_stream(examples, batch_size=tp.batch_size, seq_len=tp.seq_len, seed=params.seed)
    step(net, opt, next(stream)).block_until_ready()  # compile
    t0 = time.perf_counter()
    for _ in range(steps - 1):
        loss = step(net, opt, next(stream))
    loss.block_until_ready()
    bare = tp.batch_size * tp.seq_len * (steps - 1) / (time.perf_counter() - t0)
    fraction = real_token_fraction(
        epoch_batches(
            examples, batch_size=tp.batch_size, seq_len=tp.seq_len, seed=params.seed, epoch=0
        )
    )
    peak = {dtype: peak_matmul_flops(dtype) for dtype in ("float32", "bfloat16")}
    step_flops = bare * model_flops_per_token(config, tp.seq_len)
    compute = tp.compute_dtype or params.model.dtype
    return [
        {"row": "train", "metric": "stage tokens/s", "value": round(result.tokens_per_s, 1)},
        {"row": "train", "metric": "bare jitted JAX step tokens/s", "value": round(bare, 1)},
        {"row": "train", "metric": "bare step model GFLOP/s", "value": round(step_flops / 1e9, 2)},
        *(
            {"row": "train", "metric": f"peak {dtype} matmul GFLOP/s", "value": round(v / 1e9, 1)}
            for dtype, v in peak.items()
        ),
        {
            "row": "train",
            "metric": f"bare step MFU (of the {compute} matmul peak)",
            "value": round(step_flops / peak[compute], 4),
        },
        {
            "row": "train",
            "metric": "stage / bare (target >= 0.95)",
            "value": round(result.tokens_per_s / bare, 3),
        },
        {
            "row": "train",
            "metric": "real / computed tokens (target >= 0.90)",
            "value": round(fraction, 4),
        },
    ]


def peak_matmul_flops(dtype: str, *, n: int = 2048, repeats: int = 10) -> float:
    """This machine's best matrix-product rate in JAX (FLOP/s): square `n` x `n` products of
    `dtype` operands summed in float32 (how XLA:CPU's fast kernels take bfloat16: `sft.matmul`),
    the best of `repeats` timed runs after a compile."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
    matmul = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
    matmul(a, a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        matmul(a, a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best
