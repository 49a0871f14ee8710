"""Stage `train`: fine-tune a Gemma3 model on the formatted data with Tunix."""

from __future__ import annotations

from pathlib import Path

import click

from tunixrt_dvc.command import Command, params_option
from tunixrt_dvc.params import load_params

# The params sections this stage reads (its `params` in dvc.yaml): its fingerprint holds these.
PARAMS = ("seed", "mesh", "model", "train")


@click.command(cls=Command)
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
@click.option("--steps", type=click.IntRange(min=0), help="Override train.steps (0: no training).")
def main(params_file: str, data_dir: str, out_dir: str, steps: int | None) -> None:
    """Fine-tune with Tunix's PeftTrainer (completion-only loss, packed batches, resumable).

    \b
    Writes, under OUT:
      model/             the trained model: config.json (preset, architecture, base by its
                         seed or content hash) and weights/ (an orbax PyTree checkpoint); with
                         LoRA adapter/ instead (the base is not copied); with 0 steps the card
                         alone (the model is its base)
      metrics.json       final losses and counts (DVCLive's summary, updated every step)
      plots/metrics/     loss, grad norm and learning rate per step; eval loss (DVCLive)
      fingerprint.json   params and the hashes of data, tokenizer, code and weights
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

    from dvclive import Live

    from tunixrt_dvc import distributed, provenance
    from tunixrt_dvc.codegraph import stage_entries
    from tunixrt_dvc.model.build import build_model, checkpoint_sha256
    from tunixrt_dvc.model.config import ModelCard
    from tunixrt_dvc.model.lora import adapt
    from tunixrt_dvc.model.output import write_stage_model
    from tunixrt_dvc.model.size import count_params
    from tunixrt_dvc.pipeline import check_deps_hash
    from tunixrt_dvc.sft.host_memory import check_fits
    from tunixrt_dvc.sft.loss import store_frozen_in
    from tunixrt_dvc.sft.trainer import train
    from tunixrt_dvc.text.packing import load_examples
    from tunixrt_dvc.text.tokenizer import Tokenizer

    check_deps_hash({"model.checkpoint": params.model.checkpoint})
    procs = distributed.initialize()  # before anything computes: several hosts join here
    mesh = distributed.make_mesh(params.mesh, where=params_file)
    data, out = Path(data_dir), Path(out_dir)
    tokenizer = Tokenizer.load(data / "tokenizer.model")
    if params.train.steps > 0:  # refuse a run that will not fit before the weights load
        check_fits(params, vocab_size=tokenizer.vocab_size, processes=procs.count)
    fingerprint = provenance.fingerprint(
        params,
        sections=PARAMS,
        data_files=[data / "train.jsonl", data / "val.jsonl"],
        tokenizer=data / "tokenizer.model",
        code=stage_entries("train"),
    )
    base_sha256 = None
    if params.model.checkpoint:  # the base by its content: the card never holds its path
        base_sha256 = fingerprint["base_sha256"] = checkpoint_sha256(params.model.checkpoint)
    net, config = build_model(
        params.model,
        vocab_size=tokenizer.vocab_size,
        max_len=params.train.seq_len,
        seed=params.seed,
    )

    def card(**kw) -> ModelCard:
        return ModelCard.of(
            config, params.model, seed=params.seed, checkpoint_sha256=base_sha256, **kw
        )

    params_count = count_params(net)
    # DVCLive writes metrics.json and plots/ under OUT as training goes (`dvc exp show` reads
    # them during a run); the pipeline's dvc.yaml declares them, so DVCLive writes none.
    live = Live(dir=str(out), save_dvc_exp=False, dvcyaml=None) if procs.is_main else None
    if params.train.steps == 0:  # the base as it is: the card alone, eval scores it once
        (out / "plots" / "metrics").mkdir(parents=True, exist_ok=True)  # DVC outputs, even empty
        if live is not None:
            live.summary = {"step": 0, "params_count": params_count}
            live.make_summary()
        write_stage_model(
            out,
            model=None,
            card=card(stored="base"),
            adapter=None,
            fingerprint=fingerprint,
            timings={},
            procs=procs,
            name="train",
        )
        if procs.is_main:
            click.echo("train.steps is 0: the model is its base, unchanged")
        return

    adapted = adapt(net, params.train.adapter, seed=params.seed)
    if adapted.lora is not None and params.train.compute_dtype is not None:
        # The frozen base is only read in the compute dtype from here on: no float32 copy.
        store_frozen_in(adapted.model, params.train.compute_dtype)
    result = train(
        adapted.model,
        train_examples=load_examples(data / "train.jsonl"),
        val_examples=load_examples(data / "val.jsonl"),
        params=params.train,
        seed=params.seed,
        work_dir=out / ".resume",
        fingerprint=fingerprint,
        live=live,
        mesh=mesh,
    )
    # With LoRA, the adapter alone: the base is the checkpoint (or the seed) the card names.
    done = adapted.finish(adapted.model)
    if live is not None:
        live.summary["train"]["loss_first"] = result.train_loss_first
        live.summary["train"]["real_token_fraction"] = round(result.real_token_fraction, 4)
        if result.eval_loss_first is not None:
            live.summary["eval"]["loss_first"] = result.eval_loss_first
        live.summary["params_count"] = params_count
        live.make_summary()
    write_stage_model(
        out,
        model=done.model,
        card=card(adapter=done.card, stored=done.stored),
        adapter=done.adapter,
        fingerprint=fingerprint,
        timings={
            "wall_s": round(result.wall_s, 2),
            "real_tokens_per_s": round(result.real_tokens_per_s, 1),
            "computed_tokens_per_s": round(result.computed_tokens_per_s, 1),
            "resumed_from_step": result.resumed_from,
        },
        procs=procs,
        name="train",
    )
    if procs.is_main:
        click.echo(
            f"trained {result.steps} steps: loss {result.train_loss_first:.3f} -> "
            f"{result.train_loss_last:.3f}, eval loss {result.eval_loss_first} -> "
            f"{result.eval_loss_last}, {result.real_tokens_per_s:.0f} real tokens/s "
            f"({result.computed_tokens_per_s:.0f} computed), "
            f"real-token fraction {result.real_token_fraction:.3f}"
        )
