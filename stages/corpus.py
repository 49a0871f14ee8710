"""Stage `corpus`: build the embedded default trace store from the seeded generator."""

from __future__ import annotations

import json
from pathlib import Path

import click
from tqdm import tqdm

from tunixrt_dvc.command import Command, params_option
from tunixrt_dvc.io import atomic_write, atomic_write_with
from tunixrt_dvc.params import load_params
from tunixrt_dvc.task import corpus


@click.command(cls=Command)
@params_option()
@click.option("--store", help="SQLite file to create [params: corpus.store].")
@click.option("-n", "--n-traces", type=click.IntRange(min=1), help="[params: corpus.n_traces]")
@click.option(
    "--write-evalset",
    type=click.Path(dir_okay=False),
    default=None,
    help="Instead: write N eval items (a fixed, versioned eval set) to this JSONL file.",
)
def main(
    params_file: str, store: str | None, n_traces: int | None, write_evalset: str | None
) -> None:
    """Generate show-your-work arithmetic traces into a SQLite trace store (tunix-rt's schema).

    No trace works out a computation of a problem in the eval sets (params: evalsets_dir). The
    store is rebuilt from scratch, so the file is byte-identical for the same params.
    """
    from tunixrt_dvc.task.reservations import load_reservations
    from tunixrt_dvc.traces.sqlite import SqliteStore

    params = load_params(params_file)
    n = n_traces or params.corpus.n_traces
    if write_evalset:
        items = corpus.eval_items(n=n, seed=params.seed)
        atomic_write(
            write_evalset, "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in items)
        )
        click.echo(f"wrote {len(items)} eval items to {write_evalset}")
        return
    path = Path(store or params.corpus.store)
    reserved = load_reservations(params.evalsets_dir).computations

    def build(tmp: Path) -> None:  # an empty file is an empty SQLite database
        with SqliteStore(tmp) as db:
            db.create_schema()
            traces = corpus.traces(n=n, seed=params.seed, reserved=reserved)
            db.import_traces(tqdm(traces, total=n, desc="corpus", unit="trace", disable=None))

    atomic_write_with(path, build)
    click.echo(f"wrote {n} traces to {path}")
