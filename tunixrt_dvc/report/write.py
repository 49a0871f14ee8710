"""The report stage: validate the eval outputs, then write the report and the eval traces."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunixrt_dvc.errors import InvalidInput
from tunixrt_dvc.io import atomic_write, read_json_object, sha256_file
from tunixrt_dvc.report.markdown import render_report
from tunixrt_dvc.report.run import check_metrics, pair_items
from tunixrt_dvc.report.traces import eval_traces
from tunixrt_dvc.task.scoring import eval_metrics, read_scored
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
    n_items: int
    n_traces: int


def write_report(
    *,
    before_path: str | Path,
    after_path: str | Path,
    metrics_path: str | Path,
    manifest_path: str | Path,
    out_dir: str | Path,
    n_examples: int,
) -> ReportOutputs:
    """Validate every input, then write delta_report.md and eval_traces.jsonl under out_dir."""
    before_path, after_path = Path(before_path), Path(after_path)
    metrics_path, manifest_path, out_dir = Path(metrics_path), Path(manifest_path), Path(out_dir)
    before, after = read_scored(before_path), read_scored(after_path)
    pairs = pair_items(before, after, before_file=str(before_path), after_file=str(after_path))
    recomputed = eval_metrics(before, after)
    problems = check_metrics(
        read_json_object(metrics_path, what="metrics file"), recomputed, file=str(metrics_path)
    )
    if problems:
        raise InvalidInput(problems)
    manifest = read_json_object(manifest_path, what="run manifest")
    inputs = {
        label: f"`{_display(p)}` (sha256 `{sha256_file(p)}`)"
        for label, p in (("before", before_path), ("after", after_path), ("metrics", metrics_path))
    }
    # Not its hash: the manifest records the run's time and timings, which differ between
    # otherwise identical runs; the fields the report uses are shown under "Run".
    inputs["run manifest"] = f"`{_display(manifest_path)}`"
    report = render_report(
        pairs=pairs, metrics=recomputed, manifest=manifest, n_examples=n_examples, inputs=inputs
    )
    traces = eval_traces(before, after, manifest=manifest)
    report_file, traces_file = out_dir / "delta_report.md", out_dir / "eval_traces.jsonl"
    atomic_write(traces_file, "".join(dumps(t) + "\n" for t in traces))
    atomic_write(report_file, report)
    return ReportOutputs(report_file, traces_file, len(pairs), len(traces))
