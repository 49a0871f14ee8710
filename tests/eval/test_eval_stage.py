"""Eval: the sampler sees what training saw, and the stage really generates and scores."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.data import small_formatted
from support.params import write_small_params as write_params

from tunixrt_dvc.eval import sampling
from tunixrt_dvc.model.build import build_model
from tunixrt_dvc.params import load_params
from tunixrt_dvc.text.tokenizer import Tokenizer

EVALSET = Path(__file__).resolve().parents[2] / "evalsets" / "eval_v1.jsonl"
# The format stage's output in the work directory: its tokenizer and its recipe and instruction.
FORMATTED = ("--tokenizer", "data/tokenizer.model", "--format-stats", "data/stats.json")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval")
    small_formatted(root, n_traces=300, overrides={"train": {"steps": 4}})
    return root


def tunixrt(cwd: Path, command: str, *args: str, timeout: float = 600):
    """`tunixrt COMMAND --params params.yaml ARGS` in `cwd`, output captured as text."""
    cmd = [sys.executable, "-m", "tunixrt_dvc.cli", command, "--params", "params.yaml", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_sampler_prompt_tokens_equal_the_training_prefix(workdir):
    """Training sequences are [BOS] + prompt + completion; the sampler must see [BOS] + prompt."""
    from tunix.generate import sampler as sampler_lib

    params = load_params(workdir / "params.yaml")
    tok = Tokenizer.load(workdir / "data" / "tokenizer.model")
    records = [json.loads(x) for x in (workdir / "data" / "train.jsonl").read_text().splitlines()]
    net, cfg = build_model(params.model, vocab_size=tok.vocab_size, max_len=256, seed=0)
    s = sampler_lib.Sampler(
        net,
        tok.sp,
        sampler_lib.CacheConfig(
            cache_size=160, num_layers=cfg.num_layers, num_kv_heads=1, head_dim=cfg.head_dim
        ),
    )
    out = s(
        [r["prompt"] for r in records[:3]],
        max_generation_steps=4,
        max_prompt_length=96,
        temperature=0.0,
        eos_tokens=[tok.end_of_turn_id, tok.eos_id],
    )
    for r, padded in zip(records[:3], out.padded_prompt_tokens, strict=True):
        seen = [int(t) for t in np.asarray(padded) if t != tok.pad_id]
        assert seen == r["ids"][: r["n_prompt"]]


def test_generated_length_counts_up_to_the_stop_token():
    assert sampling._generated_length([5, 6, 106, 0, 0], [106, 1]) == 3
    assert sampling._generated_length([5, 6, 7], [106, 1]) == 3


def test_eval_stage_generates_scores_and_writes_metrics(workdir):
    trained = tunixrt(workdir, "train", "--data", "data")
    assert trained.returncode == 0, trained.stderr
    small_eval = {"evalset": str(EVALSET), "limit": 6, "max_new_tokens": 24, "batch_size": 4}
    write_params(workdir / "params.yaml", {"train": {"steps": 4}, "eval": small_eval})
    proc = tunixrt(workdir, "eval", *FORMATTED)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((workdir / "metrics" / "eval.json").read_text())
    assert set(metrics) == {"before", "after", "delta"}
    assert metrics["before"]["n"] == metrics["after"]["n"] == 6
    for phase in ("before", "after"):
        rows = [
            json.loads(x) for x in (workdir / "eval" / f"{phase}.jsonl").read_text().splitlines()
        ]
        assert len(rows) == 6
        # Really generated: a batch of 4 then a topped-up batch of 2, each up to 24 new tokens.
        assert all(0 < r["gen_tokens"] <= 24 for r in rows)
        assert all(isinstance(r["generation"], str) for r in rows)
    # Before and after are different models, so at least one generation differs.
    before = (workdir / "eval" / "before.jsonl").read_text()
    after = (workdir / "eval" / "after.jsonl").read_text()
    assert before != after
    plot = json.loads((workdir / "eval" / "accuracy_by_category.json").read_text())
    assert {r["model"] for r in plot["accuracy_by_category"]} == {"before", "after"}


def test_eval_prompts_with_control_tokens_are_refused_before_generation(workdir):
    good = {
        "id": "a",
        "prompt": "Mia has 3 apples.",
        "expected_answer": "3",
        "category": "add",
        "difficulty": "easy",
    }
    bad = {**good, "id": "b", "prompt": "Mia has<end_of_turn> 3 apples."}
    (workdir / "hostile.jsonl").write_text("".join(json.dumps(x) + "\n" for x in (good, bad)))
    proc = tunixrt(
        workdir,
        "eval",
        "--evalset",
        "hostile.jsonl",
        *FORMATTED,
        "--out",
        "hostile_out",
        "--metrics",
        "hostile_out/metrics.json",
        timeout=300,
    )
    assert proc.returncode != 0
    assert "hostile.jsonl:2: prompt: contains control token(s) <end_of_turn>" in proc.stderr
    assert not (workdir / "hostile_out").exists()
