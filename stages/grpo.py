"""Stage `grpo`: reinforcement learning after SFT, with the eval's scorer as the reward."""

from __future__ import annotations

from pathlib import Path

import click

from tunixrt_dvc.command import Command, params_option
from tunixrt_dvc.params import load_params

# The params sections this stage reads (its `params` in dvc.yaml): its fingerprint holds these.
PARAMS = ("seed", "mesh", "grpo", "model.checkpoint")


@click.command(cls=Command)
@params_option()
@click.option(
    "--model",
    "model_dir",
    default="train/model",
    show_default=True,
    type=click.Path(file_okay=False),
    help="The SFT model (the train stage's output), the policy RL starts from.",
)
@click.option(
    "--data",
    "data_dir",
    default="data/formatted",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Output of the format stage: the training prompts, the tokenizer and the recipe.",
)
@click.option(
    "--out",
    "out_dir",
    default="grpo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the model, metrics and plots go.",
)
@click.option("--steps", type=click.IntRange(min=0), help="Override grpo.steps.")
def main(params_file: str, model_dir: str, data_dir: str, out_dir: str, steps: int | None) -> None:
    """GRPO (Tunix's GRPOLearner): groups of sampled answers to training prompts, rewarded by
    the eval's scorer (correct answer, exact form ended by the stop token, true equation steps;
    weights in grpo.rewards), with a KL penalty to the SFT model. Resumable.

    \b
    Writes, under OUT:
      model/            the RL model (config.json, weights/); with grpo.steps 0 its card
                        alone (the SFT model, unchanged: nothing is copied)
      metrics.json      final step's reward, its parts, KL and sampled accuracy (DVCLive)
      plots/metrics/    the same per step
      fingerprint.json  params and the hashes of the prompts, tokenizer, SFT model and code
    A checkpoint left in OUT/.resume is resumed only if the same inputs and code made it.
    """
    params = load_params(params_file)
    if steps is not None:
        params = params.model_copy(update={"grpo": params.grpo.model_copy(update={"steps": steps})})

    from dvclive import Live

    from tunixrt_dvc import distributed, provenance
    from tunixrt_dvc.codegraph import stage_entries
    from tunixrt_dvc.io import sha256_tree
    from tunixrt_dvc.model.build import open_model
    from tunixrt_dvc.model.lora import adapt
    from tunixrt_dvc.model.output import write_stage_model
    from tunixrt_dvc.model.weights import read_model_card
    from tunixrt_dvc.pipeline import check_deps_hash
    from tunixrt_dvc.rl.grpo import grpo
    from tunixrt_dvc.rl.prompts import load_prompts
    from tunixrt_dvc.text.chat_format import read_chat_format
    from tunixrt_dvc.text.tokenizer import Tokenizer

    check_deps_hash({"model.checkpoint": params.model.checkpoint})
    procs = distributed.initialize()
    mesh = distributed.make_mesh(params.mesh, where=params_file)
    data, out, sft = Path(data_dir), Path(out_dir), Path(model_dir)
    g = params.grpo
    fingerprint = provenance.fingerprint(
        params,
        sections=PARAMS,
        data_files=[data / "train.jsonl", data / "stats.json"],
        tokenizer=data / "tokenizer.model",
        code=stage_entries("grpo"),
    )
    fingerprint["sft_model_sha256"] = sha256_tree(sft)
    live = Live(dir=str(out), save_dvc_exp=False, dvcyaml=None) if procs.is_main else None
    (out / "plots" / "metrics").mkdir(parents=True, exist_ok=True)  # a DVC output, even if empty
    card = read_model_card(sft)

    if g.steps == 0:  # RL off: the SFT model's card alone, nothing copied
        if live is not None:
            live.summary = {"step": 0}
            live.make_summary()
        write_stage_model(
            out,
            model=None,
            card=card.model_copy(update={"stored": "base", "rl_steps": 0}),
            adapter=None,
            fingerprint=fingerprint,
            timings={},
            procs=procs,
            name="grpo",
        )
        if procs.is_main:
            click.echo("grpo.steps is 0: RL is off, the model is the SFT model")
        return

    def sft_model():
        return open_model(sft, checkpoint=params.model.checkpoint)[0]

    chat = read_chat_format(data / "stats.json")
    tokenizer = Tokenizer.load(data / "tokenizer.model")
    reference = sft_model()  # frozen: the KL is measured to it
    # With LoRA the actor's adapters sit on the reference's own (frozen) weights.
    adapted = adapt(reference if g.adapter else sft_model(), g.adapter, seed=params.seed)
    result = grpo(
        adapted.model,
        reference=reference,
        tokenizer=tokenizer,
        prompts=load_prompts(data / "train.jsonl", recipe=chat.recipe),
        recipe=chat.recipe,
        params=g,
        seed=params.seed,
        work_dir=out / ".resume",
        fingerprint=fingerprint,
        live=live,
        mesh=mesh,
    )
    # The RL model's weights in full: its base is the SFT model, which is no file of its own.
    done = adapted.finish(result.model, merge_into=sft_model)
    write_stage_model(
        out,
        model=done.model,
        card=card.model_copy(
            update={"adapter": done.card, "rl_steps": result.steps, "stored": "weights"}
        ),
        adapter=None,
        fingerprint=fingerprint,
        timings={
            "wall_s": round(result.wall_s, 2),
            "resumed_from_step": result.resumed_from,
            **{k: round(v, 4) for k, v in result.timings.items()},
            **{
                k: round(v, 1)
                for k, v in (
                    ("real_tokens_per_s", result.real_tokens_per_s),
                    ("computed_tokens_per_s", result.computed_tokens_per_s),
                )
                if v is not None
            },
        },
        procs=procs,
        name="grpo",
    )
    if procs.is_main:
        first, last = result.rows[0], result.rows[-1]
        click.echo(
            f"grpo {result.steps} steps: reward {first['reward']:.3f} -> {last['reward']:.3f}, "
            f"sampled accuracy {first['sampled_accuracy']:.3f} -> "
            f"{last['sampled_accuracy']:.3f}, kl {last['kl']:.4f}"
        )
