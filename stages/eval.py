"""Stage `eval`: generate with the base and the trained model on the fixed eval set, and score."""

from __future__ import annotations

from pathlib import Path

import click

from tunixrt_dvc.command import Command, params_option
from tunixrt_dvc.params import load_params


@click.command(name="eval", cls=Command)
@params_option()
@click.option("--evalset", type=click.Path(dir_okay=False), help="[params: eval.evalset]")
@click.option(
    "--tokenizer",
    "tokenizer_path",
    default="data/formatted/tokenizer.model",
    show_default=True,
    type=click.Path(dir_okay=False),
)
@click.option(
    "--format-stats",
    "stats_path",
    default="data/formatted/stats.json",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The format stage's stats: the recipe and instruction the model was trained with.",
)
@click.option(
    "--model",
    "model_dir",
    default="train/model",
    show_default=True,
    type=click.Path(file_okay=False),
    help="The trained model (the train stage's output: its config and weights).",
)
@click.option(
    "--rl-model",
    "rl_model_dir",
    default="grpo/model",
    show_default=True,
    type=click.Path(file_okay=False),
    help="The model after the RL stage; when it had no RL steps (grpo.steps 0: it is the trained "
    "model), its scores are the after scores and the metrics have no rl section.",
)
@click.option(
    "--out", "out_dir", default="eval", show_default=True, type=click.Path(file_okay=False)
)
@click.option(
    "--metrics",
    "metrics_path",
    default="metrics/eval.json",
    show_default=True,
    type=click.Path(dir_okay=False),
)
@click.option("--limit", type=click.IntRange(min=1), help="[params: eval.limit] first N items.")
def main(
    params_file: str,
    evalset: str | None,
    tokenizer_path: str,
    stats_path: str,
    model_dir: str,
    rl_model_dir: str,
    out_dir: str,
    metrics_path: str,
    limit: int | None,
) -> None:
    """Greedy generation before (the base model), after (the trained one) and after RL;
    scored answers and work. The models are built from their own configs.

    \b
    Writes OUT/before.jsonl, OUT/after.jsonl and OUT/rl.jsonl (one scored item per line),
    OUT/accuracy_by_category.json (plot data) and METRICS (before, after, delta; with RL on,
    rl and delta_rl: rl minus after).
    """
    params = load_params(params_file)
    from tunixrt_dvc import distributed
    from tunixrt_dvc.eval.evaluate import eval_prompts, evaluate
    from tunixrt_dvc.io import atomic_write, write_json
    from tunixrt_dvc.model.build import build_base, open_model
    from tunixrt_dvc.model.weights import read_model_card
    from tunixrt_dvc.pipeline import check_deps_hash
    from tunixrt_dvc.task.evalsets import load_evalset
    from tunixrt_dvc.task.metrics import accuracy_plot_rows, eval_metrics
    from tunixrt_dvc.text.chat_format import read_chat_format
    from tunixrt_dvc.text.tokenizer import Tokenizer
    from tunixrt_dvc.traces.schemas import dumps

    check_deps_hash({"model.checkpoint": params.model.checkpoint})
    checkpoint = params.model.checkpoint  # the base a card names by its hash, found here
    evalset_path = evalset or params.eval.evalset
    items = load_evalset(evalset_path)[: limit or params.eval.limit]
    tokenizer = Tokenizer.load(tokenizer_path)
    chat = read_chat_format(stats_path)
    prompts = eval_prompts(items, tokenizer, instruction=chat.instruction, file=evalset_path)
    card = read_model_card(model_dir)
    config = card.architecture.config()
    mesh = distributed.make_mesh(params.mesh, where=params_file)

    out = Path(out_dir)
    rl_dir = Path(rl_model_dir)
    rl_on = (rl_dir / "config.json").exists() and read_model_card(rl_dir).rl_steps > 0
    phases = [("before", lambda: build_base(card, checkpoint=checkpoint))]
    if card.stored != "base":  # 0 training steps: the model is its base, scored once
        phases.append(("after", lambda: open_model(model_dir, checkpoint=checkpoint)[0]))
    if rl_on:
        phases.append(("rl", lambda: open_model(rl_dir, checkpoint=checkpoint)[0]))
    scored = {}
    for phase, make in phases:
        model = make()
        if mesh is not None:  # the sampler runs on the mesh the model was trained on
            distributed.shard_model(model, mesh)
        scored[phase] = evaluate(
            model,
            config,
            tokenizer,
            items,
            prompts,
            recipe=chat.recipe,
            max_new_tokens=params.eval.max_new_tokens,
            batch_size=params.eval.batch_size,
            desc=f"eval {phase}",
            mesh=mesh,
        )
    scored.setdefault("after", scored["before"])
    rl = scored.get("rl")
    scored.setdefault("rl", scored["after"])  # RL off: the model after it is the trained one
    for phase, phase_items in scored.items():
        atomic_write(out / f"{phase}.jsonl", "".join(dumps(s) + "\n" for s in phase_items))

    metrics = eval_metrics(scored["before"], scored["after"], rl)
    write_json(metrics_path, metrics)
    rows = accuracy_plot_rows(scored["before"], scored["after"], rl)
    write_json(out / "accuracy_by_category.json", {"accuracy_by_category": rows})
    b, a = metrics["before"], metrics["after"]
    after_rl = f" -> {metrics['rl']['accuracy']:.3f} (RL)" if rl is not None else ""
    click.echo(
        f"accuracy {b['accuracy']:.3f} -> {a['accuracy']:.3f}{after_rl}, "
        f"format {b['format_compliance']:.3f} -> {a['format_compliance']:.3f} "
        f"({len(items)} items)"
    )
