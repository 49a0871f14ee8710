"""Stage `eval`: generate with the base and the trained model on the fixed eval set, and score."""

from __future__ import annotations

from pathlib import Path

import click

from tunixrt_dvc.cli import params_option
from tunixrt_dvc.params import load_params


@click.command(name="eval")
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
    "--model",
    "model_dir",
    default="train/model",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Trained weights (the train stage's output).",
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
    model_dir: str,
    out_dir: str,
    metrics_path: str,
    limit: int | None,
) -> None:
    """Greedy generation before (base model) and after (trained weights); scored answers and work.

    \b
    Writes OUT/before.jsonl and OUT/after.jsonl (one scored item per line),
    OUT/accuracy_by_category.json (plot data) and METRICS (before, after, delta).
    """
    params = load_params(params_file)
    from tunixrt_dvc import manifest, model, sampling, scoring
    from tunixrt_dvc.errors import InvalidInput, Problem
    from tunixrt_dvc.evalsets import load_evalset
    from tunixrt_dvc.formatting import find_control_tokens, get_recipe, render_prompt
    from tunixrt_dvc.schemas import dumps
    from tunixrt_dvc.tokenizer import Tokenizer
    from tunixrt_dvc.training import load_weights

    evalset_path = evalset or params.eval.evalset
    items = load_evalset(evalset_path)[: limit or params.eval.limit]
    tokenizer = Tokenizer.load(tokenizer_path)
    # Eval prompts go through the same turn template as training: refuse control tokens in them.
    hostile = [
        Problem(evalset_path, n, "prompt", f"contains control token(s) {', '.join(found)}")
        for n, it in enumerate(items, start=1)
        if (found := find_control_tokens(it.prompt, tokenizer.control_pieces))
    ]
    if hostile:
        raise InvalidInput(hostile)
    recipe = get_recipe(params.format.recipe)
    prompts = [render_prompt(it.prompt, instruction=params.format.instruction) for it in items]
    net, config = model.build_model(
        params.model,
        vocab_size=tokenizer.vocab_size,
        max_len=params.train.seq_len,
        seed=params.seed,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scored = {}
    for phase in ("before", "after"):
        if phase == "after":
            load_weights(net, Path(model_dir))
        gens = sampling.generate(
            net,
            tokenizer,
            prompts,
            max_new_tokens=params.eval.max_new_tokens,
            batch_size=params.eval.batch_size,
            num_layers=config.num_layers,
            num_kv_heads=config.num_kv_heads,
            head_dim=config.head_dim,
            desc=f"eval {phase}",
        )
        scored[phase] = [
            scoring.score_item(
                item=it, generation=g.text, parsed=recipe.parse(g.text), gen_tokens=g.n_tokens
            )
            for it, g in zip(items, gens, strict=True)
        ]
        path = out / f"{phase}.jsonl"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(dumps(s) + "\n" for s in scored[phase]), encoding="utf-8")
        tmp.replace(path)

    metrics = scoring.eval_metrics(scored["before"], scored["after"])
    manifest.write_json(Path(metrics_path), metrics)
    manifest.write_json(
        out / "accuracy_by_category.json",
        {"accuracy_by_category": scoring.accuracy_plot_rows(scored["before"], scored["after"])},
    )
    b, a = metrics["before"], metrics["after"]
    click.echo(
        f"accuracy {b['accuracy']:.3f} -> {a['accuracy']:.3f}, "
        f"format {b['format_compliance']:.3f} -> {a['format_compliance']:.3f} "
        f"({len(items)} items)"
    )
