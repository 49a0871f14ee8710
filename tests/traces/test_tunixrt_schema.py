"""tunix-rt as the viewer: its own tables (tests/support/traces.py says where their DDL was read),
in SQLite and on a real PostgreSQL server; what it stores, we read, and what we store, it finds."""

from __future__ import annotations

import json
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from click.testing import CliRunner
from support.params import write_params
from support.traces import (
    TUNIXRT_PG_DDL,
    TUNIXRT_SQLITE_DDL,
    make_stored,
    make_trace,
    tunixrt_postgres,
    tunixrt_sqlite,
    tunixrt_sqlite_row,
)

from tunixrt_dvc.cli import main as cli
from tunixrt_dvc.errors import InvalidInput
from tunixrt_dvc.task.reservations import load_reservations
from tunixrt_dvc.traces.export import export
from tunixrt_dvc.traces.postgres import redact
from tunixrt_dvc.traces.schemas import (
    MAX_TRACE_BYTES,
    StoredTrace,
    dumps,
    example_id,
    trace_bytes,
    trace_to_example,
)
from tunixrt_dvc.traces.sqlite import SqliteSource
from tunixrt_dvc.traces.store import ImportResult
from tunixrt_dvc.traces.urls import open_source, open_store

T0 = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture
def evalsets(tmp_path):
    d = tmp_path / "evalsets"
    d.mkdir()
    item = {"id": "e1", "prompt": "What is 1000 * 1000?", "expected_answer": "1000000"}
    (d / "e.jsonl").write_text(json.dumps({**item, "category": "mul", "difficulty": "easy"}) + "\n")
    return d


def traces() -> list[StoredTrace]:
    """make_stored(0..19), then five traces created at one instant (ordered by id alone)."""
    same = [
        StoredTrace(id=str(uuid.uuid5(uuid.NAMESPACE_DNS, str(k))), created_at=T0, trace=t)
        for k, t in enumerate(make_trace(k) for k in range(100, 105))
    ]
    return sorted([make_stored(k) for k in range(20)] + same, key=lambda t: (t.created_at, t.id))


def read_back(url: str) -> list[StoredTrace]:
    return [t for t in open_source(url) if isinstance(t, StoredTrace)]


def sqlite_schema(path) -> list[tuple]:
    return sqlite3.connect(path).execute("SELECT * FROM sqlite_master ORDER BY name").fetchall()


def pg_schema(url: str, schema: str = "public") -> tuple[list, list]:
    """The columns (name, type, nullable, default) and indexes of `traces`, without the schema."""
    with psycopg.connect(url) as conn:
        cols = conn.execute(
            "SELECT column_name, data_type, character_maximum_length, is_nullable, column_default"
            " FROM information_schema.columns WHERE table_schema = %s AND table_name = 'traces'"
            " ORDER BY ordinal_position",
            (schema,),
        ).fetchall()
        idx = conn.execute(
            "SELECT indexname, replace(indexdef, %s, '') FROM pg_indexes"
            " WHERE schemaname = %s AND tablename = 'traces' ORDER BY indexname",
            (f"{schema}.", schema),
        ).fetchall()
    return cols, idx


def pg_relations(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'public'"
            )
        ]


def write_jsonl(path, items: list[StoredTrace], *, spell=lambda ident: ident) -> str:
    lines = [json.dumps({**json.loads(dumps(t)), "id": spell(t.id)}) for t in items]
    path.write_text("".join(x + "\n" for x in lines))
    return str(path)


# --- 1. SQLite: rows in tunix-rt's form, either form read ----------------------------------------


def test_sqlite_store_writes_rows_as_tunixrt_does(tmp_path):
    path = tmp_path / "tunixrt.sqlite"
    url = tunixrt_sqlite(path)  # tunix-rt's empty table
    schema = sqlite_schema(path)
    items = traces()
    with open_store(url) as db:
        assert db.import_traces(reversed(items)) == ImportResult(inserted=25, skipped=0)
        assert db.import_traces(items, create_schema=True) == ImportResult(0, 25)
        db.create_schema()  # a table that is there is left as it is
    assert sqlite_schema(path) == schema  # no index of ours, nothing altered
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT id, created_at FROM traces ORDER BY rowid").fetchall()
    assert rows == [tunixrt_sqlite_row(t)[:2] for t in reversed(items)]
    for t in items:
        # tunix-rt's GET /api/traces/{id}: SQLAlchemy binds the UUID as 32 hex digits
        (at,) = conn.execute("SELECT created_at FROM traces WHERE id = ?", (uuid.UUID(t.id).hex,))
        # and parses the time in its storage format, naive (UTC)
        assert datetime.strptime(at[0], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC) == t.created_at
    assert read_back(url) == items  # the same StoredTraces: canonical ids, UTC times
    # one width for every time: the database's text order is the time order (no sort in Python)
    src = SqliteSource(path, since=None, limit=None)
    assert src._text_order_is_time_order(src._connect())
    # tunix-rt's id column takes UUIDs only (its ORM could not read another id back)
    other = StoredTrace(id="not-a-uuid", created_at=T0, trace=make_trace(1))
    with open_store(url) as db, pytest.raises(InvalidInput, match="'not-a-uuid' is not a UUID"):
        db.import_traces([make_stored(50), other])
    assert conn.execute("SELECT count(*) FROM traces").fetchone() == (25,)


def test_tunixrt_sqlite_file_exports_like_jsonl_and_postgres(tmp_path, pg_url, evalsets):
    items = traces()
    sources = {
        "jsonl": write_jsonl(tmp_path / "t.jsonl", items),
        # the same ids, as tunix-rt's SQLite file holds them, in a JSONL file
        "jsonl-hex": write_jsonl(tmp_path / "h.jsonl", items, spell=lambda i: uuid.UUID(i).hex),
        "sqlite": tunixrt_sqlite(tmp_path / "tunixrt.sqlite", reversed(items)),
        "postgresql": tunixrt_postgres(pg_url, reversed(items)),
    }
    outs = {}
    for name, url in sources.items():
        out = tmp_path / f"{name}.jsonl"
        assert export(url, out, reserved=load_reservations(evalsets)).written == len(items)
        kind = name.split("-")[0]
        outs[name] = out.read_text().replace(f'"source":"{kind}"', '"source":"-"')
    assert len(set(outs.values())) == 1, "the same traces give the same examples"
    want = "".join(dumps(trace_to_example(t, source="jsonl")) + "\n" for t in items)
    assert outs["jsonl"] == want.replace('"source":"jsonl"', '"source":"-"')
    first = json.loads(outs["sqlite"].splitlines()[0])
    assert first["metadata"]["source_trace_id"] == items[0].id  # dashed, lowercase
    assert first["metadata"]["created_at"] == "2025-01-01T00:00:00+00:00"  # UTC, with its offset
    assert first["id"] == example_id(items[0].id) == example_id(uuid.UUID(items[0].id).hex)


def test_sqlite_reads_both_forms_and_skips_ids_stored_dashed(tmp_path):
    # A store written before: dashed ids, ISO-8601 times with an offset, our TEXT table.
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE traces (id TEXT PRIMARY KEY, created_at TEXT NOT NULL,"
        " trace_version TEXT NOT NULL, payload TEXT NOT NULL)"
    )
    conn.execute("CREATE INDEX ix_traces_created_at_id ON traces (created_at, id)")
    old = [make_stored(k) for k in range(5)]
    conn.executemany(
        "INSERT INTO traces VALUES (?, ?, ?, ?)",
        [
            (t.id, t.created_at.isoformat(timespec="microseconds"), "1.0", dumps(t.trace))
            for t in old
        ],
    )
    conn.commit()
    url = f"sqlite:{path}"
    with open_store(url) as db:  # ids 3 and 4 are there, dashed: skipped
        assert db.import_traces(make_stored(k) for k in range(3, 8)) == ImportResult(3, 2)
    ids = [r[0] for r in conn.execute("SELECT id FROM traces ORDER BY rowid")]
    assert ids == [t.id for t in old] + [uuid.UUID(make_stored(k).id).hex for k in (5, 6, 7)]
    assert read_back(url) == [make_stored(k) for k in range(8)]  # in time order, canonical ids
    # The same UUID in another spelling is the same id: a duplicate (the first in order is kept).
    again = make_stored(1).model_copy(update={"created_at": T0 + timedelta(seconds=9)})
    conn.execute("INSERT INTO traces VALUES (?, ?, ?, ?)", tunixrt_sqlite_row(again))
    conn.commit()
    out = list(open_source(url))
    assert [x.id for x in out[:8]] == [make_stored(k).id for k in range(8)]
    assert str(out[8][0]) == (
        f"{url}#id={uuid.UUID(again.id).hex}: id: duplicate id {again.id!r} (first: {url}#id="
        f"{again.id})"
    )


def test_sqlite_orders_by_canonical_id_whatever_the_spelling(tmp_path):
    # At one instant: a UUID in both spellings and upper case, and ids that are no UUIDs, which
    # sort differently against a UUID's 32 hex digits than against its canonical form.
    u = [uuid.UUID(int=k << 96 | 0x11) for k in (0, 1, 2)]  # 00000000-0000-..., 00000001-...
    ids = [u[0].hex, str(u[1]), u[2].hex.upper(), "0000000011", "00000000-x", "zz"]
    at = "2025-01-01 00:00:00.000000"
    rows = [(i, at, "1.0", dumps(make_trace(k))) for k, i in enumerate(ids)]
    path = tmp_path / "t.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(TUNIXRT_SQLITE_DDL)
    conn.executemany("INSERT INTO traces VALUES (?, ?, ?, ?)", rows)
    conn.commit()
    got = [x.id for x in open_source(f"sqlite:{path}")]
    assert got == sorted([str(u[0]), str(u[1]), str(u[2]), "0000000011", "00000000-x", "zz"])


# --- 2. PostgreSQL: the schema is tunix-rt's -----------------------------------------------------


def test_import_into_an_empty_postgres_needs_create_schema(pg_url, tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", traces())
    runner = CliRunner()
    r = runner.invoke(cli, ["traces", "import", src, "--store", pg_url])
    assert r.exit_code == 1
    assert f"{redact(pg_url)}: traces: no such table: run tunix-rt's migrations first" in r.output
    assert "`alembic upgrade head` in tunix-rt's backend/" in r.output
    assert "--create-schema" in r.output
    assert pg_relations(pg_url) == []  # nothing created
    with open_store(pg_url) as db:
        with pytest.raises(InvalidInput, match="alembic upgrade head"):
            db.import_traces(traces())
        with pytest.raises(InvalidInput, match="is not a UUID"):  # bad input: all rolled back
            db.import_traces([make_stored(0), make_stored(1).model_copy(update={"id": "x"})],
                             create_schema=True)  # fmt: skip
    assert pg_relations(pg_url) == []

    r = runner.invoke(cli, ["traces", "import", src, "--store", pg_url, "--create-schema"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("traces import: inserted 25, skipped 0")
    assert read_back(pg_url) == traces()
    # the table is the one tunix-rt's migrations create (here in another schema), index included
    with psycopg.connect(pg_url) as conn:
        conn.execute("CREATE SCHEMA tunixrt")
        conn.execute("SET search_path TO tunixrt")
        for statement in TUNIXRT_PG_DDL:
            conn.execute(statement)
    assert pg_schema(pg_url) == pg_schema(pg_url, "tunixrt")


def test_import_into_tunixrt_postgres_adds_no_index(pg_url, tmp_path):
    items = traces()
    tunixrt_postgres(pg_url, items[:10])  # after tunix-rt's `alembic upgrade head`, with traces
    schema = pg_schema(pg_url)
    assert [name for name, _ in schema[1]] == ["ix_traces_created_at", "traces_pkey"]
    src = write_jsonl(tmp_path / "a.jsonl", items)
    runner = CliRunner()
    r = runner.invoke(cli, ["traces", "import", src, "--store", pg_url])
    assert r.exit_code == 0 and "inserted 15, skipped 10" in r.output, r.output
    r = runner.invoke(cli, ["traces", "import", src, "--store", pg_url, "--create-schema"])
    assert r.exit_code == 0 and "inserted 0, skipped 25" in r.output, r.output
    assert pg_schema(pg_url) == schema  # no index of ours, nothing altered
    assert read_back(pg_url) == items
    with psycopg.connect(pg_url) as conn:  # as tunix-rt looks a trace up
        row = conn.execute("SELECT payload FROM traces WHERE id = %s", (uuid.UUID(items[-1].id),))
        assert row.fetchone()[0] == json.loads(dumps(items[-1].trace))


# --- 3. The size limit is a parameter ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["jsonl", "sqlite", "postgresql"])
def test_an_over_limit_trace_fails_the_export_naming_its_id_and_size(
    kind, tmp_path, evalsets, request, monkeypatch
):
    # tunix-rt's batch endpoint stores traces over 1 MiB; the default export refuses them.
    big = make_stored(7, pad="x" * 1_200_000)
    items = [make_stored(k) for k in range(5)] + [big]
    n = trace_bytes(big.trace)
    assert n > MAX_TRACE_BYTES
    if kind == "jsonl":
        url = write_jsonl(tmp_path / "t.jsonl", items)
    elif kind == "sqlite":
        url = tunixrt_sqlite(tmp_path / "t.sqlite", items)
    else:
        url = tunixrt_postgres(request.getfixturevalue("pg_url"), items)
    out = tmp_path / "examples.jsonl"
    with pytest.raises(InvalidInput) as e:
        export(url, out, reserved=load_reservations(evalsets))
    want = (
        f"serialized trace is {n} bytes, over the limit of {MAX_TRACE_BYTES} (trace id {big.id!r})"
    )
    assert want in e.value.message and not out.exists()
    assert export(url, out, reserved=load_reservations(evalsets), max_trace_bytes=n).written == 6
    with pytest.raises(InvalidInput, match=f"over the limit of {n - 1} "):
        export(url, out, reserved=load_reservations(evalsets), max_trace_bytes=n - 1)

    # the export stage: export.max_trace_bytes in params.yaml, --max-trace-bytes over it
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    params = {"evalsets_dir": str(evalsets), "export": {"source": url}}
    write_params(tmp_path / "params.yaml", params)
    r = runner.invoke(cli, ["export", "--out", "e.jsonl"])
    assert r.exit_code == 1 and want in r.output
    r = runner.invoke(cli, ["export", "--out", "e.jsonl", "--max-trace-bytes", str(n)])
    assert r.exit_code == 0 and "written 6" in r.output, r.output
    write_params(
        tmp_path / "params.yaml", {**params, "export": {"source": url, "max_trace_bytes": n}}
    )
    r = runner.invoke(cli, ["export", "--out", "e.jsonl"])
    assert r.exit_code == 0 and "written 6" in r.output, r.output
    assert (tmp_path / "e.jsonl").read_text() == "".join(
        dumps(trace_to_example(t, source=kind)) + "\n" for t in items
    )


def test_max_trace_bytes_param(tmp_path):
    path = write_params(tmp_path / "params.yaml")
    assert "max_trace_bytes: 1048576" in path.read_text()  # the default, from params.yaml
    write_params(path, {"export": {"max_trace_bytes": 0}})
    r = CliRunner().invoke(cli, ["export", "--out", "e.jsonl", "--params", str(path)])
    assert r.exit_code == 1 and "export.max_trace_bytes: Input should be greater than" in r.output
    assert "--max-trace-bytes" in CliRunner().invoke(cli, ["export", "--help"]).output
