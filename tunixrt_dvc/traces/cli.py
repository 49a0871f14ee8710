"""`tunixrt traces`: tools for trace stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click
from tqdm import tqdm

from tunixrt_dvc.command import Group
from tunixrt_dvc.errors import InvalidInput, Problem
from tunixrt_dvc.io import atomic_write
from tunixrt_dvc.traces.schemas import StoredTrace
from tunixrt_dvc.traces.tunixrt_api import MAX_BATCH, PostError, PostResult, post_traces


@click.group(cls=Group)
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
@click.option(
    "--create-schema",
    is_flag=True,
    help="Create the traces table in a PostgreSQL database that lacks it (tunix-rt's migrations"
    " could then not create theirs). A SQLite file gets it without asking.",
)
def import_(file: Path, store: str, create_schema: bool) -> None:
    """Load a JSONL of traces into a store in one transaction, skipping ids already there.

    FILE holds one trace per line (flat, or {"id", "created_at", "trace"}); a bad line fails the
    import and nothing is stored. Rows are written as tunix-rt writes them in that store. A
    PostgreSQL database must already have tunix-rt's table (`alembic upgrade head` in tunix-rt's
    backend), unless --create-schema; a SQLite file gets the table if it is not there. An
    existing table is never altered.
    """
    from tunixrt_dvc.traces.jsonl import JsonlSource
    from tunixrt_dvc.traces.urls import open_store

    source = JsonlSource(file, since=None, limit=None)
    with open_store(store) as db:
        bar = tqdm(source, desc="import", unit=" traces", disable=None, mininterval=0.5)
        create = create_schema or db.kind == "sqlite"  # a SQLite file gets its table as before
        result = db.import_traces(valid_or_nothing(iter(bar)), create_schema=create)
    click.echo(
        f"traces import: inserted {result.inserted}, skipped {result.skipped}"
        f" (id already in the store) -> {db.name}"
    )


@traces.command("post")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--api-url", required=True, help="tunix-rt server, e.g. http://localhost:8000")
@click.option(
    "--chunk-size",
    type=click.IntRange(1, MAX_BATCH),
    default=MAX_BATCH,
    show_default=True,
    help="Traces per request.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds to wait for each request.",
)
@click.option(
    "--receipt",
    type=click.Path(dir_okay=False),
    help="Write what was confirmed (our ids and the server's) as JSON, even on failure.",
)
def post_command(
    file: str, api_url: str, chunk_size: int, timeout: float, receipt: str | None
) -> None:
    """Send the traces in FILE (JSONL) to a tunix-rt server's POST /api/traces/batch."""
    if not api_url.startswith(("http://", "https://")):
        msg = f"must be an http(s) URL, got {api_url!r}"
        raise click.BadParameter(msg, param_hint="'--api-url'")

    def write_receipt(result: PostResult) -> None:
        if receipt:
            atomic_write(Path(receipt), result.model_dump_json(indent=2) + "\n")

    try:
        result = post_traces(file, api_url=api_url, chunk_size=chunk_size, timeout=timeout)
    except PostError as e:
        for c in e.result.accepted:
            click.echo(f"confirmed: chunk {c.index} (lines {c.first_line}-{c.last_line})")
        write_receipt(e.result)
        raise
    for c in result.accepted:
        click.echo(f"confirmed: chunk {c.index} (lines {c.first_line}-{c.last_line})")
    write_receipt(result)
    click.echo(f"posted {result.sent} traces in {len(result.accepted)} chunk(s) to {result.url}")
