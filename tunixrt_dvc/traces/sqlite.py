"""tunix-rt's `traces` table in a SQLite file: a source and a store.

Rows are written as tunix-rt's ORM (SQLAlchemy's `Uuid` and `DateTime` on SQLite) writes them, so
that tunix-rt finds them by id: a UUID id as 32 lowercase hex digits, `created_at` as naive UTC
text with microseconds (`2025-01-01 00:00:00.000000`), one width for all rows, so that text order
is time order. Reading also accepts dashed ids and any ISO-8601 time (files written before, or by
other programs); ids are read in their canonical form (`schemas.canonical_id`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tunixrt_dvc.errors import InvalidInput, Problem, ResourceError
from tunixrt_dvc.traces.schemas import MAX_TRACE_BYTES, StoredTrace, canonical_id, is_uuid
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

    The database sorts by the text of created_at and id, which is (time, canonical id) order only
    when every time has the same format and offset and every UUID id the same spelling (as the
    rows `SqliteStore` writes). A first, cheap pass over the table checks that; if not, rows are
    sorted by their parsed time and canonical id instead.
    """

    kind = "sqlite"

    def __init__(
        self,
        path: Path,
        *,
        since: datetime | None,
        limit: int | None,
        max_trace_bytes: int = MAX_TRACE_BYTES,
    ):
        super().__init__(
            f"sqlite:{path}", since=since, limit=limit, max_trace_bytes=max_trace_bytes
        )
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise InvalidInput([Problem(self.name, None, "<file>", "not found")])
        conn = sqlite3.connect(f"file:{quote(str(self.path))}?mode=ro", uri=True)
        conn.text_factory = bytes  # decode ourselves: invalid UTF-8 is a problem of one row
        conn.create_function("ts_key", 1, _sqlite_ts_key, deterministic=True)
        conn.create_function("canon_id", 1, _sqlite_canon_id, deterministic=True)
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
        """Canonical ids held by more than one row (the same UUID spelled two ways is one id)."""
        if _one_uuid_spelling(conn):  # then distinct texts are distinct canonical ids
            for idx in conn.execute(f"PRAGMA index_list({TABLE})").fetchall():
                if idx[2]:  # unique
                    info = conn.execute(f"PRAGMA index_info({idx[1].decode()!r})")
                    if [r[2] for r in info] == [b"id"]:
                        return set()
        sql = (
            f"SELECT canon_id(CAST(id AS BLOB)) AS c FROM {TABLE} WHERE c IS NOT NULL"
            " GROUP BY c HAVING count(*) > 1"
        )
        return {r[0].decode() for r in conn.execute(sql)}

    def _text_order_is_time_order(self, conn: sqlite3.Connection) -> bool:
        last = None
        sql = (
            f"SELECT ts_key(created_at), canon_id(CAST(id AS BLOB)), typeof(id) FROM {TABLE}"
            " ORDER BY created_at, id"
        )
        for ts, ident, kind in conn.execute(sql):
            if ts is None or ident is None or kind != b"text":
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
                order = "created_at, id"  # the order of the table's (created_at, id) index
            else:
                order = "ts_key(created_at) NULLS LAST, canon_id(CAST(id AS BLOB)) NULLS LAST"
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
        item = row_item(
            file,
            ident or "",
            created,
            version,
            payload,
            plen,
            problems,
            max_trace_bytes=self.max_trace_bytes,
        )
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


def _sqlite_canon_id(value: Any) -> bytes | None:
    """The canonical id of a row's id (passed as a BLOB: its bytes, whatever they are), as UTF-8
    bytes, which SQLite compares as a BLOB: byte order, which is code point order; None if the id
    is not UTF-8 text."""
    text = _decode(value)
    return None if text is None else canonical_id(text).encode()


_HEX = "[0-9A-Fa-f]"
_GLOB_HEX32 = _HEX * 32
_GLOB_DASHED = "-".join(_HEX * n for n in (8, 4, 4, 4, 12))


def _one_uuid_spelling(conn: sqlite3.Connection) -> bool:
    """Whether canonical ids are as distinct as the ids' texts: no UUID id has an uppercase
    digit, and they are all 32 hex digits or all dashed (tunix-rt's and `SqliteStore`'s rows are
    all 32 hex digits). A few scans of the id index, without calling Python."""

    def exists(where: str) -> bool:
        return bool(
            conn.execute(f"SELECT EXISTS(SELECT 1 FROM {TABLE} WHERE {where})").fetchone()[0]
        )

    hex32 = f"id GLOB '{_GLOB_HEX32}'"
    dashed = f"id GLOB '{_GLOB_DASHED}'"
    if exists(f"length(id) = 32 AND {hex32}") and exists(f"length(id) = 36 AND {dashed}"):
        return False
    return not exists(f"length(id) IN (32, 36) AND id <> lower(id) AND ({hex32} OR {dashed})")


def sqlite_id(ident: str) -> str:
    """An id as tunix-rt's ORM stores it in SQLite: a UUID as 32 lowercase hex digits (SQLAlchemy's
    `Uuid` on a database without a uuid type is CHAR(32)); another id as it is."""
    canonical = canonical_id(ident)
    return canonical.replace("-", "") if is_uuid(canonical) else canonical


def sqlite_time(t: datetime) -> str:
    """A time as tunix-rt's ORM stores it in SQLite (SQLAlchemy's DateTime storage format): UTC,
    without an offset, with microseconds: `2025-01-01 00:00:00.000000`. One width for all years
    (1 to 9999), so text order is time order."""
    return t.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


class SqliteStore(TraceStore):
    """The same traces inserted in the same order give a byte-identical file: nothing in it
    depends on the clock (no WAL, rollback journal only)."""

    kind = "sqlite"

    def __init__(self, path: Path):
        self.path = path
        self.name = f"sqlite:{path}"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(path, isolation_level=None)  # transactions are explicit

    def _id_type(self) -> str | None:
        """The declared type of the table's id column ('' if none); None without the table."""
        cols = {r[1]: r[2] for r in self.conn.execute(f"PRAGMA table_info({TABLE})")}
        return cols.get("id", "") if cols else None

    def _create_table(self) -> None:
        """In the current transaction: the table and its (created_at, id) index, if the table is
        not there. A table that is there (tunix-rt's, for one) is left as it is."""
        if self._id_type() is None:
            self.conn.execute(
                f"CREATE TABLE {TABLE} (id TEXT PRIMARY KEY, created_at TEXT NOT NULL,"
                " trace_version TEXT NOT NULL, payload TEXT NOT NULL)"
            )
            self.conn.execute(f"CREATE INDEX ix_{TABLE}_created_at_id ON {TABLE} (created_at, id)")

    def create_schema(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self._create_table()
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def import_traces(
        self, traces: Iterable[StoredTrace], *, create_schema: bool = False
    ) -> ImportResult:
        conn = self.conn
        # An id already stored dashed (by an earlier version) is skipped too (?5).
        sql = (
            f"INSERT INTO {TABLE} (id, created_at, trace_version, payload)"
            f" SELECT ?1, ?2, ?3, ?4 WHERE NOT EXISTS (SELECT 1 FROM {TABLE} WHERE id = ?5)"
            " ON CONFLICT (id) DO NOTHING"
        )
        total = 0
        before = conn.total_changes
        conn.execute("BEGIN IMMEDIATE")
        try:
            if create_schema:
                self._create_table()
            id_type = self._id_type()
            if id_type is None:
                msg = f"{self.name}: no such table: {TABLE} (create_schema=True creates it)"
                raise ResourceError(msg)
            # SQLAlchemy's Uuid (tunix-rt's id) is CHAR(32) in SQLite; UUID, if alembic made it.
            uuid_only = id_type.upper() in ("CHAR(32)", "UUID")
            for batch in batches(self._rows(traces, uuid_only=uuid_only)):
                conn.executemany(sql, batch)
                total += len(batch)
            inserted = conn.total_changes - before
            conn.execute("COMMIT")
        except BaseException as e:
            conn.execute("ROLLBACK")
            if isinstance(e, sqlite3.OperationalError):  # no unique id, locked, ...
                raise ResourceError(f"{self.name}: {e}") from None
            raise
        return ImportResult(inserted, total - inserted)

    def _rows(
        self, traces: Iterable[StoredTrace], *, uuid_only: bool
    ) -> Iterator[tuple[str, str, str, str, str]]:
        for ident, at, version, payload in rows_of(traces, name=self.name):
            canonical = canonical_id(ident)
            if uuid_only and not is_uuid(canonical):
                msg = f"{ident!r} is not a UUID (the store's id column is tunix-rt's, a UUID)"
                raise InvalidInput([Problem(self.name, None, "id", msg)])
            yield sqlite_id(canonical), sqlite_time(at), version, payload, canonical

    def close(self) -> None:
        self.conn.close()
