"""`tunixrt plan`: what one training step needs per device, before renting the devices."""

from __future__ import annotations

import dataclasses

import click

from tunixrt_dvc.command import Command, params_option
from tunixrt_dvc.params import LoraParams, MeshParams, load_params
from tunixrt_dvc.registry import DTYPES, LORA_TARGETS, TINY

# Memory per device of the accelerators people train Gemma on (bytes).
DEVICES = {"TPU v5e": 16e9, "H100 80GB": 80e9, "H200 141GB": 141e9}


@click.command("plan", cls=Command)
@params_option()
@click.option("--preset", help="A preset name [params: model.preset].")
@click.option("--dtype", type=click.Choice(DTYPES), help="Weights [params: model.dtype].")
@click.option("--mesh", "mesh_text", help="FSDP,TP, e.g. 8,1 [params: mesh].")
@click.option("--batch-size", type=click.IntRange(min=1), help="[params: train.batch_size]")
@click.option("--seq-len", type=click.IntRange(min=1), help="[params: train.seq_len]")
@click.option("--lora-rank", type=click.IntRange(min=0), help="0: full fine-tuning [params].")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write JSON.")
def plan_command(
    params_file: str,
    preset: str | None,
    dtype: str | None,
    mesh_text: str | None,
    batch_size: int | None,
    seq_len: int | None,
    lora_rank: int | None,
    json_out: str | None,
) -> None:
    """Per-device memory of one training step: weights, optimizer state, gradients and
    activations (XLA's analysis of the compiled step), against TPU v5e, H100 and H200 memory.

    Nothing is allocated and no device is needed: real sizes plan on a CPU."""
    import jax.numpy as jnp

    from tunixrt_dvc.model.config import model_config
    from tunixrt_dvc.sft.plan import GIB, memory_plan

    params = load_params(params_file)
    mp = params.model.model_copy(
        update={k: v for k, v in (("preset", preset), ("dtype", dtype)) if v is not None}
    )
    mesh = params.mesh
    if mesh_text:
        fsdp, tp = (int(x) for x in mesh_text.split(","))
        mesh = MeshParams(fsdp=fsdp, tp=tp)
    lora = params.train.lora
    if lora_rank == 0:
        lora = None
    elif lora_rank is not None:
        targets = list(lora.targets) if lora else list(LORA_TARGETS)
        lora = LoraParams(rank=lora_rank, alpha=2.0 * lora_rank, targets=targets, quantize=None)
    # Real sizes have their own vocabulary (the preset's); the tiny one, the configured one.
    vocab = params.format.vocab_size if mp.preset == TINY else None
    config = model_config(mp, vocab_size=vocab or 0, max_len=params.train.seq_len)
    config = dataclasses.replace(config, param_dtype=jnp.dtype(mp.dtype))
    plan = memory_plan(
        config,
        mesh,
        batch_size=batch_size or params.train.batch_size,
        seq_len=seq_len or params.train.seq_len,
        lora=lora,
        compute_dtype=params.train.compute_dtype,
    )
    rows = [
        ("weights", plan.weights_bytes),
        ("optimizer state", plan.optimizer_bytes),
        ("gradients", plan.gradient_bytes),
        ("activations", plan.activation_bytes),
        ("total", plan.total_bytes),
    ]
    what = f"LoRA r{lora.rank}" if lora else "full fine-tuning"
    click.echo(
        f"{mp.preset} ({plan.params / 1e6:.2f}M params, {plan.trainable / 1e6:.2f}M trained, "
        f"{what}), mesh fsdp={plan.mesh['fsdp']} tp={plan.mesh['tp']}, "
        f"{plan.batch_size} x {plan.seq_len} tokens per step; per device:"
    )
    for name, value in rows:
        click.echo(f"  {name:16s} {value / GIB:9.3f} GiB")
    for device, capacity in DEVICES.items():
        verdict = "fits" if plan.total_bytes <= capacity else "does not fit"
        click.echo(f"  {device}: {verdict} ({capacity / 1e9:.0f} GB per device)")
    if json_out:
        from tunixrt_dvc.io import write_json

        write_json(json_out, {"preset": mp.preset, "lora": what, **plan.as_dict()})
