"""The exporter and `tunixrt export`: order, determinism, contamination, bad input, all sources."""

from __future__ import annotations

import json
import random

import pytest
from click.testing import CliRunner
from support.params import write_params
from support.traces import make_stored

from tunixrt_dvc.cli import main as cli
from tunixrt_dvc.errors import InvalidInput
from tunixrt_dvc.task.reservations import load_reservations
from tunixrt_dvc.traces.export import ExportReport, export, rejects_path
from tunixrt_dvc.traces.schemas import TrainingExample, dumps, trace_to_example
from tunixrt_dvc.traces.urls import open_store


@pytest.fixture
def evalsets(tmp_path):
    d = tmp_path / "evalsets"
    d.mkdir()
    item = {"id": "e1", "prompt": "  what IS 3 + 7?\tShow your   work.", "expected_answer": "10"}
    (d / "e.jsonl").write_text(json.dumps({**item, "category": "add", "difficulty": "easy"}) + "\n")
    return d


@pytest.fixture
def reserved(evalsets):
    return load_reservations(evalsets)


def write_traces(path, ks, *, shuffle=False, extra=()):
    lines = [dumps(make_stored(k)) for k in ks]
    if shuffle:
        random.Random(1).shuffle(lines)
    path.write_text("\n".join([*lines, *extra]) + "\n", encoding="utf-8")
    return str(path)


def expected(ks, source="jsonl"):
    return "".join(dumps(trace_to_example(make_stored(k), source=source)) + "\n" for k in ks)


def leftovers(d):
    return sorted(p.name for p in d.iterdir() if p.name.startswith("."))


def test_export_orders_drops_eval_prompts_and_is_byte_identical(tmp_path, reserved):
    src = write_traces(tmp_path / "t.jsonl", range(20), shuffle=True)
    out = tmp_path / "out" / "examples.jsonl"
    report = export(src, out, reserved=reserved)
    assert report == ExportReport(read=20, written=19, dropped_contaminated=1, rejected=0)
    ks = [k for k in range(20) if k != 3]  # make_trace(3) asks the eval set's question
    assert out.read_text(encoding="utf-8") == expected(ks)
    first = out.read_bytes()
    assert b"\r" not in first and first.endswith(b"\n")
    for line in first.splitlines():
        TrainingExample.model_validate_json(line)
    export(write_traces(tmp_path / "t2.jsonl", range(20), shuffle=False), out, reserved=reserved)
    assert out.read_bytes() == first  # same traces, another file order: same bytes
    assert not rejects_path(out).exists() and leftovers(out.parent) == []


def test_limit_and_since(tmp_path, reserved):
    src = write_traces(tmp_path / "t.jsonl", range(10))
    out = tmp_path / "e.jsonl"
    assert export(src, out, limit=2, reserved=reserved).written == 2
    assert out.read_text() == expected([0, 1])
    export(src, out, since="2025-01-01T00:00:08Z", reserved=reserved)
    assert out.read_text() == expected([8, 9])
    export(src, out, since="2025-01-01 01:00:07+01:00", limit=1, reserved=reserved)
    assert out.read_text() == expected([7])


def test_bad_input_fails_listing_problems_and_writes_nothing(tmp_path, reserved):
    src = write_traces(tmp_path / "t.jsonl", range(5), extra=['{"prompt": 1}', "nope"])
    out = tmp_path / "o" / "examples.jsonl"
    out.parent.mkdir()
    out.write_text("previous\n")
    with pytest.raises(InvalidInput) as e:
        export(src, out, reserved=reserved)
    msg = e.value.message
    assert f"{src}:6: prompt: Input should be a valid string" in msg
    assert f"{src}:6: final_answer: Field required" in msg
    assert f"{src}:7: <json>: expected ident at line 1 column 2" in msg
    assert out.read_text() == "previous\n" and leftovers(out.parent) == []


def test_skip_writes_rejects_with_reasons(tmp_path, reserved):
    dup = dumps(make_stored(1).model_copy(update={"created_at": make_stored(9).created_at}))
    src = write_traces(tmp_path / "t.jsonl", range(5), extra=['{"prompt": 1}', dup])
    out = tmp_path / "examples.jsonl"
    report = export(src, out, on_invalid="skip", reserved=reserved)
    assert report == ExportReport(read=7, written=4, dropped_contaminated=1, rejected=2)
    assert out.read_text() == expected([0, 1, 2, 4])
    rejects = [json.loads(x) for x in rejects_path(out).read_text().splitlines()]
    assert rejects_path(out).name == "examples.rejects.jsonl"
    assert rejects[0] == {
        "where": f"{src}:7",
        "problems": [
            {"field": "id", "message": f"duplicate id {make_stored(1).id!r} (first: {src}:2)"}
        ],
        "record": dup,
    }
    assert rejects[1]["where"] == f"{src}:6" and rejects[1]["record"] == '{"prompt": 1}'
    assert [p["field"] for p in rejects[1]["problems"]] == [
        "trace_version",
        "prompt",
        "final_answer",
        "steps",
    ]
    # a later clean run in fail mode removes the stale rejects file
    export(write_traces(tmp_path / "ok.jsonl", range(3)), out, reserved=reserved)
    assert not rejects_path(out).exists()


def test_nothing_to_write_is_an_error(tmp_path, reserved):
    out = tmp_path / "e.jsonl"
    src = write_traces(tmp_path / "t.jsonl", [3])  # only the eval set's question
    with pytest.raises(
        InvalidInput, match=r"no traces to write \(0 rejected, 1 reserved by an eval set"
    ):
        export(src, out, reserved=reserved)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(InvalidInput, match="no traces"):
        export(str(tmp_path / "empty.jsonl"), out, on_invalid="skip", reserved=reserved)
    assert not out.exists() and leftovers(tmp_path) == []


def test_malformed_since_and_missing_evalsets(tmp_path, reserved):
    src = write_traces(tmp_path / "t.jsonl", range(2))
    with pytest.raises(InvalidInput, match="--since: since: not an ISO-8601 date and time"):
        export(src, tmp_path / "e.jsonl", since="last tuesday", reserved=reserved)
    with pytest.raises(InvalidInput, match="no such directory"):
        export(src, tmp_path / "e.jsonl", reserved=load_reservations(tmp_path / "none"))


def test_sqlite_and_postgres_stores_export_the_same_examples(tmp_path, pg_url, reserved):
    traces = [make_stored(k) for k in range(30)]
    outs = {}
    for kind, url in (("sqlite", f"sqlite:{tmp_path / 's.sqlite'}"), ("postgresql", pg_url)):
        with open_store(url) as db:
            db.create_schema()
            db.import_traces(traces)
        out = tmp_path / f"{kind}.jsonl"
        assert export(url, out, reserved=reserved).written == 29
        outs[kind] = out.read_text()
        assert outs[kind] == expected([k for k in range(30) if k != 3], source=kind)
    assert outs["sqlite"].replace('"source":"sqlite"', "") == outs["postgresql"].replace(
        '"source":"postgresql"', ""
    )


def test_cli_params_and_overrides(tmp_path, evalsets, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_traces(tmp_path / "t.jsonl", range(6))
    write_params(
        tmp_path / "params.yaml",
        {"evalsets_dir": "evalsets", "export": {"source": "t.jsonl", "limit": 4}},
    )
    runner = CliRunner()
    r = runner.invoke(cli, ["export", "--out", "e.jsonl"])
    assert r.exit_code == 0, r.output
    assert r.output == ("export: read 4, written 3, dropped (eval set) 1, rejected 0 -> e.jsonl\n")
    r = runner.invoke(
        cli, ["export", "--out", "e.jsonl", "--limit", "6", "--since", "2025-01-01T00:00:04Z"]
    )
    assert r.exit_code == 0 and (tmp_path / "e.jsonl").read_text() == expected([4, 5])
    r = runner.invoke(cli, ["export", "--out", "e.jsonl", "--since", "soon"])
    assert r.exit_code == 1 and "--since: since: not an ISO-8601" in r.output
    assert "--on-invalid [fail|skip]" in runner.invoke(cli, ["export", "--help"]).output


def test_cli_bad_params_file(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("export:\n  on_invalid: maybe\n")
    r = CliRunner().invoke(cli, ["export", "--out", "e.jsonl", "--params", str(bad)])
    assert r.exit_code == 1 and f"{bad}:2: export.on_invalid: Input should be" in r.output
