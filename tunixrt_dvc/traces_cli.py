"""`tunixrt traces`: tools for trace stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click
from tqdm import tqdm

from tunixrt_dvc.errors import InvalidInput, Problem
from tunixrt_dvc.schemas import StoredTrace
from tunixrt_dvc.tunixrt_api import post_command


@click.group()
def traces() -> None:
    """Move traces between JSONL files and trace stores (SQLite, PostgreSQL)."""


def valid_or_nothing(records: Iterator[StoredTrace | list[Problem]]) -> Iterator[StoredTrace]:
    """Pass traces through; at the end, raise InvalidInput if any record was bad.

    Raising from inside the iteration makes a consumer's transaction roll back: all or nothing.
    """
    problems: list[Problem] = []
    for item in records:
        if isinstance(item, StoredTrace):
            if not problems:
                yield item
        else:
            problems.extend(item)
    if problems:
        raise InvalidInput(problems)


@traces.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--store", required=True, help="sqlite:PATH, PATH.sqlite or postgresql://...")
def import_(file: Path, store: str) -> None:
    """Load a JSONL of traces into a store in one transaction, skipping ids already there.

    FILE holds one trace per line (flat, or {"id", "created_at", "trace"}); a bad line fails the
    import and nothing is stored. The table is created if it is not there.
    """
    from tunixrt_dvc.sources import JsonlSource
    from tunixrt_dvc.store import TraceStore

    source = JsonlSource(file, since=None, limit=None)
    with TraceStore.open(store) as db:
        db.create_schema()
        bar = tqdm(source, desc="import", unit=" traces", disable=None, mininterval=0.5)
        result = db.import_traces(valid_or_nothing(iter(bar)))
    click.echo(
        f"traces import: inserted {result.inserted}, skipped {result.skipped}"
        f" (id already in the store) -> {db.name}"
    )


# `traces post`: send a JSONL of traces to a tunix-rt server (tunixrt_dvc/tunixrt_api.py).
traces.add_command(post_command)
