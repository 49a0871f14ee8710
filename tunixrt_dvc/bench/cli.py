"""`tunixrt bench`: measure this machine. Prints a table and writes the figures as JSON.

Each row of the benchmark is a function `row(ctx: BenchContext) -> list[dict]` in this package,
registered by name in ROWS ("module:function"); it imports the library, never the other way.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from tunixrt_dvc.bench.context import BenchContext
from tunixrt_dvc.command import Command

ROWS: dict[str, str] = {
    "export": "tunixrt_dvc.bench.export:export_row",
    "format": "tunixrt_dvc.bench.format:format_row",
    "train": "tunixrt_dvc.bench.train:train_row",
    "eval": "tunixrt_dvc.bench.eval:eval_row",
    "dvc": "tunixrt_dvc.bench.dvc:dvc_row",
    "mesh": "tunixrt_dvc.bench.scale:mesh_row",
    "lora": "tunixrt_dvc.bench.scale:lora_row",
    "grpo": "tunixrt_dvc.bench.grpo:grpo_row",
    "gpu": "tunixrt_dvc.bench.gpu:gpu_row",
    "gemma": "tunixrt_dvc.bench.gemma:gemma_row",
}
# What a plain `tunixrt bench` runs: every row this (CPU) machine can.
DEFAULT_ROWS = ("export", "format", "train", "eval", "mesh", "lora", "grpo", "dvc")


def run_rows(names: list[str], ctx: BenchContext) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(name, rows) per row, as each finishes."""
    for name in names:
        module, attr = ROWS[name].split(":")
        yield name, getattr(importlib.import_module(module), attr)(ctx)


def table(name: str, rows: list[dict[str, Any]]) -> str:
    if not rows:
        return f"{name}: (no rows)"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = [name, "  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _ints(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"not a comma-separated list of integers: {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise click.BadParameter("sizes must be integers >= 1")
    return sizes


@click.command(cls=Command)
@click.option(
    "--rows",
    default=",".join(DEFAULT_ROWS),
    show_default=True,
    help=f"Rows to run: {', '.join(ROWS)}.",
)
@click.option("--sizes", default="10000,100000,1000000", show_default=True, help="Problem sizes.")
@click.option("--out", default="bench.json", show_default=True, type=click.Path(dir_okay=False))
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    help="Keep generated inputs here and reuse them (default: a temporary directory).",
)
def main(rows: str, sizes: str, out: str, workdir: str | None) -> None:
    """Measure this machine: each row runs at each size; prints a table, writes JSON to OUT."""
    names = [r.strip() for r in rows.split(",") if r.strip()]
    if unknown := [r for r in names if r not in ROWS]:
        raise click.BadParameter(
            f"unknown rows {unknown}; known: {sorted(ROWS)}", param_hint="--rows"
        )
    from tunixrt_dvc.provenance import device_kind

    machine = {
        "device": device_kind(),  # as fingerprints name it: the CPU's model and kernel ISA
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    results: dict[str, list[dict[str, Any]]] = {}
    ctx_sizes = _ints(sizes)
    with tempfile.TemporaryDirectory(prefix="tunixrt-bench-") as tmp:
        work = Path(workdir) if workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        # Each row is printed and saved as soon as it is done: a later row failing loses nothing.
        for name, result in run_rows(names, BenchContext(sizes=ctx_sizes, workdir=work)):
            results[name] = result
            click.echo(table(name, result) + "\n")
            doc = {"machine": machine, "rows": results}
            Path(out).write_text(json.dumps(doc, indent=2) + "\n")
    click.echo(f"wrote {out}")
