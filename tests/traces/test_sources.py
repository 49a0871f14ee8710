"""Trace sources: JSONL, SQLite, PostgreSQL (a real server); order, defaults and every problem."""

from __future__ import annotations

import json
import random
import sqlite3
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from support.traces import make_stored, make_trace

from tunixrt_dvc.errors import InvalidInput
from tunixrt_dvc.traces.jsonl import JsonlSource
from tunixrt_dvc.traces.postgres import PostgresSource, redact
from tunixrt_dvc.traces.schemas import MAX_TRACE_BYTES, StoredTrace, dumps, trace_bytes
from tunixrt_dvc.traces.source import DEFAULT_CREATED_AT, ID_NAMESPACE, Rejected
from tunixrt_dvc.traces.sqlite import SqliteSource
from tunixrt_dvc.traces.urls import open_source, open_store


def flat(k: int, **extra: object) -> dict:
    """A flat JSONL record (the trace's fields plus id and created_at)."""
    s = make_stored(k)
    return {"id": s.id, "created_at": s.created_at.isoformat(), **s.trace.model_dump(), **extra}


def write_jsonl(path, records) -> str:
    lines = [r if isinstance(r, (str, bytes)) else json.dumps(r) for r in records]
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines) + b"\n")
    return str(path)


def items(url: str, **kw) -> list[StoredTrace | Rejected]:
    return list(open_source(url, **kw))


def only_problems(url: str, **kw) -> list[str]:
    return [str(p) for it in items(url, **kw) if isinstance(it, Rejected) for p in it]


# --- JSONL ---------------------------------------------------------------------------------------


def test_jsonl_any_order_comes_out_sorted_by_time_then_id(tmp_path):
    recs = [flat(k) for k in range(300)]
    same_time = [flat(k, created_at="2025-01-01T00:00:00+00:00") for k in (500, 501, 502)]
    shuffled = recs + same_time
    random.Random(0).shuffle(shuffled)
    out = items(write_jsonl(tmp_path / "t.jsonl", shuffled))
    assert all(isinstance(x, StoredTrace) for x in out)
    keys = [(x.created_at, x.id) for x in out]
    assert keys == sorted(keys)
    assert len(out) == 303


def test_jsonl_flat_nested_and_defaults(tmp_path):
    s = make_stored(3)
    bare = s.trace.model_dump()  # tunix-rt's own JSONL: the trace only
    path = write_jsonl(tmp_path / "t.jsonl", [flat(1), dumps(s), bare])
    c, a, b = items(path)  # the default time is the earliest
    assert a == make_stored(1) and b == s
    # no id: a UUID of the canonical payload; no created_at: the Unix epoch (documented)
    assert c.id == str(uuid.uuid5(ID_NAMESPACE, dumps(s.trace))) and c.trace == s.trace
    assert c.created_at == DEFAULT_CREATED_AT
    # times in any offset are normalized to UTC; a time without offset is UTC
    path = write_jsonl(
        tmp_path / "tz.jsonl",
        [flat(1, created_at="2025-01-01T02:00:00+02:00"), flat(2, created_at="2025-01-01 00:30")],
    )
    times = [t.created_at.isoformat() for t in items(path)]
    assert times == ["2025-01-01T00:00:00+00:00", "2025-01-01T00:30:00+00:00"]


def test_jsonl_problems_name_file_line_and_field(tmp_path):
    p = tmp_path / "bad.jsonl"
    big = flat(9, meta={"pad": "x" * (MAX_TRACE_BYTES + 10)})
    recs = [
        flat(0),
        '{"prompt": "unterminated',
        {k: v for k, v in flat(2).items() if k != "final_answer"},
        flat(3, steps=[{"i": "0", "type": "t", "content": "c"}]),
        b'{"id": "x", "prompt": "caf\xe9"}',
        big,
        flat(6, created_at="yesterday"),
        flat(
            7, steps=[{"i": 0, "type": "t", "content": "a"}, {"i": 0, "type": "t", "content": "b"}]
        ),
        flat(8, extra_field=1),
        '{"trace_version":"1","prompt":"\\ud800","final_answer":"a","steps":[]}',
        '{"trace_version":"1","prompt":"p","final_answer":"a","steps":[{"i":0,"type":"t",'
        '"content":"c"}],"meta":{"x":NaN}}',
        "[1, 2]",
        flat(12, prompt=""),
        {"id": "n", "trace": make_trace(1).model_dump()},
    ]
    problems = only_problems(write_jsonl(p, recs))
    f = str(p)
    expected = [
        f"{f}:2: <json>: EOF while parsing a string at line 1 column 24",
        f"{f}:3: final_answer: Field required",
        f"{f}:4: steps.0.i: Input should be a valid integer",
        f"{f}:5: <encoding>: invalid UTF-8 (byte 27 of the line)",
        f"{f}:6: <record>: serialized trace is ",
        f"{f}:7: created_at: not an ISO-8601 date and time: 'yesterday'",
        f"{f}:8: steps: Value error, duplicate step number i=0",
        f"{f}:9: extra_field: Extra inputs are not permitted",
        f"{f}:10: <json>: ",
        f"{f}:11: meta: Value error, nan is not a JSON number",
        f"{f}:12: <record>: Input should be an object",
        f"{f}:13: prompt: String should have at least 1 character",
        f"{f}:14: created_at: Field required",
    ]
    assert len(problems) == len(expected)
    for got, want in zip(
        sorted(problems, key=lambda s: int(s.split(":")[1])), expected, strict=True
    ):
        assert got.startswith(want), (got, want)


def test_jsonl_rejected_keeps_the_raw_record(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [flat(0), b'{"x": "\xff"}'])
    bad = [x for x in items(path) if isinstance(x, Rejected)]
    assert [x.raw for x in bad] == ['{"x": "\\xff"}']


def test_size_limit_counts_the_canonical_serialization(tmp_path):
    # 1e15 is written 1000000000000000.0: a small input can be an over-limit trace.
    def line(k: int, n: int) -> str:
        text = json.dumps(flat(k, meta={"x": []}))
        return text.replace('"x": []', '"x": [' + ",".join(["1e15"] * n) + "]")

    n = MAX_TRACE_BYTES // 19
    over, under = line(1, n + 10), line(2, n - 100)
    assert len(over) < MAX_TRACE_BYTES // 3
    out = items(write_jsonl(tmp_path / "t.jsonl", [over, under]))
    assert "over the limit of 1048576" in str(out[0][0])
    assert isinstance(out[1], StoredTrace) and out[1].id == flat(2)["id"]
    assert trace_bytes(out[1].trace) <= MAX_TRACE_BYTES


def test_jsonl_duplicate_ids_keep_the_first_in_order(tmp_path):
    a, b = flat(1), flat(2, id=flat(1)["id"], created_at="2026-01-01T00:00:00Z")
    path = write_jsonl(tmp_path / "t.jsonl", [b, flat(0), a])
    out = items(path)
    assert [x.id for x in out[:2]] == [flat(0)["id"], a["id"]]
    assert str(out[2][0]) == f"{path}:1: id: duplicate id {a['id']!r} (first: {path}:3)"


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_no_traces_at_all_is_an_error(tmp_path, content):
    (tmp_path / "e.jsonl").write_bytes(content)
    with pytest.raises(InvalidInput, match=r"e\.jsonl: <source>: no traces"):
        items(str(tmp_path / "e.jsonl"))


def test_missing_file(tmp_path):
    with pytest.raises(InvalidInput, match="No such file"):
        items(str(tmp_path / "nope.jsonl"))


def test_since_and_limit(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [flat(k) for k in reversed(range(10))] + ["{"])
    since = datetime(2025, 1, 1, 0, 0, 4, tzinfo=UTC)
    out = items(path, since=since)
    assert [x.trace.prompt for x in out[:-1]] == [make_trace(k).prompt for k in range(4, 10)]
    assert isinstance(out[-1], Rejected)  # a record without a time is never filtered out
    assert [x.trace.prompt for x in items(path, limit=3)] == [
        make_trace(k).prompt for k in (0, 1, 2)
    ]
    naive = datetime(2025, 1, 1, 0, 0, 8)  # naive means UTC
    assert len(items(path, since=naive, limit=5)) == 3
    good = write_jsonl(tmp_path / "good.jsonl", [flat(1)])
    with pytest.raises(
        InvalidInput, match=r"no traces created at or after 2030-01-01T00:00:00\+00"
    ):
        items(good, since=datetime(2030, 1, 1))


def test_open_source_dispatch(tmp_path):
    assert isinstance(open_source("x.jsonl"), JsonlSource)
    assert isinstance(open_source("jsonl:x.txt"), JsonlSource)
    assert isinstance(open_source("sqlite:x"), SqliteSource)
    assert isinstance(open_source("data/x.db"), SqliteSource)
    assert isinstance(open_source("postgresql://u:secret@h/db"), PostgresSource)
    assert open_source("postgresql://u:secret@h/db").name == "postgresql://u:***@h/db"
    assert open_source("x.jsonl").kind == "jsonl"
    with pytest.raises(InvalidInput, match="unknown kind of source"):
        open_source("x.csv")
    with pytest.raises(InvalidInput, match="must be >= 1"):
        open_source("x.jsonl", limit=0)
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"


# --- SQLite --------------------------------------------------------------------------------------


def foreign_sqlite(path, rows, *, pk: bool = True):
    """A table as another program might have written it (tunix-rt via SQLAlchemy, for one)."""
    conn = sqlite3.connect(path)
    key = "PRIMARY KEY" if pk else ""
    conn.execute(
        f"CREATE TABLE traces (id CHAR(32) {key}, created_at DATETIME, trace_version VARCHAR(64),"
        " payload JSON)"
    )
    conn.executemany("INSERT INTO traces VALUES (?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()
    return f"sqlite:{path}"


def row(k: int, created_at: str, **kw):
    t = make_trace(k, **kw)
    return uuid.uuid5(uuid.NAMESPACE_URL, str(k)).hex, created_at, t.trace_version, dumps(t)


def test_sqlite_mixed_time_formats_are_sorted_by_time(tmp_path):
    rows = [
        row(0, "2025-01-01 10:00:00.000000"),  # SQLAlchemy's format, no offset: UTC
        row(1, "2025-01-01T11:30:00+02:00"),  # 09:30 UTC: text order would put it after row 0
        row(2, "2025-01-01T09:00:00Z"),
    ]
    out = items(foreign_sqlite(tmp_path / "f.sqlite", rows))
    assert [x.trace.prompt for x in out] == [make_trace(k).prompt for k in (2, 1, 0)]
    # ids are read in their canonical form (changed: they were kept as stored, 32 hex digits)
    assert [x.id for x in out][2] == str(uuid.UUID(rows[0][0]))


def test_sqlite_row_problems(tmp_path):
    rows = [
        row(0, "2025-01-01T00:00:00Z"),
        ("id1", "2025-01-01T00:00:01Z", "1.0", b'{"trace_version": "1.0", "prompt": "\xff"}'),
        ("id2", "2025-01-01T00:00:02Z", "1.0", None),
        ("id3", "2025-01-01T00:00:03Z", "2.0", dumps(make_trace(3))),
        ("id4", "not a time", "1.0", dumps(make_trace(4))),
        ("id5", "2025-01-01T00:00:05Z", "1.0", '{"trace_version": "1.0"}'),
    ]
    url = foreign_sqlite(tmp_path / "f.sqlite", rows)
    assert only_problems(url) == [
        f"{url}#id=id1: payload: invalid UTF-8",
        f"{url}#id=id2: payload: is NULL",
        f"{url}#id=id3: trace_version: column is '2.0' but the payload's is '1.0'",
        f"{url}#id=id5: payload.prompt: Field required",
        f"{url}#id=id5: payload.final_answer: Field required",
        f"{url}#id=id5: payload.steps: Field required",
        f"{url}#id=id4: created_at: not an ISO-8601 date and time: 'not a time'",
    ]


def test_sqlite_duplicates_without_unique_key(tmp_path):
    rows = [row(0, "2025-01-01T00:00:00Z"), row(0, "2025-01-01T00:00:01Z", prompt="again")]
    url = foreign_sqlite(tmp_path / "f.sqlite", rows, pk=False)
    out = items(url)
    assert isinstance(out[0], StoredTrace)
    assert "id: duplicate id" in str(out[1][0]) and out[1][0].file == f"{url}#id={rows[0][0]}"


def test_sqlite_bad_files(tmp_path):
    with pytest.raises(InvalidInput, match="not found"):
        items(f"sqlite:{tmp_path / 'none.sqlite'}")
    (tmp_path / "junk.db").write_text("not a database" * 100)
    with pytest.raises(InvalidInput, match="file is not a database"):
        items(str(tmp_path / "junk.db"))
    conn = sqlite3.connect(tmp_path / "other.db")
    conn.execute("CREATE TABLE traces (id TEXT, payload TEXT)")
    conn.commit()
    with pytest.raises(InvalidInput, match=r"missing: \['created_at', 'trace_version'\]"):
        items(str(tmp_path / "other.db"))


def test_sqlite_since_and_limit(tmp_path, traces_factory):
    url = f"sqlite:{tmp_path / 's.sqlite'}"
    with open_store(url) as db:
        db.create_schema()
        db.import_traces(traces_factory(10))
    since = datetime(2025, 1, 1, 0, 0, 7, tzinfo=UTC)
    assert [x.id for x in items(url, since=since)] == [t.id for t in traces_factory(3, start=7)]
    assert [x.id for x in items(url, limit=2)] == [t.id for t in traces_factory(2)]


# --- PostgreSQL ----------------------------------------------------------------------------------


def test_postgres_order_since_limit_and_problems(pg_url):
    # A foreign table: text ids (ordered by code point, not by the database's collation), jsonb.
    with psycopg.connect(pg_url) as conn:
        conn.execute(
            "CREATE TABLE traces (id TEXT PRIMARY KEY, created_at TIMESTAMPTZ,"
            " trace_version TEXT, payload JSONB)"
        )
        t0 = "2025-01-01T00:00:00Z"
        rows = [
            ("b", t0, "1.0", dumps(make_trace(1))),
            ("B", t0, "1.0", dumps(make_trace(2))),
            ("a'; DROP TABLE traces; --", "2025-01-01T00:00:01Z", "1.0", dumps(make_trace(3))),
            ("z", "2025-01-02T00:00:00Z", "1.0", '{"prompt": 5}'),
            ("n", None, "1.0", dumps(make_trace(4))),
        ]
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO traces VALUES (%s, %s, %s, %s)", rows)
    out = items(pg_url)
    assert [x.id for x in out[:3]] == ["B", "b", "a'; DROP TABLE traces; --"]
    name = redact(pg_url)
    assert [str(p) for x in out[3:] for p in x] == [
        f"{name}#id=z: payload.trace_version: Field required",
        f"{name}#id=z: payload.prompt: Input should be a valid string",
        f"{name}#id=z: payload.final_answer: Field required",
        f"{name}#id=z: payload.steps: Field required",
        f"{name}#id=n: created_at: is NULL",
    ]
    since = datetime(2025, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert [x.id for x in items(pg_url, since=since, limit=1)] == ["a'; DROP TABLE traces; --"]
    assert len(items(pg_url, since=since)) == 3  # and the row without a time


def test_postgres_missing_table_and_bad_url(pg_url):
    with pytest.raises(InvalidInput, match="needs table 'traces'"):
        items(pg_url)
    bad = pg_url.replace("/t_", "/nope_")
    with pytest.raises(Exception, match="cannot connect"):
        items(bad)


def test_jsonl_fast_and_slow_paths_agree(tmp_path):
    # dumps() lines are read through a fast path; the same record spelled otherwise is not.
    s = make_stored(4)
    fast_line = dumps(s)
    flat_line = json.dumps(flat(4), separators=(",", ":"))
    spaced = json.dumps(json.loads(fast_line), indent=None)  # `": "` separators: the slow path
    for line in (fast_line, flat_line, spaced):
        (out,) = items(write_jsonl(tmp_path / "t.jsonl", [line]))
        assert out == s, line


def test_jsonl_repeated_keys_are_rejected(tmp_path):
    line = dumps(make_stored(1))[:-1] + ',"id":"other"}'
    (out,) = items(write_jsonl(tmp_path / "t.jsonl", [line]))
    assert isinstance(out, Rejected)
    line = json.dumps(flat(1), separators=(",", ":"))[:-1] + ',"id":"other"}'
    (out,) = items(write_jsonl(tmp_path / "t.jsonl", [line]))
    assert str(out[0]).endswith("<json>: repeated key: `id` or `created_at` appears twice")
