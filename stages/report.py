"""`tunixrt report`: the delta report and the eval generations as tunix-rt traces."""

from __future__ import annotations

import click

from tunixrt_dvc.command import Command, params_option
from tunixrt_dvc.params import load_params
from tunixrt_dvc.report.write import write_report


@click.command(cls=Command)
@click.option(
    "--before",
    "before",
    default="eval/before.jsonl",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Scored items of the base model (JSONL).",
)
@click.option(
    "--after",
    "after",
    default="eval/after.jsonl",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Scored items of the tuned model (JSONL).",
)
@click.option(
    "--rl",
    "rl",
    default="eval/rl.jsonl",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Scored items of the model after RL (read when the metrics have an rl section).",
)
@click.option(
    "--metrics",
    default="metrics/eval.json",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The eval stage's metrics (checked against the items).",
)
@click.option(
    "--manifest",
    default="train/fingerprint.json",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The training run's fingerprint or manifest (hashes, params, device).",
)
@click.option(
    "--format-stats",
    default="data/formatted/stats.json",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The format stage's stats (the recipe the data was rendered with).",
)
@click.option(
    "--out",
    "out_dir",
    default="report",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Output directory.",
)
@click.option(
    "--train-plots",
    default="train/plots/metrics",
    show_default=True,
    type=click.Path(file_okay=False),
    help="The train stage's DVCLive plots (loss, eval loss, lr, grad norm) for index.html.",
)
@click.option(
    "--templates",
    "template_dir",
    default=".dvc/plots",
    show_default=True,
    type=click.Path(file_okay=False),
    help="The project's Vega-Lite templates (the ones `dvc plots` uses).",
)
@params_option("params.yaml to read `report.*` from.")
@click.option(
    "--n-examples",
    type=click.IntRange(min=0),
    default=None,
    help="Side-by-side examples per section [default: params report.n_examples].",
)
def main(
    before: str,
    after: str,
    rl: str,
    metrics: str,
    manifest: str,
    format_stats: str,
    out_dir: str,
    train_plots: str,
    template_dir: str,
    params_file: str,
    n_examples: int | None,
) -> None:
    """Write OUT/delta_report.md, OUT/index.html (one self-contained page with charts) and
    OUT/eval_traces.jsonl (loadable by `tunixrt traces import`)."""
    params = load_params(params_file)
    out = write_report(
        before_path=before,
        after_path=after,
        rl_path=rl,
        metrics_path=metrics,
        manifest_path=manifest,
        format_stats_path=format_stats,
        out_dir=out_dir,
        n_examples=params.report.n_examples if n_examples is None else n_examples,
        train_plots=train_plots,
        template_dir=template_dir,
        sweep_path=params.report.seed_sweep,
    )
    click.echo(
        f"report: {out.n_items} items -> {out.report}; {out.n_traces} traces -> {out.traces}; "
        f"page -> {out.html}"
    )


if __name__ == "__main__":
    main()
