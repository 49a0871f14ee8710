"""`tunixrt plan`: what one training step needs per device, before renting the devices, and
the peak host memory of a `tunixrt train` process on a CPU."""

from __future__ import annotations

import click

from tunixrt_dvc.command import Command, params_option
from tunixrt_dvc.params import LoraParams, MeshParams, load_params
from tunixrt_dvc.registry import DTYPES, LORA_TARGETS

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
    activations (XLA's analysis of the compiled step), against TPU v5e, H100 and H200 memory;
    and the peak host memory (RSS) of `tunixrt train` on a CPU, against this machine's.

    Nothing is allocated and no device is needed: real sizes plan on a CPU."""
    from tunixrt_dvc.sft.host_memory import available_memory, predict
    from tunixrt_dvc.sft.plan import GIB, plan_for, train_lora

    params = load_params(params_file)
    model = params.model.model_copy(
        update={k: v for k, v in (("preset", preset), ("dtype", dtype)) if v is not None}
    )
    if model.preset != params.model.preset:
        model = model.model_copy(update={"checkpoint": None})  # it holds the other preset
    mesh = params.mesh
    if mesh_text:
        fsdp, tp = (int(x) for x in mesh_text.split(","))
        mesh = MeshParams(fsdp=fsdp, tp=tp)
    lora = train_lora(params)
    if lora_rank == 0:
        lora = None
    elif lora_rank is not None:
        targets = list(lora.targets) if lora else list(LORA_TARGETS)
        lora = LoraParams(rank=lora_rank, alpha=2.0 * lora_rank, targets=targets, quantize=None)
    shape = {"batch_size": batch_size, "seq_len": seq_len}
    train = params.train.model_copy(
        update={"lora": lora, **{k: v for k, v in shape.items() if v is not None}}
    )
    params = params.model_copy(update={"model": model, "mesh": mesh, "train": train})
    plan = plan_for(params)
    host = predict(params, plan=plan)
    rows = [
        ("weights", plan.weights_bytes),
        ("optimizer state", plan.optimizer_bytes),
        ("gradients", plan.gradient_bytes),
        ("activations", plan.activation_bytes),
        ("total", plan.total_bytes),
    ]
    what = f"LoRA r{lora.rank}" if lora else "full fine-tuning"
    click.echo(
        f"{model.preset} ({plan.params / 1e6:.2f}M params, {plan.trainable / 1e6:.2f}M trained, "
        f"{what}), mesh fsdp={plan.mesh['fsdp']} tp={plan.mesh['tp']}, "
        f"{plan.batch_size} x {plan.seq_len} tokens per step; per device:"
    )
    for name, value in rows:
        click.echo(f"  {name:16s} {value / GIB:9.3f} GiB")
    for device, capacity in DEVICES.items():
        verdict = "fits" if plan.total_bytes <= capacity else "does not fit"
        click.echo(f"  {device}: {verdict} ({capacity / 1e9:.0f} GB per device)")
    devices = "" if host.devices == 1 else f", one process holding all {host.devices} devices"
    click.echo(
        f"peak host memory (RSS), predicted: {host.peak_bytes / GIB:.2f} GiB "
        f"(`tunixrt train` on a CPU{devices}: {host.describe()}; loading "
        f"{host.load_bytes / GIB:.2f})"
    )
    try:
        available, source = available_memory(own=False)  # train runs in a new process
    except (OSError, KeyError):  # no /proc/meminfo: not Linux
        available = None
    if available is not None:
        verdict = "fits" if host.peak_bytes <= available else "does not fit"
        click.echo(f"  this machine: {verdict} ({available / GIB:.2f} GiB, {source})")
    if json_out:
        from tunixrt_dvc.io import write_json

        write_json(
            json_out,
            {"preset": model.preset, "lora": what, **plan.as_dict(), "host": host.as_dict()},
        )
