"""`tunixrt bench` (light: small sizes; the real figures are in docs/benchmarks.md)."""

from __future__ import annotations

import importlib
import json

from click.testing import CliRunner

from tunixrt_dvc.bench.cli import ROWS, run_rows, table
from tunixrt_dvc.bench.context import BenchContext
from tunixrt_dvc.bench.export import synthetic_payloads
from tunixrt_dvc.cli import main as cli
from tunixrt_dvc.traces.schemas import ReasoningTrace
from tunixrt_dvc.traces.source import parse_timestamp


def test_every_registered_row_resolves_to_a_function():
    for target in ROWS.values():
        module, attr = target.split(":")
        assert callable(getattr(importlib.import_module(module), attr))


def test_synthetic_traces_are_valid_distinct_and_out_of_order():
    rows = list(synthetic_payloads(500))
    for _, _, payload in rows:
        ReasoningTrace.model_validate_json(payload)
    assert len({r[0] for r in rows}) == 500 and len({r[2] for r in rows}) > 400
    times = [parse_timestamp(r[1]) for r in rows]
    assert times != sorted(times) and len(set(times)) == 500


def test_export_row_measures_both_sources(tmp_path):
    ((name, rows),) = run_rows(["export"], BenchContext(sizes=(300,), workdir=tmp_path))
    assert name == "export"
    assert [(r["source"], r["traces"]) for r in rows] == [("sqlite", 300), ("jsonl", 300)]
    for r in rows:
        assert r["seconds"] > 0 and r["cpu_s"] > 0 and r["traces_per_s"] > 0
        assert 10 < r["peak_rss_mb"] < 1000
    assert table("export", rows).splitlines()[1].split() == list(rows[0])


def test_cli_writes_json_and_rejects_unknown_rows(tmp_path):
    out = tmp_path / "b.json"
    r = CliRunner().invoke(cli, ["bench", "--rows", "export", "--sizes", "120", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "traces_per_s" in r.output
    data = json.loads(out.read_text())
    assert set(data) == {"machine", "rows"} and len(data["rows"]["export"]) == 2
    r = CliRunner().invoke(cli, ["bench", "--rows", "nope", "--out", str(out)])
    assert r.exit_code == 2 and "unknown rows ['nope']" in r.output
    r = CliRunner().invoke(cli, ["bench", "--sizes", "10,x", "--out", str(out)])
    assert r.exit_code == 2 and "comma-separated list of integers" in r.output
