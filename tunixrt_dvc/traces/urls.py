"""Where traces live, from one URL syntax shared by sources and stores; opening them.

Each backend module is imported on use: PostgreSQL's driver and UNGAR load only when needed.

    PATH.jsonl | jsonl:PATH                      a JSONL file (a source only)
    sqlite:PATH | PATH.sqlite | .sqlite3 | .db   a SQLite file
    postgresql://... | postgres://...            a PostgreSQL database
    ungar:high_card_duel?episodes=N&seed=S       UNGAR episodes played on the fly (a source only)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from tunixrt_dvc.errors import InvalidInput, Problem
from tunixrt_dvc.traces.schemas import MAX_TRACE_BYTES

if TYPE_CHECKING:
    from tunixrt_dvc.traces.source import Source
    from tunixrt_dvc.traces.store import TraceStore

Kind = Literal["jsonl", "sqlite", "postgresql", "ungar"]
SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")


@dataclass(frozen=True)
class Location:
    kind: Kind
    target: str  # a path for files, the URL itself for the others


def parse_location(url: str) -> Location | None:
    """The kind of place `url` names, or None if it names none."""
    if url.startswith(("postgresql://", "postgres://")):
        return Location("postgresql", url)
    if url.startswith("ungar:"):
        return Location("ungar", url)
    for scheme in ("sqlite", "jsonl"):
        if url.startswith(f"{scheme}:"):
            return Location(scheme, url.removeprefix(f"{scheme}:"))
    suffix = Path(url).suffix.lower()
    if suffix == ".jsonl":
        return Location("jsonl", url)
    if suffix in SQLITE_SUFFIXES:
        return Location("sqlite", url)
    return None


_SOURCE_KINDS = (
    "PATH.jsonl, jsonl:PATH, sqlite:PATH, PATH.sqlite, PATH.db, postgresql://... or "
    "ungar:high_card_duel?episodes=N&seed=S"
)


def open_source(
    url: str,
    *,
    since: datetime | None = None,
    limit: int | None = None,
    max_trace_bytes: int = MAX_TRACE_BYTES,
) -> Source:
    """The source `url` names (see the module docstring).

    `since` keeps records created at or after it (naive means UTC); `limit` stops after that many
    records (valid or not); a trace whose canonical serialization is over `max_trace_bytes` is
    rejected. Opening checks what is cheap to check; reading reports the rest.
    """
    if limit is not None and limit < 1:
        raise InvalidInput([Problem("--limit", None, "limit", f"must be >= 1, got {limit}")])
    if max_trace_bytes < 1:
        msg = f"must be >= 1, got {max_trace_bytes}"
        raise InvalidInput([Problem("--max-trace-bytes", None, "max_trace_bytes", msg)])
    if since is not None:
        since = since.replace(tzinfo=UTC) if since.tzinfo is None else since.astimezone(UTC)
    kw = {"since": since, "limit": limit, "max_trace_bytes": max_trace_bytes}
    where = parse_location(url)
    if where is None:
        msg = f"unknown kind of source: use {_SOURCE_KINDS}"
        raise InvalidInput([Problem(url, None, "<source>", msg)])
    if where.kind == "jsonl":
        from tunixrt_dvc.traces.jsonl import JsonlSource

        return JsonlSource(Path(where.target), **kw)
    if where.kind == "sqlite":
        from tunixrt_dvc.traces.sqlite import SqliteSource

        return SqliteSource(Path(where.target), **kw)
    if where.kind == "postgresql":
        from tunixrt_dvc.traces.postgres import PostgresSource

        return PostgresSource(where.target, **kw)
    from tunixrt_dvc.traces.ungar import UngarSource

    return UngarSource(where.target, **kw)


def open_store(url: str) -> TraceStore:
    """The store `url` names: `sqlite:PATH` (or PATH.sqlite, PATH.db) or `postgresql://...`."""
    where = parse_location(url)
    if where is not None and where.kind == "sqlite":
        from tunixrt_dvc.traces.sqlite import SqliteStore

        return SqliteStore(Path(where.target))
    if where is not None and where.kind == "postgresql":
        from tunixrt_dvc.traces.postgres import PostgresStore

        return PostgresStore(where.target)
    msg = "a store is sqlite:PATH, PATH.sqlite, PATH.db or postgresql://..."
    raise InvalidInput([Problem(url, None, "<store>", msg)])
