"""Stage `train`: fine-tune a Gemma3 model on the formatted data with Tunix."""

from __future__ import annotations

from pathlib import Path

import click

from tunixrt_dvc.cli import Command, params_option
from tunixrt_dvc.params import load_params


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
@click.option("--steps", type=click.IntRange(min=1), help="Override train.steps.")
def main(params_file: str, data_dir: str, out_dir: str, steps: int | None) -> None:
    """Fine-tune with Tunix's PeftTrainer (completion-only loss, packed batches, resumable).

    \b
    Writes, under OUT:
      model/             the trained model: config.json (preset, architecture, base) and
                         weights/ (an orbax PyTree checkpoint)
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
    from tunixrt_dvc.io import sha256_tree, write_json
    from tunixrt_dvc.model.build import build_model
    from tunixrt_dvc.model.config import AdapterCard, ModelCard
    from tunixrt_dvc.model.lora import adapter_state, apply_lora, merge, weights_sha256
    from tunixrt_dvc.model.size import count_params
    from tunixrt_dvc.model.weights import save_model
    from tunixrt_dvc.sft.trainer import train
    from tunixrt_dvc.text.packing import load_examples
    from tunixrt_dvc.text.tokenizer import Tokenizer

    procs = distributed.initialize()  # before anything computes: several hosts join here
    mesh = distributed.make_mesh(params.mesh, where=params_file)
    data, out = Path(data_dir), Path(out_dir)
    tokenizer = Tokenizer.load(data / "tokenizer.model")
    train_examples = load_examples(data / "train.jsonl")
    val_examples = load_examples(data / "val.jsonl")

    def base_model():
        return build_model(
            params.model,
            vocab_size=tokenizer.vocab_size,
            max_len=params.train.seq_len,
            seed=params.seed,
        )

    net, config = base_model()
    lora = params.train.lora
    if lora is not None:
        base_sha256 = weights_sha256(net)
        net = apply_lora(net, lora, seed=params.seed)
    fingerprint = provenance.fingerprint(
        params,
        data_files=[data / "train.jsonl", data / "val.jsonl"],
        tokenizer=data / "tokenizer.model",
        code=stage_entries("train"),
    )
    # DVCLive writes metrics.json and plots/ under OUT as training goes (`dvc exp show` reads
    # them during a run); the pipeline's dvc.yaml declares them, so DVCLive writes none.
    live = Live(dir=str(out), save_dvc_exp=False, dvcyaml=None) if procs.is_main else None
    result = train(
        net,
        train_examples=train_examples,
        val_examples=val_examples,
        params=params.train,
        seed=params.seed,
        work_dir=out / ".resume",
        fingerprint=fingerprint,
        live=live,
        mesh=mesh,
    )
    adapter, card_adapter = None, None
    if lora is not None:
        adapter = adapter_state(net)
        card_adapter = AdapterCard(**lora.model_dump(), base_sha256=base_sha256)
        net = merge(base_model()[0], net, lora)  # the frozen base again, adapters folded in
    card = ModelCard.of(config, params.model, seed=params.seed, adapter=card_adapter)
    if procs.is_main:
        live.summary["train"]["loss_first"] = result.train_loss_first
        live.summary["train"]["real_token_fraction"] = round(result.real_token_fraction, 4)
        if result.eval_loss_first is not None:
            live.summary["eval"]["loss_first"] = result.eval_loss_first
        live.summary["params_count"] = count_params(net)
        live.make_summary()
    save_model(net, card, out / "model", adapter=adapter, write=procs.is_main)
    distributed.barrier("train: outputs")
    if not procs.is_main:
        return
    fingerprint["checkpoint_sha256"] = sha256_tree(out / "model")
    write_json(out / "fingerprint.json", fingerprint)
    write_json(
        out / "run_manifest.json",
        provenance.run_manifest(
            fingerprint,
            timings={
                "wall_s": round(result.wall_s, 2),
                "tokens_per_s": round(result.tokens_per_s, 1),
                "resumed_from_step": result.resumed_from,
            },
            processes={"count": procs.count, "index": procs.index},
        ),
    )
    click.echo(
        f"trained {result.steps} steps: loss {result.train_loss_first:.3f} -> "
        f"{result.train_loss_last:.3f}, eval loss {result.eval_loss_first} -> "
        f"{result.eval_loss_last}, {result.tokens_per_s:.0f} tokens/s, "
        f"real-token fraction {result.real_token_fraction:.3f}"
    )
