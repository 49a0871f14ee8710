"""Stage `corpus`: build the embedded default trace store from the seeded generator."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
from tqdm import tqdm

from tunixrt_dvc import corpus
from tunixrt_dvc.cli import params_option
from tunixrt_dvc.params import load_params


@click.command()
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

    The store is rebuilt from scratch, so the file is byte-identical for the same params.
    """
    from tunixrt_dvc.store import TraceStore

    params = load_params(params_file)
    n = n_traces or params.corpus.n_traces
    if write_evalset:
        items = corpus.eval_items(n=n, seed=params.seed)
        tmp = Path(write_evalset + ".tmp")
        tmp.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in items), "utf-8")
        os.replace(tmp, write_evalset)
        click.echo(f"wrote {len(items)} eval items to {write_evalset}")
        return
    path = Path(store or params.corpus.store)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    db = TraceStore.open(f"sqlite:{tmp}")
    db.create_schema()
    result = db.import_traces(
        tqdm(
            corpus.traces(n=n, seed=params.seed), total=n, desc="corpus", unit="trace", disable=None
        )
    )
    db.close()
    os.replace(tmp, path)
    click.echo(f"wrote {result.inserted} traces to {path}")
