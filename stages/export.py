"""Stage `export`: traces from a source -> TrainingExample JSONL (no eval-set prompts)."""

from __future__ import annotations

from pathlib import Path

import click

from tunixrt_dvc.command import Command, params_option
from tunixrt_dvc.params import load_params


@click.command(cls=Command)
@click.option("--source", help="jsonl:PATH, sqlite:PATH, postgresql://..., ungar:... [params]")
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), help="TrainingExample JSONL to write."
)
@click.option("--limit", type=click.IntRange(min=1), help="At most N records. [params]")
@click.option("--since", help="Only traces created at or after this ISO-8601 time. [params]")
@click.option(
    "--on-invalid",
    type=click.Choice(["fail", "skip"]),
    help="fail: stop, write nothing; skip: write bad records to OUT's .rejects.jsonl. [params]",
)
@click.option(
    "--max-trace-bytes",
    type=click.IntRange(min=1),
    help="Traces whose canonical serialization is longer are invalid. [params]",
)
@click.option(
    "--evalsets",
    "evalsets_dir",
    type=click.Path(file_okay=False),
    help="Eval sets. [params: evalsets_dir]",
)
@params_option("Read the `export` section from here.")
def main(
    source: str | None,
    out: str,
    limit: int | None,
    since: str | None,
    on_invalid: str | None,
    max_trace_bytes: int | None,
    evalsets_dir: str | None,
    params_file: str,
) -> None:
    """Export validated traces, in (created_at, id) order, as TrainingExample JSONL.

    Traces whose prompt (case-folded, whitespace collapsed) appears in an eval set are dropped.
    The output is written to a temporary file and renamed, so it is complete or absent, and it is
    byte-identical when the traces are. Options override the `export` section of params.yaml.
    """
    from tunixrt_dvc.task.reservations import load_reservations
    from tunixrt_dvc.traces.export import export

    params = load_params(params_file)
    p = params.export
    report = export(
        source or p.source,
        Path(out),
        limit=limit if limit is not None else p.limit,
        since=since if since is not None else p.since,
        on_invalid=on_invalid or p.on_invalid,  # type: ignore[arg-type]
        reserved=load_reservations(evalsets_dir or params.evalsets_dir),
        max_trace_bytes=max_trace_bytes or p.max_trace_bytes,
    )
    click.echo(f"export: {report.summary()} -> {out}")
