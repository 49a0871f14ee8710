"""Training says how far it is (to stderr, off a terminal: plain lines) and writes the same files
as it does without any progress code."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from support.data import small_formatted

from tunixrt_dvc.loop import progress
from tunixrt_dvc.params import load_params
from tunixrt_dvc.sft import trainer as trainer_module
from tunixrt_dvc.sft.hooks import BatchTokens
from tunixrt_dvc.text import packing

STEPS = {"steps": 4, "eval_every": 2, "checkpoint_every": 2}
# What the train stage's DVCLive writes, and the step log a resumed run replays.
FILES = (
    "metrics.json",
    *(f"plots/metrics/{m}.tsv" for m in ("train/loss", "train/grad_norm", "train/lr", "eval/loss")),
    ".resume/steps.jsonl",
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    from tunixrt_dvc.model.build import build_model
    from tunixrt_dvc.text.tokenizer import Tokenizer

    root = tmp_path_factory.mktemp("progress")
    data = small_formatted(root, n_traces=300, overrides={"train": STEPS})
    params = load_params(root / "params.yaml")
    tok = Tokenizer.load(data / "tokenizer.model")
    net, _ = build_model(
        params.model, vocab_size=tok.vocab_size, max_len=params.train.seq_len, seed=params.seed
    )
    return {"root": root, "data": data, "params": params, "model": net}


def train(setup: dict, name: str) -> tuple[trainer_module.TrainResult, str]:
    """The train stage's call, in this process; returns its result and its weights' hash."""
    from dvclive import Live
    from flax import nnx

    net = nnx.clone(setup["model"])  # the same initial weights for every run, in new buffers
    nnx.update(net, jax.tree.map(jnp.copy, nnx.state(setup["model"])))
    out = setup["root"] / name
    data, params = setup["data"], setup["params"]
    result = trainer_module.train(
        net,
        train_examples=packing.load_examples(data / "train.jsonl"),
        val_examples=packing.load_examples(data / "val.jsonl"),
        params=params.train,
        seed=params.seed,
        work_dir=out / ".resume",
        fingerprint={"run": "progress"},
        live=Live(dir=str(out), save_dvc_exp=False, dvcyaml=None),
    )
    weights = hashlib.sha256()
    for leaf in jax.tree.leaves(nnx.state(net)):
        weights.update(np.asarray(leaf).tobytes())
    return result, weights.hexdigest()


def test_progress_lines_and_the_files_of_a_run_without_progress(setup, monkeypatch, capsys):
    monkeypatch.setattr(progress, "INTERVAL_S", 0.5)
    shown, weights = train(setup, "shown")
    out, err = capsys.readouterr()
    assert "train:" not in out  # stdout is the stage's own (bench reads its last line)
    lines = [x for x in err.splitlines() if x.startswith("train:")]
    assert lines[0] == "train: evaluating at step 0 (compiling)", lines
    assert "train: step 1/4 (compiling)" in lines
    assert any(re.match(r"train: step 0/4 \(0%\) \| step 1/4 compiling for \d+s", x) for x in lines)
    assert any(re.match(r"train: step 1/4 compiled in \d+\.\ds$", x) for x in lines), lines
    assert "train: eval loss" in err and "at step 2" in err
    first = next(x for x in lines if x.startswith("train: step 1/4 (25%) | loss "))
    assert first.endswith("with compilation") and "ETA ?" in first
    # Padding share of the 4 steps' batches, real tokens/s of the 3 after the compiling one.
    batches = packing.epoch_batches(
        packing.load_examples(setup["data"] / "train.jsonl"),
        batch_size=setup["params"].train.batch_size,
        seq_len=setup["params"].train.seq_len,
        seed=setup["params"].seed,
        epoch=0,
    )
    pad = 1 - packing.real_token_fraction(batches[:4])
    last = re.compile(
        rf"train: step 4/4 \(100%\) \| loss {shown.train_loss_last:.4g} \| [\d,]+ real tok/s "
        rf"\| pad {pad:.1%} \| ETA 0s \| elapsed \d+s"
    )
    assert any(last.fullmatch(x) for x in lines), lines
    assert shown.tokens_per_s == shown.computed_tokens_per_s > shown.real_tokens_per_s > 0
    ratio = shown.real_tokens_per_s / shown.computed_tokens_per_s
    assert ratio == pytest.approx(packing.real_token_fraction(batches[1:4]))

    # Without any of it: no progress, no token count, Tunix's bar left alone.
    def silent(*args, **kwargs):
        return progress.Progress(*args, **{**kwargs, "enabled": False})

    monkeypatch.setattr(trainer_module, "Progress", silent)
    monkeypatch.setattr(trainer_module, "silence_tunix_bar", lambda trainer: None)
    monkeypatch.setattr(BatchTokens, "count", lambda self, batches: batches)
    plain, plain_weights = train(setup, "plain")
    assert "train:" not in capsys.readouterr().err
    assert plain_weights == weights
    root: Path = setup["root"]
    for name in FILES:
        assert (root / "shown" / name).read_bytes() == (root / "plain" / name).read_bytes(), name
    assert sorted(p.relative_to(root / "shown") for p in (root / "shown").rglob("*.json*")) == (
        sorted(p.relative_to(root / "plain") for p in (root / "plain").rglob("*.json*"))
    )
