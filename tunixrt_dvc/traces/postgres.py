"""tunix-rt's `traces` table in PostgreSQL: a source and a store.

traces(id UUID PRIMARY KEY, created_at TIMESTAMPTZ, trace_version TEXT, payload JSON)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tunixrt_dvc.errors import InvalidInput, Problem, ResourceError
from tunixrt_dvc.traces.schemas import StoredTrace
from tunixrt_dvc.traces.source import COLUMNS, TABLE, Rejected, Source, row_item
from tunixrt_dvc.traces.store import ImportResult, TraceStore, rows_of


class PostgresSource(Source):
    """A PostgreSQL database with tunix-rt's `traces` table, read through a server-side cursor."""

    kind = "postgresql"

    def __init__(self, url: str, *, since: datetime | None, limit: int | None):
        super().__init__(redact(url), since=since, limit=limit)
        self.url = url

    @staticmethod
    def _duplicate_ids(conn: Any) -> set[str]:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT 1 FROM pg_index i JOIN pg_attribute a"
                " ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
                " WHERE i.indrelid = %s::regclass AND i.indisunique AND i.indnatts = 1"
                " AND a.attname = 'id'",
                (TABLE,),
            )
            if cur.fetchone():
                return set()
            cur.execute(f"SELECT id::text FROM {TABLE} GROUP BY id HAVING count(*) > 1")
            return {r[0] for r in cur}

    def _records(self) -> Iterator[tuple[datetime | None, str, int | None, StoredTrace | Rejected]]:
        conn = connect_postgres(self.url, name=self.name)
        try:
            id_type = _check_pg_table(conn, self.name)
            self._dups = self._duplicate_ids(conn)
            # uuid sorts as its bytes, which is the order of its text; text ids need "C" collation
            # to sort by code point as everywhere else.
            id_order = "id" if id_type == "uuid" else 'id COLLATE "C"'
            where = "WHERE created_at >= %(since)s OR created_at IS NULL" if self.since else ""
            sql = (
                f"SELECT id::text, created_at, trace_version, payload::text FROM {TABLE} {where}"
                f" ORDER BY created_at, {id_order} LIMIT %(limit)s"
            )
            with conn.cursor(name="tunixrt_traces") as cur:
                cur.itersize = 2000
                cur.execute(sql, {"since": self.since, "limit": self.limit})
                for ident, created, version, payload in cur:
                    file = f"{self.name}#id={ident}"
                    problems = []
                    if created is None:
                        problems.append(Problem(file, None, "created_at", "is NULL"))
                    else:
                        created = created.astimezone(UTC)
                    plen = len(payload.encode()) if payload is not None else 0
                    item = row_item(file, ident, created, version, payload, plen, problems)
                    yield created, file, None, item
        finally:
            conn.close()


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def connect_postgres(url: str, *, name: str) -> Any:
    import psycopg  # imported on use: only PostgreSQL sources and stores need it

    try:
        return psycopg.connect(url)
    except psycopg.Error as e:
        raise ResourceError(f"{name}: cannot connect: {e}") from None


def _check_pg_table(conn: Any, name: str) -> str:
    """The data type of the id column; raises InvalidInput if the table is not there."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = %s",
            (TABLE,),
        )
        cols = dict(cur.fetchall())
    if missing := [c for c in COLUMNS if c not in cols]:
        msg = f"needs table {TABLE!r} with columns {', '.join(COLUMNS)} (missing: {missing})"
        raise InvalidInput([Problem(name, None, TABLE, msg)])
    return cols["id"]


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
                for t_id, at, version, payload in rows_of(traces, name=self.name):
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
