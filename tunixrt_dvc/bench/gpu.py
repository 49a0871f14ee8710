"""Gemma3 full fine-tuning throughput and MFU on one GPU (real sizes, random init)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from tqdm import tqdm

from tunixrt_dvc.bench.context import BenchContext
from tunixrt_dvc.model.config import ModelConfig
from tunixrt_dvc.model.init import random_model
from tunixrt_dvc.model.size import count_params, model_flops_per_token
from tunixrt_dvc.registry import PRESETS

# Dense bf16 peak of one GPU (NVIDIA data sheets), by a substring of jax's `device_kind`; the more
# specific names first.
PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H200 NVL", 835e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("A100", 312e12),
)


def peak_bf16_flops(device_kind: str) -> float | None:
    for name, flops in PEAK_BF16_FLOPS:
        if name in device_kind:
            return flops
    return None


def measure_train_throughput(
    config: ModelConfig,
    *,
    batch_size: int,
    seq_len: int,
    steps: int,
    warmup: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """Full fine-tuning (AdamW, every parameter) of a randomly initialised model on random
    tokens: a jitted train step with donated buffers, timed after `warmup` compiled steps."""
    model = random_model(config, seed=seed)
    n_params = count_params(model)
    graphdef, params = nnx.split(model, nnx.Param)
    tx = optax.adamw(1e-5, weight_decay=0.01)
    opt_state = tx.init(params)
    tokens = jax.random.randint(
        jax.random.key(seed), (batch_size, seq_len + 1), 3, config.num_embed, dtype=jnp.int32
    )
    positions = jnp.broadcast_to(jnp.arange(seq_len), (batch_size, seq_len))
    mask = jnp.broadcast_to(
        jnp.tril(jnp.ones((seq_len, seq_len), bool)), (batch_size,) + (seq_len,) * 2
    )

    def loss_fn(params):
        logits, _ = nnx.merge(graphdef, params)(tokens[:, :-1], positions, None, mask)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32))
        return -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1).mean()

    def step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    step = jax.jit(step, donate_argnums=(0, 1))
    for _ in range(warmup):
        params, opt_state, loss = step(params, opt_state)
    jax.block_until_ready(loss)
    start = time.perf_counter()
    for _ in tqdm(range(steps), desc=f"bench {n_params / 1e6:.0f}M", disable=None):
        params, opt_state, loss = step(params, opt_state)
    jax.block_until_ready(loss)
    seconds = time.perf_counter() - start
    tokens_per_s = batch_size * seq_len * steps / seconds
    return {
        "params": n_params,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "steps": steps,
        "seconds": seconds,
        "tokens_per_s": tokens_per_s,
        "model_flops_per_s": tokens_per_s * model_flops_per_token(config, seq_len),
        "final_loss": float(loss),
    }


def gpu_bench(
    *,
    presets: tuple[str, ...] = ("gemma3-270m", "gemma3-1b"),
    batch_size: int = 8,
    seq_len: int = 1024,
    steps: int = 20,
) -> list[dict[str, Any]]:
    """Gemma3 full fine-tuning in bf16 on one GPU: tokens/s and MFU (model FLOPs per second
    over the device's dense bf16 peak). Refuses to run without a GPU."""
    if jax.default_backend() != "gpu":
        raise RuntimeError(f"gpu_bench needs a GPU (jax backend: {jax.default_backend()})")
    kind = jax.devices()[0].device_kind
    peak = peak_bf16_flops(kind)
    rows = []
    for name in presets:
        if PRESETS.get(name) is None:
            raise ValueError(f"gpu_bench: {name!r} is not a real-size preset")
        config = dataclasses.replace(
            getattr(ModelConfig, PRESETS[name])(), param_dtype=jnp.bfloat16
        )
        row = measure_train_throughput(config, batch_size=batch_size, seq_len=seq_len, steps=steps)
        row |= {
            "preset": name,
            "device": kind,
            "peak_bf16_flops": peak,
            "mfu": row["model_flops_per_s"] / peak if peak else None,
        }
        rows.append(row)
    return rows


def gpu_row(ctx: BenchContext) -> list[dict[str, Any]]:
    """Bench row `gpu` (ignores `--sizes`): gemma3-270m and gemma3-1b on this machine's GPU."""
    return gpu_bench()
