"""The report stage: validate the eval outputs, then write the report and the eval traces."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunixrt_dvc.errors import InvalidInput, Problem
from tunixrt_dvc.io import atomic_write, read_json_object, sha256_file
from tunixrt_dvc.report.charts import Chart, grouped_bars, line_chart, read_tsv
from tunixrt_dvc.report.html import render_html
from tunixrt_dvc.report.markdown import render_report
from tunixrt_dvc.report.run import check_metrics, pair_items
from tunixrt_dvc.report.traces import eval_traces
from tunixrt_dvc.task.metrics import accuracy_plot_rows, eval_metrics
from tunixrt_dvc.task.scoring import read_scored
from tunixrt_dvc.text.chat_format import read_chat_format
from tunixrt_dvc.traces.schemas import dumps


def _display(path: Path) -> str:
    """A path for the report: relative to the working directory, never absolute."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.name


@dataclass(frozen=True)
class ReportOutputs:
    report: Path
    traces: Path
    html: Path | None
    n_items: int
    n_traces: int


_DIFFICULTY_ORDER = ("easy", "medium", "hard")


def charts(
    before: list, after: list, rl: list | None, *, train_plots: Path, template_dir: Path
) -> list[Chart]:
    """The page's charts: training curves from DVCLive's files (none when the run trained 0
    steps and logged none), accuracy from the items."""

    def metric(name: str, column: str) -> list[tuple[float, float]]:
        return read_tsv(train_plots / f"{name}.tsv", column)

    by_difficulty = accuracy_plot_rows(before, after, rl, by="difficulty")
    order = {d: i for i, d in enumerate(_DIFFICULTY_ORDER)}
    by_difficulty.sort(key=lambda r: (order.get(r["difficulty"], len(order)), r["difficulty"]))
    lines = {"template_dir": template_dir, "x": "step"}
    training = []
    if (train_plots / "train" / "loss.tsv").exists():
        training = [
            line_chart(
                "loss",
                "Loss and eval loss (log scale)",
                {"train": metric("train/loss", "loss"), "eval": metric("eval/loss", "loss")},
                y="loss",
                template="log_linear",
                **lines,
            ),
            line_chart(
                "lr",
                "Learning rate",
                {"train": metric("train/lr", "lr")},
                y="lr",
                template="simple",
                **lines,
            ),
            line_chart(
                "grad_norm",
                "Gradient norm (log scale)",
                {"train": metric("train/grad_norm", "grad_norm")},
                y="grad_norm",
                template="log_linear",
                **lines,
            ),
        ]
    return [
        *training,
        grouped_bars(
            "by_category",
            "Accuracy by category",
            accuracy_plot_rows(before, after, rl),
            x="category",
            y="accuracy",
            template_dir=template_dir,
        ),
        grouped_bars(
            "by_difficulty",
            "Accuracy by difficulty",
            by_difficulty,
            x="difficulty",
            y="accuracy",
            template_dir=template_dir,
        ),
    ]


def write_report(
    *,
    before_path: str | Path,
    after_path: str | Path,
    metrics_path: str | Path,
    rl_path: str | Path | None = None,
    manifest_path: str | Path,
    format_stats_path: str | Path | None = None,
    out_dir: str | Path,
    n_examples: int,
    train_plots: str | Path | None = None,
    template_dir: str | Path = ".dvc/plots",
    sweep_path: str | Path | None = None,
) -> ReportOutputs:
    """Validate every input, then write delta_report.md, eval_traces.jsonl and, given the train
    stage's DVCLive plots, index.html (with the seed-sweep summary when one is given)."""
    before_path, after_path = Path(before_path), Path(after_path)
    metrics_path, manifest_path, out_dir = Path(metrics_path), Path(manifest_path), Path(out_dir)
    before, after = read_scored(before_path), read_scored(after_path)
    pairs = pair_items(before, after, before_file=str(before_path), after_file=str(after_path))
    stored = read_json_object(metrics_path, what="metrics file")
    rl = None
    if "rl" in stored:  # RL was on: its items must be given and agree with the metrics
        if rl_path is None:
            raise InvalidInput(
                [Problem(str(metrics_path), None, "rl", "has an rl section: give the RL items")]
            )
        rl = read_scored(rl_path)
        pair_items(after, rl, before_file=str(after_path), after_file=str(rl_path))
    recomputed = eval_metrics(before, after, rl)
    problems = check_metrics(stored, recomputed, file=str(metrics_path))
    if problems:
        raise InvalidInput(problems)
    manifest = read_json_object(manifest_path, what="run manifest")
    if format_stats_path is not None:  # the recipe, as the format stage used it
        manifest["recipe"] = read_chat_format(format_stats_path).recipe
    inputs = {
        label: f"`{_display(p)}` (sha256 `{sha256_file(p)}`)"
        for label, p in (("before", before_path), ("after", after_path), ("metrics", metrics_path))
    }
    # Not its hash: the manifest records the run's time and timings, which differ between
    # otherwise identical runs; the fields the report uses are shown under "Run".
    inputs["run manifest"] = f"`{_display(manifest_path)}`"
    sweep = read_json_object(sweep_path, what="seed-sweep summary") if sweep_path else None
    report = render_report(
        pairs=pairs,
        metrics=recomputed,
        manifest=manifest,
        n_examples=n_examples,
        inputs=inputs,
        sweep=sweep,
    )
    traces = eval_traces(before, after, manifest=manifest)
    html_file = None
    if train_plots is not None:
        page = render_html(
            pairs=pairs,
            metrics=recomputed,
            manifest=manifest,
            charts=charts(
                before, after, rl, train_plots=Path(train_plots), template_dir=Path(template_dir)
            ),
            n_examples=n_examples,
            sweep=sweep,
        )
        html_file = out_dir / "index.html"
        atomic_write(html_file, page)
    report_file, traces_file = out_dir / "delta_report.md", out_dir / "eval_traces.jsonl"
    atomic_write(traces_file, "".join(dumps(t) + "\n" for t in traces))
    atomic_write(report_file, report)
    return ReportOutputs(report_file, traces_file, html_file, len(pairs), len(traces))
