"""The trace store: SQLite and a real PostgreSQL server."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from click.testing import CliRunner
from support.traces import make_stored

from tunixrt_dvc.cli import main as cli
from tunixrt_dvc.errors import InvalidInput, Problem, ResourceError
from tunixrt_dvc.traces.schemas import StoredTrace, dumps
from tunixrt_dvc.traces.store import ImportResult
from tunixrt_dvc.traces.urls import open_source, open_store


def _failing_after(traces: list[StoredTrace]) -> Iterator[StoredTrace]:
    yield from traces
    raise InvalidInput([Problem("in.jsonl", 9, "prompt", "bad")])


def _read_back(url: str) -> list[StoredTrace]:
    return [t for t in open_source(url) if isinstance(t, StoredTrace)]


def test_sqlite_import_skips_existing_ids(tmp_path, traces_factory):
    url = f"sqlite:{tmp_path / 'deep' / 'traces.sqlite'}"
    with open_store(url) as db:
        db.create_schema()
        db.create_schema()  # idempotent
        assert db.import_traces(traces_factory(5)) == ImportResult(inserted=5, skipped=0)
        assert db.import_traces(traces_factory(5, start=3)) == ImportResult(inserted=3, skipped=2)
    back = _read_back(url)
    assert [t.id for t in back] == [t.id for t in traces_factory(8)]
    assert [dumps(t) for t in back] == [dumps(t) for t in traces_factory(8)]


def test_sqlite_import_is_all_or_nothing(tmp_path, traces_factory):
    path = tmp_path / "traces.sqlite"
    with open_store(f"sqlite:{path}") as db:
        db.create_schema()
        db.import_traces(traces_factory(2))
        with pytest.raises(InvalidInput):
            db.import_traces(_failing_after(traces_factory(3000, start=2)))
    assert sqlite3.connect(path).execute("SELECT count(*) FROM traces").fetchone() == (2,)


def test_sqlite_layout_and_text_time_order(tmp_path):
    path = tmp_path / "t.sqlite"
    with open_store(str(path)) as db:  # a .sqlite path works without the prefix
        db.create_schema()
        db.import_traces([make_stored(1)])
    row = sqlite3.connect(path).execute("SELECT * FROM traces").fetchone()
    stored = make_stored(1)
    # Changed: rows are written as tunix-rt's ORM writes them in SQLite (32 hex digits, naive UTC
    # with microseconds), not dashed ids and `2025-01-01T00:00:01.000000+00:00`.
    assert row == (
        uuid.UUID(stored.id).hex,
        "2025-01-01 00:00:01.000000",
        "1.0",
        dumps(stored.trace),
    )


def test_sqlite_file_is_byte_identical_when_rebuilt(tmp_path, traces_factory):
    files = []
    for name in ("a.sqlite", "b.sqlite"):
        with open_store(f"sqlite:{tmp_path / name}") as db:
            db.create_schema()
            db.import_traces(traces_factory(3000))
        files.append((tmp_path / name).read_bytes())
    assert files[0] == files[1]
    assert not list(tmp_path.glob("*-journal")) and not list(tmp_path.glob("*-wal"))


def test_sqlite_import_without_table(tmp_path, traces_factory):
    with (
        open_store(str(tmp_path / "t.db")) as db,
        pytest.raises(ResourceError, match="no such table"),
    ):
        db.import_traces(traces_factory(1))


def test_unknown_store_url():
    with pytest.raises(InvalidInput, match="a store is"):
        open_store("mysql://x")


def test_postgres_import_skip_and_read_back(pg_url, traces_factory):
    with open_store(pg_url) as db:
        db.create_schema()
        db.create_schema()
        assert db.import_traces(traces_factory(4)) == ImportResult(inserted=4, skipped=0)
        # existing ids are skipped; an id repeated in the input keeps its first occurrence
        again = [*traces_factory(3, start=2), make_stored(6), make_stored(6, prompt="other")]
        assert db.import_traces(again) == ImportResult(inserted=2, skipped=3)
    back = _read_back(pg_url)
    assert [dumps(t) for t in back] == [dumps(make_stored(k)) for k in (0, 1, 2, 3, 4, 6)]
    with psycopg.connect(pg_url) as conn:
        types = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_name = 'traces'"
            ).fetchall()
        )
    assert types == {
        "id": "uuid",
        "created_at": "timestamp with time zone",
        "trace_version": "character varying",
        "payload": "json",
    }


def test_postgres_import_is_all_or_nothing(pg_url, traces_factory):
    with open_store(pg_url) as db:
        db.create_schema()
        db.import_traces(traces_factory(1))
        with pytest.raises(InvalidInput):  # the input fails midway
            db.import_traces(_failing_after(traces_factory(2500, start=1)))
        bad = StoredTrace(
            id="not-a-uuid", created_at=make_stored(0).created_at, trace=make_stored(0).trace
        )
        with pytest.raises(InvalidInput, match="'not-a-uuid' is not a UUID"):  # the last one is bad
            db.import_traces([*traces_factory(10, start=1), bad])
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM traces").fetchone() == (1,)


def test_postgres_store_and_sqlite_store_export_the_same(pg_url, tmp_path, traces_factory):
    traces = traces_factory(50)
    for url in (pg_url, f"sqlite:{tmp_path / 's.sqlite'}"):
        with open_store(url) as db:
            db.create_schema()
            db.import_traces(reversed(traces))  # insertion order does not matter
    assert [dumps(t) for t in _read_back(pg_url)] == [dumps(t) for t in traces]
    assert _read_back(pg_url) == _read_back(f"sqlite:{tmp_path / 's.sqlite'}")


def _jsonl(path, traces, extra=()):
    path.write_text("".join(dumps(t) + "\n" for t in traces) + "".join(x + "\n" for x in extra))
    return str(path)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_traces_import_command(kind, tmp_path, request, traces_factory):
    url = request.getfixturevalue("pg_url") if kind == "postgresql" else str(tmp_path / "s.db")
    runner = CliRunner()
    # Changed: an empty PostgreSQL database gets the table only when asked (test_tunixrt_schema)
    create = ["--create-schema"] if kind == "postgresql" else []
    r = runner.invoke(
        cli,
        ["traces", "import", _jsonl(tmp_path / "a.jsonl", traces_factory(3)), "--store", url]
        + create,
    )
    assert r.exit_code == 0, r.output
    assert r.output.startswith("traces import: inserted 3, skipped 0 (id already in the store)")
    # one bad line: nothing from this file is stored, and the problem is named
    bad = _jsonl(tmp_path / "b.jsonl", traces_factory(5), extra=['{"prompt": ""}'])
    r = runner.invoke(cli, ["traces", "import", bad, "--store", url])
    assert (
        r.exit_code == 1 and f"{bad}:6: prompt: String should have at least 1 character" in r.output
    )
    assert len(_read_back(url if kind == "postgresql" else f"sqlite:{url}")) == 3
    r = runner.invoke(
        cli, ["traces", "import", _jsonl(tmp_path / "c.jsonl", traces_factory(5)), "--store", url]
    )
    assert "inserted 2, skipped 3" in r.output
    assert "Usage:" in runner.invoke(cli, ["traces", "import", "--help"]).output
