"""tunix-rt's `traces` table in a SQLite file: a source and a store.

In SQLite every column is TEXT and `created_at` is ISO-8601 in UTC with microseconds
(`2025-01-01T00:00:00.000000+00:00`), one width for all rows, so that text order is time order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tunixrt_dvc.errors import InvalidInput, Problem, ResourceError
from tunixrt_dvc.traces.schemas import StoredTrace
from tunixrt_dvc.traces.source import (
    COLUMNS,
    TABLE,
    Rejected,
    Source,
    _text,
    _ts_key,
    parse_timestamp,
    row_item,
)
from tunixrt_dvc.traces.store import ImportResult, TraceStore, batches, rows_of


class SqliteSource(Source):
    """A SQLite file with tunix-rt's `traces` table; `created_at` is ISO-8601 text.

    The database sorts by the text of created_at, which is time order only when every value has
    the same format and offset (as the ones `TraceStore` writes). A first, cheap pass over the
    (created_at, id) index checks that; if not, rows are sorted by their parsed time instead.
    """

    kind = "sqlite"

    def __init__(self, path: Path, *, since: datetime | None, limit: int | None):
        super().__init__(f"sqlite:{path}", since=since, limit=limit)
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise InvalidInput([Problem(self.name, None, "<file>", "not found")])
        conn = sqlite3.connect(f"file:{quote(str(self.path))}?mode=ro", uri=True)
        conn.text_factory = bytes  # decode ourselves: invalid UTF-8 is a problem of one row
        conn.create_function("ts_key", 1, _sqlite_ts_key, deterministic=True)
        try:
            cols = {r[1].decode() for r in conn.execute(f"PRAGMA table_info({TABLE})")}
        except sqlite3.DatabaseError as e:
            conn.close()
            raise InvalidInput([Problem(self.name, None, "<file>", str(e))]) from None
        if missing := [c for c in COLUMNS if c not in cols]:
            conn.close()
            msg = f"needs table {TABLE!r} with columns {', '.join(COLUMNS)} (missing: {missing})"
            raise InvalidInput([Problem(self.name, None, TABLE, msg)])
        return conn

    def _duplicate_ids(self, conn: sqlite3.Connection) -> set[str]:
        for idx in conn.execute(f"PRAGMA index_list({TABLE})").fetchall():
            if idx[2]:  # unique
                cols = [r[2] for r in conn.execute(f"PRAGMA index_info({idx[1].decode()!r})")]
                if cols == [b"id"]:
                    return set()
        sql = f"SELECT id FROM {TABLE} GROUP BY id HAVING count(*) > 1"
        return {r[0].decode("utf-8", "replace") for r in conn.execute(sql) if r[0] is not None}

    def _text_order_is_time_order(self, conn: sqlite3.Connection) -> bool:
        last = None
        sql = f"SELECT ts_key(created_at), id, typeof(id) FROM {TABLE} ORDER BY created_at, id"
        for ts, ident, kind in conn.execute(sql):
            if ts is None or kind != b"text":
                return False
            key = (ts, ident)
            if last is not None and key < last:
                return False
            last = key
        return True

    def _records(self) -> Iterator[tuple[datetime | None, str, int | None, StoredTrace | Rejected]]:
        conn = self._connect()
        try:
            self._dups = self._duplicate_ids(conn)
            if self._text_order_is_time_order(conn):
                order = "created_at, id"  # the index's order
            else:
                order = "ts_key(created_at) NULLS LAST, id COLLATE BINARY"
            sql = (
                f"SELECT id, typeof(id), created_at, trace_version, payload FROM {TABLE}"
                f" ORDER BY {order}"
            )
            for row in conn.execute(sql):
                if (rec := self._row(*row)) is not None:
                    yield rec
        finally:
            conn.close()

    def _row(
        self, raw_id: Any, id_type: bytes, raw_at: Any, raw_version: Any, raw_payload: Any
    ) -> tuple[datetime | None, str, int | None, StoredTrace | Rejected] | None:
        """One row as (created_at, file, line, item); None if it is before `since`."""
        problems: list[Problem] = []
        ident = _decode(raw_id)
        file = f"{self.name}#id={ident if ident is not None else _text(bytes(raw_id or b''))}"
        if id_type != b"text" or not ident:
            msg = f"must be non-empty UTF-8 text (is {id_type.decode()})"
            problems.append(Problem(file, None, "id", msg))
        created = None
        at_text = _decode(raw_at)
        try:
            created = parse_timestamp(at_text) if at_text is not None else None
        except ValueError:
            pass
        if created is None:
            msg = f"not an ISO-8601 date and time: {_show(raw_at)}"
            problems.append(Problem(file, None, "created_at", msg))
        elif self.since is not None and created < self.since:
            return None  # out of range: not worth parsing
        version = _decode(raw_version)
        payload = _decode(raw_payload)
        if raw_payload is not None and payload is None:
            problems.append(Problem(file, None, "payload", "invalid UTF-8"))
            return created, file, None, Rejected(problems, raw=_text(bytes(raw_payload)))
        plen = len(raw_payload) if isinstance(raw_payload, bytes) else 0
        item = row_item(file, ident or "", created, version, payload, plen, problems)
        return created, file, None, item


def _decode(value: Any) -> str | None:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None if value is None else str(value)


def _show(value: Any) -> str:
    return repr(_text(value)) if isinstance(value, bytes) else repr(value)


def _sqlite_ts_key(value: Any) -> int | None:
    text = _decode(value)
    try:
        return _ts_key(parse_timestamp(text)) if text is not None else None
    except ValueError:
        return None


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
            for batch in batches(rows_of(traces, name=self.name)):
                conn.executemany(sql, batch)
                total += len(batch)
            inserted = conn.total_changes - before
            conn.execute("COMMIT")
        except BaseException as e:
            conn.execute("ROLLBACK")
            if isinstance(e, sqlite3.OperationalError):  # no table, no unique id, locked, ...
                raise ResourceError(f"{self.name}: {e}") from None
            raise
        return ImportResult(inserted, total - inserted)

    def close(self) -> None:
        self.conn.close()
