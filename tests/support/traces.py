"""Small valid traces for tests."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tunixrt_dvc.traces.schemas import ReasoningTrace, StoredTrace, TraceStep


def make_trace(k: int, *, prompt: str | None = None, **meta: object) -> ReasoningTrace:
    """A small valid trace whose content depends on k."""
    return ReasoningTrace(
        trace_version="1.0",
        prompt=prompt or f"What is {k} + 7? Show your work.",
        final_answer=str(k + 7),
        steps=[
            TraceStep(i=0, type="column", content=f"{k % 10} + 7 = {k % 10 + 7}"),
            TraceStep(i=1, type="result", content=f"{k} + 7 = {k + 7}"),
        ],
        meta={"tags": ["add"], **meta},
    )


def make_stored(k: int, **kw: object) -> StoredTrace:
    """make_trace(k) with a UUID and a time k seconds after 2025-01-01 UTC."""
    return StoredTrace(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"test:{k}")),
        created_at=datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=k),
        trace=make_trace(k, **kw),
    )


# --- tunix-rt's `traces` table, as its backend creates and writes it ----------------------------
#
# Read from github.com/m-cahill/tunix-rt, backend/:
# - PostgreSQL, created by alembic: alembic/versions/001_create_traces_table.py (commit
#   a33667557d617efba215fd225c8d11b07571935d): id sa.UUID(), created_at sa.DateTime(timezone=True),
#   trace_version sa.String(length=64), payload sa.JSON(), all nullable=False, PrimaryKeyConstraint
#   ("id"); created_at has no server default (the ORM sets it: default=datetime.now(timezone.utc)).
#   Then alembic/versions/f8f1393630e4_add_traces_created_at_index.py (commit
#   52a61f82c3e13ee505558585ea680c9479750322): index "ix_traces_created_at" on (created_at).
# - SQLite, created by Base.metadata.create_all (backend/tests/conftest.py, commit
#   8abe4a9974618e197fb434d564ea29eba40e6b95) from the model tunix_rt_backend/db/models/trace.py
#   (commits a33667557d617efba215fd225c8d11b07571935d and d8743ca08803383b85d833a6d86fe67516c2d7cb):
#   Mapped[uuid.UUID] is SQLAlchemy's Uuid, CHAR(32) in SQLite; DateTime(timezone=True) is
#   DATETIME; String(64) VARCHAR(64); JSON JSON. The model declares no index. The DDL below is what
#   SQLAlchemy 2.0 emits for it.
# Rows as tunix-rt's ORM writes them in SQLite: Uuid binds `uuid.hex` (32 lowercase hex digits);
# DateTime binds its storage format "%Y-%m-%d %H:%M:%S.%f" without the offset (tunix-rt's times
# are UTC); JSON binds json.dumps(payload) (default separators). In PostgreSQL: uuid, timestamptz
# and json values.

TUNIXRT_PG_DDL = (
    "CREATE TABLE traces (id UUID NOT NULL, created_at TIMESTAMP WITH TIME ZONE NOT NULL,"
    " trace_version VARCHAR(64) NOT NULL, payload JSON NOT NULL, PRIMARY KEY (id))",
    "CREATE INDEX ix_traces_created_at ON traces (created_at)",
)
TUNIXRT_SQLITE_DDL = (
    "CREATE TABLE traces (\n\tid CHAR(32) NOT NULL, \n\tcreated_at DATETIME NOT NULL, \n\t"
    "trace_version VARCHAR(64) NOT NULL, \n\tpayload JSON NOT NULL, \n\tPRIMARY KEY (id)\n)"
)


def tunixrt_sqlite_row(t: StoredTrace) -> tuple[str, str, str, str]:
    """A row as tunix-rt's ORM writes it in SQLite."""
    at = t.created_at.astimezone(UTC).replace(tzinfo=None)
    payload = json.dumps(t.trace.model_dump(mode="json"))
    return uuid.UUID(t.id).hex, at.strftime("%Y-%m-%d %H:%M:%S.%f"), t.trace.trace_version, payload


def tunixrt_sqlite(path: Path, traces: Iterable[StoredTrace] = ()) -> str:
    """A SQLite file with tunix-rt's table holding `traces` as tunix-rt writes them; its URL."""
    conn = sqlite3.connect(path)
    conn.execute(TUNIXRT_SQLITE_DDL)
    conn.executemany("INSERT INTO traces VALUES (?, ?, ?, ?)", map(tunixrt_sqlite_row, traces))
    conn.commit()
    conn.close()
    return f"sqlite:{path}"


def tunixrt_postgres(url: str, traces: Iterable[StoredTrace] = ()) -> str:
    """tunix-rt's table (after `alembic upgrade head`) in the database, holding `traces`."""
    import psycopg

    with psycopg.connect(url) as conn:
        for statement in TUNIXRT_PG_DDL:
            conn.execute(statement)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO traces (id, created_at, trace_version, payload)"
                " VALUES (%s, %s, %s, %s::json)",
                [
                    (
                        uuid.UUID(t.id),
                        t.created_at,
                        t.trace.trace_version,
                        json.dumps(t.trace.model_dump(mode="json")),
                    )
                    for t in traces
                ],
            )
    return url
