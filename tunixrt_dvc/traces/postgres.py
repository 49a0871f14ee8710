"""tunix-rt's `traces` table in PostgreSQL: a source and a store.

traces(id UUID PRIMARY KEY, created_at TIMESTAMPTZ, trace_version VARCHAR(64), payload JSON), as
tunix-rt's alembic migrations create it. The table is tunix-rt's: the store never creates or alters
it unless asked (`create_schema`), and never adds an index of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tunixrt_dvc.errors import InvalidInput, Problem, ResourceError
from tunixrt_dvc.traces.schemas import MAX_TRACE_BYTES, StoredTrace, is_uuid
from tunixrt_dvc.traces.source import COLUMNS, TABLE, Rejected, Source, row_item
from tunixrt_dvc.traces.store import ImportResult, TraceStore, rows_of


class PostgresSource(Source):
    """A PostgreSQL database with tunix-rt's `traces` table, read through a server-side cursor."""

    kind = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        since: datetime | None,
        limit: int | None,
        max_trace_bytes: int = MAX_TRACE_BYTES,
    ):
        super().__init__(redact(url), since=since, limit=limit, max_trace_bytes=max_trace_bytes)
        self.url = url

    @staticmethod
    def _duplicate_ids(conn: Any, id_type: str) -> set[str]:
        with conn.cursor() as cur:
            if id_type == "uuid":  # one spelling: a unique index on id means no duplicates
                cur.execute(
                    "SELECT 1 FROM pg_index i JOIN pg_attribute a"
                    " ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
                    " WHERE i.indrelid = %s::regclass AND i.indisunique AND i.indnatts = 1"
                    " AND a.attname = 'id'",
                    (TABLE,),
                )
                if cur.fetchone():
                    return set()
            cur.execute(
                f"SELECT c FROM (SELECT {_canonical_id_sql(id_type)} AS c FROM {TABLE}) AS ids"
                " WHERE c IS NOT NULL GROUP BY c HAVING count(*) > 1"
            )
            return {r[0] for r in cur}

    def _records(self) -> Iterator[tuple[datetime | None, str, int | None, StoredTrace | Rejected]]:
        conn = connect_postgres(self.url, name=self.name)
        try:
            id_type = _check_pg_table(conn, self.name)
            self._dups = self._duplicate_ids(conn, id_type)
            # uuid sorts as its bytes, which is the order of its text; text ids are sorted in
            # their canonical form, with "C" collation to sort by code point as everywhere else.
            id_order = "id" if id_type == "uuid" else f'{_canonical_id_sql(id_type)} COLLATE "C"'
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
                    item = row_item(
                        file,
                        ident,
                        created,
                        version,
                        payload,
                        plen,
                        problems,
                        max_trace_bytes=self.max_trace_bytes,
                    )
                    yield created, file, None, item
        finally:
            conn.close()


# schemas.is_uuid in SQL: 32 hex digits or 8-4-4-4-12, either case.
_H = "[0-9A-Fa-f]"
_UUID_RE = f"^({_H}{{32}}|{_H}{{8}}-{_H}{{4}}-{_H}{{4}}-{_H}{{4}}-{_H}{{12}})$"


def _canonical_id_sql(id_type: str) -> str:
    """schemas.canonical_id of the id column, in SQL (uuid's text is already canonical)."""
    if id_type == "uuid":
        return "id::text"
    return f"(CASE WHEN id::text ~ '{_UUID_RE}' THEN id::text::uuid::text ELSE id::text END)"


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


# The table as tunix-rt's migrations leave it: 001_create_traces_table (the table) and
# f8f1393630e4_add_traces_created_at_index (its index on created_at).
_TUNIXRT_DDL = (
    f"CREATE TABLE {TABLE} (id UUID NOT NULL, created_at TIMESTAMP WITH TIME ZONE NOT NULL,"
    f" trace_version VARCHAR(64) NOT NULL, payload JSON NOT NULL, PRIMARY KEY (id))",
    f"CREATE INDEX ix_{TABLE}_created_at ON {TABLE} (created_at)",
)
NO_TABLE = (
    "no such table: run tunix-rt's migrations first (`alembic upgrade head` in tunix-rt's"
    " backend/), or pass --create-schema (create_schema=True) to create it here"
)


class PostgresStore(TraceStore):
    """Rows are streamed with COPY into a temporary table, then inserted in one statement."""

    kind = "postgresql"

    def __init__(self, url: str):
        self.name = redact(url)
        self.conn = connect_postgres(url, name=self.name)

    def _id_type(self, cur: Any) -> str | None:
        """The data type of the table's id column; None without the table."""
        cur.execute(
            "SELECT data_type FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = %s AND column_name = 'id'",
            (TABLE,),
        )
        row = cur.fetchone()
        return None if row is None else row[0]

    def _create_table(self, cur: Any) -> None:
        """In the current transaction: tunix-rt's table, if it is not there (else nothing)."""
        if self._id_type(cur) is None:
            for statement in _TUNIXRT_DDL:
                cur.execute(statement)

    def create_schema(self) -> None:
        with self.conn.transaction(), self.conn.cursor() as cur:
            self._create_table(cur)

    def import_traces(
        self, traces: Iterable[StoredTrace], *, create_schema: bool = False
    ) -> ImportResult:
        conn = self.conn
        with conn.transaction(), conn.cursor() as cur:
            if create_schema:
                self._create_table(cur)
            id_type = self._id_type(cur)
            if id_type is None:
                raise InvalidInput([Problem(self.name, None, TABLE, NO_TABLE)])
            uuid_ids = id_type == "uuid"
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
                    stamp = at.isoformat(timespec="microseconds")
                    copy.write_row((total, t_id, stamp, version, payload))
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
    if not is_uuid(value):
        msg = f"{value!r} is not a UUID (the store's id column is of type uuid)"
        raise InvalidInput([Problem(name, None, "id", msg)])
