"""`tunixrt model`: export a trained model to Hugging Face safetensors; plan a run's memory."""

from __future__ import annotations

import dataclasses

import click

from tunixrt_dvc.cli import Command, Group, params_option
from tunixrt_dvc.model.presets import DTYPES, LORA_TARGETS, TINY
from tunixrt_dvc.params import LoraParams, MeshParams, load_params

# Memory per device of the accelerators people train Gemma on (bytes).
DEVICES = {"TPU v5e": 16e9, "H100 80GB": 80e9, "H200 141GB": 141e9}


@click.group(cls=Group)
def model() -> None:
    """Trained models: export them; plan what training one needs."""


def _size(text: str) -> int:
    units = {"kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}
    t = text.strip().lower()
    for unit, factor in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if t.endswith(unit):
            return int(float(t[: -len(unit)]) * factor)
    return int(t)


@model.command("export")
@click.option(
    "--model",
    "model_dir",
    default="train/model",
    show_default=True,
    type=click.Path(file_okay=False, exists=True),
    help="A trained model directory (with LoRA: the merged weights).",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Where to write.")
@click.option(
    "--max-shard-size",
    default="2GB",
    show_default=True,
    help="Weights larger than this go to several model-0000K-of-0000N.safetensors files.",
)
@click.option("--transformers5", is_flag=True, help="Write config.json as transformers 5 does.")
def export_command(model_dir: str, out: str, max_shard_size: str, transformers5: bool) -> None:
    """Write MODEL as a Hugging Face Gemma3 checkpoint (safetensors + config.json) that
    transformers' Gemma3ForCausalLM loads; the tokenizer.model is copied separately."""
    from tunixrt_dvc.model.export import export_safetensors
    from tunixrt_dvc.model.weights import load_model

    net, card = load_model(model_dir)
    files = export_safetensors(
        net,
        card.architecture.config(),
        out,
        max_shard_bytes=_size(max_shard_size),
        transformers5=transformers5,
    )
    click.echo(f"exported {len(files)} weight file(s) and config.json -> {out}")


@model.command("plan", cls=Command)
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
