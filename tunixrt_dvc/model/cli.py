"""`tunixrt model`: export a trained model to Hugging Face safetensors."""

from __future__ import annotations

import click

from tunixrt_dvc.command import Group


@click.group(cls=Group)
def model() -> None:
    """Trained models: export them."""


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
