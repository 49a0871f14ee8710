"""Stage `train`: fine-tune a Gemma3 model on the formatted data with Tunix."""

from __future__ import annotations

from pathlib import Path

import click

from tunixrt_dvc.cli import params_option
from tunixrt_dvc.params import load_params


@click.command()
@params_option()
@click.option(
    "--data",
    "data_dir",
    default="data/formatted",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Output of the format stage.",
)
@click.option(
    "--out",
    "out_dir",
    default="train",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the model, metrics and plots go.",
)
@click.option("--steps", type=click.IntRange(min=1), help="Override train.steps.")
def main(params_file: str, data_dir: str, out_dir: str, steps: int | None) -> None:
    """Fine-tune with Tunix's PeftTrainer (completion-only loss, packed batches, resumable).

    \b
    Writes, under OUT:
      model/             the trained weights (orbax PyTree checkpoint)
      metrics.json       final losses, real-token fraction (kept in git)
      plots/*.tsv        loss, grad norm and learning rate per step; eval loss
      fingerprint.json   params and the hashes of data, tokenizer and weights
      run_manifest.json  the same plus git sha, device and timings (not a DVC output:
                         it differs from run to run)
    A checkpoint left in OUT/.resume is resumed only if the same params, data, tokenizer and
    training code made it; otherwise training starts fresh.
    """
    params = load_params(params_file)
    if steps is not None:
        params = params.model_copy(
            update={"train": params.train.model_copy(update={"steps": steps})}
        )
    if params.train.seq_len < params.format.max_len:
        raise click.UsageError(
            f"{params_file}: train.seq_len ({params.train.seq_len}) must be >= format.max_len "
            f"({params.format.max_len}): every example must fit one packed row"
        )

    from tunixrt_dvc import manifest, model, training
    from tunixrt_dvc.tokenizer import Tokenizer

    data, out = Path(data_dir), Path(out_dir)
    tokenizer = Tokenizer.load(data / "tokenizer.model")
    train_examples = training.load_examples(data / "train.jsonl")
    val_examples = training.load_examples(data / "val.jsonl")
    net, config = model.build_model(
        params.model,
        vocab_size=tokenizer.vocab_size,
        max_len=params.train.seq_len,
        seed=params.seed,
    )
    fingerprint = manifest.fingerprint(
        params,
        data_files=[data / "train.jsonl", data / "val.jsonl"],
        tokenizer=data / "tokenizer.model",
    )
    result, train_rows, eval_rows = training.train(
        net,
        train_examples=train_examples,
        val_examples=val_examples,
        params=params.train,
        seed=params.seed,
        work_dir=out / ".resume",
        fingerprint=fingerprint,
    )

    training.save_weights(net, out / "model")
    fingerprint["checkpoint_sha256"] = manifest.sha256_tree(out / "model")
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    manifest.write_tsv(plots / "loss.tsv", train_rows)
    manifest.write_tsv(plots / "eval_loss.tsv", eval_rows)
    manifest.write_json(
        out / "metrics.json",
        {
            "steps": result.steps,
            "train_loss_first": round(result.train_loss_first, 4),
            "train_loss_last": round(result.train_loss_last, 4),
            "eval_loss_first": _round(result.eval_loss_first),
            "eval_loss_last": _round(result.eval_loss_last),
            "real_token_fraction": round(result.real_token_fraction, 4),
            "params_count": model.count_params(net),
        },
    )
    manifest.write_json(out / "fingerprint.json", fingerprint)
    manifest.write_json(
        out / "run_manifest.json",
        manifest.run_manifest(
            fingerprint,
            timings={
                "wall_s": round(result.wall_s, 2),
                "tokens_per_s": round(result.tokens_per_s, 1),
                "resumed_from_step": result.resumed_from,
            },
        ),
    )
    click.echo(
        f"trained {result.steps} steps: loss {result.train_loss_first:.3f} -> "
        f"{result.train_loss_last:.3f}, eval loss {result.eval_loss_first} -> "
        f"{result.eval_loss_last}, {result.tokens_per_s:.0f} tokens/s, "
        f"real-token fraction {result.real_token_fraction:.3f}"
    )


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)
