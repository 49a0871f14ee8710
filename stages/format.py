"""`tunixrt format`: render, split and tokenize training examples; train or copy the tokenizer."""

from __future__ import annotations

import click
from pydantic import ValidationError

from tunixrt_dvc.command import Command, params_option
from tunixrt_dvc.errors import InvalidInput, Problem
from tunixrt_dvc.params import FormatParams, load_params
from tunixrt_dvc.pipeline import check_deps_hash
from tunixrt_dvc.text.dataset import run_format
from tunixrt_dvc.text.recipes import RECIPES


@click.command(cls=Command)
@click.option(
    "--examples",
    required=True,
    type=click.Path(dir_okay=False),
    help="TrainingExample JSONL (the export stage's output).",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Output directory: train.jsonl, val.jsonl, tokenizer.model, stats.json.",
)
@params_option("params.yaml to read `format.*` and `seed` from.")
@click.option("--recipe", type=click.Choice(sorted(RECIPES)), help="[params: format.recipe]")
@click.option(
    "--instruction", help="Top of every user turn; '' for none [params: format.instruction]"
)
@click.option("--val-fraction", type=float, help="[params: format.val_fraction]")
@click.option("--max-len", type=int, help="Longer examples are excluded [params: format.max_len]")
@click.option(
    "--vocab-size", type=int, help="Trained tokenizer's upper bound [params: format.vocab_size]"
)
@click.option(
    "--tokenizer",
    type=click.Path(dir_okay=False),
    help="A Gemma tokenizer.model to use instead of training one [params: format.tokenizer]",
)
@click.option(
    "--on-invalid", type=click.Choice(["fail", "skip"]), help="[params: format.on_invalid]"
)
@click.option("--seed", type=int, help="Tokenizer training seed [params: seed]")
def main(
    examples: str,
    out_dir: str,
    params_file: str,
    seed: int | None,
    **overrides: object,
) -> None:
    """Render EXAMPLES with Gemma's chat template under a recipe, split them by id into train and
    validation, train a tokenizer on the train split (or copy the configured one), and write
    token ids. Records containing control tokens are refused (or, with --on-invalid skip,
    written to OUT/rejects.jsonl); examples longer than max_len are counted and excluded."""
    params = load_params(params_file)
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        fmt = FormatParams.model_validate({**params.format.model_dump(), **given})
    except ValidationError as e:
        problems = [
            Problem("command line", None, "--" + str(err["loc"][0]).replace("_", "-"), err["msg"])
            for err in e.errors()
        ]
        raise InvalidInput(problems) from None
    check_deps_hash({"format.tokenizer": fmt.tokenizer})
    stats = run_format(
        examples,
        out_dir,
        params=fmt,
        seed=params.seed if seed is None else seed,
        params_file=params_file,
    )
    splits = stats["splits"]
    over = sum(s["over_max_len"] for s in splits.values())
    click.echo(
        f"format: {splits['train']['examples']} train, {splits['val']['examples']} val examples "
        f"({fmt.recipe}); {stats['rejected']} rejected, {over} longer than {fmt.max_len} tokens "
        f"excluded; tokenizer {stats['tokenizer']['source']}, {stats['tokenizer']['vocab_size']} "
        f"pieces -> {out_dir}"
    )
