"""The trace store: tunix-rt's `traces` table in SQLite (the embedded default) or PostgreSQL.

    traces(id UUID PRIMARY KEY, created_at TIMESTAMPTZ, trace_version TEXT, payload JSON)

In SQLite every column is TEXT and `created_at` is ISO-8601 in UTC with microseconds
(`2025-01-01T00:00:00.000000+00:00`), one width for all rows, so that text order is time order.
"""

from __future__ import annotations

import sqlite3
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from datetime import UTC
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

import click

from tunixrt_dvc.errors import InvalidInput, Problem
from tunixrt_dvc.schemas import MAX_TRACE_BYTES, StoredTrace, dumps
from tunixrt_dvc.sources import TABLE, connect_postgres, redact

_BATCH = 1000


class ImportResult(NamedTuple):
    inserted: int
    skipped: int  # ids already in the store (or repeated in the input: the first one is kept)


def _rows(traces: Iterable[StoredTrace], *, name: str) -> Iterator[tuple[str, str, str, str]]:
    """(id, created_at text, trace_version, payload) per trace, refusing over-limit payloads."""
    for t in traces:
        payload = dumps(t.trace)
        if len(payload) > MAX_TRACE_BYTES // 4 and len(payload.encode()) > MAX_TRACE_BYTES:
            msg = f"serialized trace is over the limit of {MAX_TRACE_BYTES} bytes"
            raise InvalidInput([Problem(name, None, f"{t.id}.payload", msg)])
        at = t.created_at.astimezone(UTC).isoformat(timespec="microseconds")
        yield t.id, at, t.trace.trace_version, payload


def _batches(rows: Iterator[Any]) -> Iterator[list[Any]]:
    while batch := list(islice(rows, _BATCH)):
        yield batch


class TraceStore(ABC):
    """`TraceStore.open(url)`: `sqlite:PATH` (or a path ending .sqlite/.db) or `postgresql://...`."""

    name: str

    @staticmethod
    def open(url: str) -> TraceStore:
        if url.startswith(("postgresql://", "postgres://")):
            return PostgresStore(url)
        path = url.removeprefix("sqlite:")
        if url.startswith("sqlite:") or Path(path).suffix.lower() in (".sqlite", ".sqlite3", ".db"):
            return SqliteStore(Path(path))
        msg = "a store is sqlite:PATH, PATH.sqlite, PATH.db or postgresql://..."
        raise InvalidInput([Problem(url, None, "<store>", msg)])

    @abstractmethod
    def create_schema(self) -> None:
        """Create the table and its (created_at, id) index if they are not there."""
        ...

    @abstractmethod
    def import_traces(self, traces: Iterable[StoredTrace]) -> ImportResult:
        """Insert in one transaction (all or nothing), skipping ids already in the store."""
        ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SqliteStore(TraceStore):
    """The same traces inserted in the same order give a byte-identical file: nothing in it
    depends on the clock (no WAL, rollback journal only)."""

    def __init__(self, path: Path):
        self.path = path
        self.name = f"sqlite:{path}"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(path, isolation_level=None)  # transactions are explicit

    def create_schema(self) -> None:
        self.conn.executescript(
            f"""
            BEGIN;
            CREATE TABLE IF NOT EXISTS {TABLE} (
                id TEXT PRIMARY KEY,
                created_at TEXT NOT NULL,
                trace_version TEXT NOT NULL,
                payload TEXT NOT NULL
            );
            CREATE INDEX IF NOT EXISTS ix_{TABLE}_created_at_id ON {TABLE} (created_at, id);
            COMMIT;
            """
        )

    def import_traces(self, traces: Iterable[StoredTrace]) -> ImportResult:
        conn = self.conn
        sql = (
            f"INSERT INTO {TABLE} (id, created_at, trace_version, payload) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (id) DO NOTHING"
        )
        total = 0
        before = conn.total_changes
        conn.execute("BEGIN IMMEDIATE")
        try:
            for batch in _batches(_rows(traces, name=self.name)):
                conn.executemany(sql, batch)
                total += len(batch)
            inserted = conn.total_changes - before
            conn.execute("COMMIT")
        except BaseException as e:
            conn.execute("ROLLBACK")
            if isinstance(e, sqlite3.OperationalError):  # no table, no unique id, locked, ...
                raise click.ClickException(f"{self.name}: {e}") from None
            raise
        return ImportResult(inserted, total - inserted)

    def close(self) -> None:
        self.conn.close()


class PostgresStore(TraceStore):
    """Rows are streamed with COPY into a temporary table, then inserted in one statement."""

    def __init__(self, url: str):
        self.name = redact(url)
        self.conn = connect_postgres(url, name=self.name)

    def create_schema(self) -> None:
        with self.conn.transaction():
            self.conn.execute(
                f"""CREATE TABLE IF NOT EXISTS {TABLE} (
                    id UUID PRIMARY KEY,
                    created_at TIMESTAMPTZ NOT NULL,
                    trace_version VARCHAR(64) NOT NULL,
                    payload JSON NOT NULL
                )"""
            )
            self.conn.execute(
                f"CREATE INDEX IF NOT EXISTS ix_{TABLE}_created_at_id ON {TABLE} (created_at, id)"
            )

    def import_traces(self, traces: Iterable[StoredTrace]) -> ImportResult:
        conn = self.conn
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(
                "SELECT data_type FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = %s AND column_name = 'id'",
                (TABLE,),
            )
            row = cur.fetchone()
            if row is None:
                raise InvalidInput([Problem(self.name, None, TABLE, "no such table")])
            uuid_ids = row[0] == "uuid"
            cur.execute(
                "CREATE TEMPORARY TABLE _import (seq BIGINT, id TEXT, created_at TIMESTAMPTZ,"
                " trace_version TEXT, payload TEXT) ON COMMIT DROP"
            )
            total = 0
            with cur.copy(
                "COPY _import (seq, id, created_at, trace_version, payload) FROM STDIN"
            ) as copy:
                for t_id, at, version, payload in _rows(traces, name=self.name):
                    if uuid_ids:
                        _check_uuid(t_id, name=self.name)
                    copy.write_row((total, t_id, at, version, payload))
                    total += 1
            id_expr = "id::uuid" if uuid_ids else "id"
            cur.execute(
                f"INSERT INTO {TABLE} (id, created_at, trace_version, payload)"
                f" SELECT {id_expr}, created_at, trace_version, payload::json FROM _import"
                " ORDER BY seq ON CONFLICT (id) DO NOTHING"
            )
            inserted = cur.rowcount
        return ImportResult(inserted, total - inserted)

    def close(self) -> None:
        self.conn.close()


def _check_uuid(value: str, *, name: str) -> None:
    try:
        uuid.UUID(value)
    except ValueError:
        msg = f"{value!r} is not a UUID (the store's id column is of type uuid)"
        raise InvalidInput([Problem(name, None, "id", msg)]) from None
