"""Stage `eval`: generate with the base and the trained model on the fixed eval set, and score."""

from __future__ import annotations

from pathlib import Path

import click

from tunixrt_dvc.cli import Command, params_option
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
    out_dir: str,
    metrics_path: str,
    limit: int | None,
) -> None:
    """Greedy generation before (the base model) and after (the trained one); scored answers
    and work. Both models are built from the trained model's own config.

    \b
    Writes OUT/before.jsonl and OUT/after.jsonl (one scored item per line),
    OUT/accuracy_by_category.json (plot data) and METRICS (before, after, delta).
    """
    params = load_params(params_file)
    from tunixrt_dvc import distributed
    from tunixrt_dvc.eval.evaluate import eval_prompts, evaluate
    from tunixrt_dvc.io import atomic_write, write_json
    from tunixrt_dvc.model.build import build_base
    from tunixrt_dvc.model.weights import load_model
    from tunixrt_dvc.task import scoring
    from tunixrt_dvc.task.evalsets import load_evalset
    from tunixrt_dvc.text.dataset import read_chat_format
    from tunixrt_dvc.text.tokenizer import Tokenizer
    from tunixrt_dvc.traces.schemas import dumps

    evalset_path = evalset or params.eval.evalset
    items = load_evalset(evalset_path)[: limit or params.eval.limit]
    tokenizer = Tokenizer.load(tokenizer_path)
    chat = read_chat_format(stats_path)
    prompts = eval_prompts(items, tokenizer, instruction=chat.instruction, file=evalset_path)
    tuned, card = load_model(model_dir)
    config = card.architecture.config()
    mesh = distributed.make_mesh(params.mesh, where=params_file)

    out = Path(out_dir)
    scored = {}
    for phase, model in (("before", build_base(card)), ("after", tuned)):
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
        atomic_write(out / f"{phase}.jsonl", "".join(dumps(s) + "\n" for s in scored[phase]))

    metrics = scoring.eval_metrics(scored["before"], scored["after"])
    write_json(metrics_path, metrics)
    write_json(
        out / "accuracy_by_category.json",
        {"accuracy_by_category": scoring.accuracy_plot_rows(scored["before"], scored["after"])},
    )
    b, a = metrics["before"], metrics["after"]
    click.echo(
        f"accuracy {b['accuracy']:.3f} -> {a['accuracy']:.3f}, "
        f"format {b['format_compliance']:.3f} -> {a['format_compliance']:.3f} "
        f"({len(items)} items)"
    )
