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
    assert data["machine"]["device"].startswith("cpu:")  # every figure names its machine
    r = CliRunner().invoke(cli, ["bench", "--rows", "nope", "--out", str(out)])
    assert r.exit_code == 2 and "unknown rows ['nope']" in r.output
    r = CliRunner().invoke(cli, ["bench", "--sizes", "10,x", "--out", str(out)])
    assert r.exit_code == 2 and "comma-separated list of integers" in r.output


def test_gemma_row_measures_each_side_in_its_own_process_and_says_when_the_peer_is_missing(
    tmp_path, monkeypatch
):
    import importlib.util

    import numpy as np

    from tunixrt_dvc.bench import gemma

    rows, seq = gemma.ROWS, gemma.SEQ_LEN
    batch = {
        "input_tokens": np.ones((rows, seq), np.int32),
        "input_mask": np.ones((rows, seq), np.int32),
        "positions": np.tile(np.arange(seq, dtype=np.int32), (rows, 1)),
        "segment_ids": np.pad(np.ones((rows, seq - 64), np.int32), ((0, 0), (0, 64))),
    }
    calls = []

    def child(args):
        calls.append(args)
        steps = [60.0] * gemma.WARMUP + [2.0] * gemma.TIMED
        out = {"losses": [2.5], "step_s": steps, "peak_rss_mb": 4096.0}
        if args[0] == "reference":
            return {"reference_loss": 2.4}
        if args[0] == "peer":
            return out | {"versions": {"torch": "2.13.0"}}
        return out | {"flops_per_token": 1e9}

    monkeypatch.setattr(gemma, "_checkpoint", lambda work: (work / "ckpt", work / "g.gguf"))
    monkeypatch.setattr(gemma, "_batches", lambda ckpt, n: [batch] * n)
    monkeypatch.setattr(gemma, "_child", child)
    monkeypatch.setattr("tunixrt_dvc.bench.train.peak_matmul_flops", lambda dtype: 1e12)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n: None if n == "peft" else real_find_spec(n)
    )
    out = gemma.gemma_row(BenchContext(sizes=(1,), workdir=tmp_path))
    # The float32 reference once, in a process of its own; the peer is not run.
    assert [c[0] for c in calls] == ["reference"] + ["ours"] * len(gemma.OURS)
    assert out[-1] == {"run": "transformers + PEFT: skipped (peft not installed)"}
    first = out[0]
    assert first["s/step"] == 2.0 and first["tokens/s"] == rows * seq / 2.0
    assert first["real tokens/s"] == rows * (seq - 64) / 2.0  # padding is not a real token
    assert first["peak RSS (GB)"] == 4.0 and first["loss vs float32"] == "+1.0e-01"
    assert first["MFU"] == round(1e9 * rows * seq / 2.0 / 1e12, 3)
    # Both sides read the same batches from one file.
    assert len({c[2] for c in calls}) == 1 and gemma._load(calls[0][2])[0].keys() == batch.keys()
