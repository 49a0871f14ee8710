"""Training: packing, loss mask, a run that learns, determinism, resume and its guard."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tunixrt_dvc import corpus, training
from tunixrt_dvc.format_data import run_format
from tunixrt_dvc.manifest import sha256_tree
from tunixrt_dvc.params import load_params
from tunixrt_dvc.schemas import dumps, trace_to_example
from tunixrt_dvc.tokenizer import Tokenizer

SMALL = {
    "seed": 0,
    "format": {"max_len": 192, "vocab_size": 256, "val_fraction": 0.05},
    "model": {
        "num_layers": 1,
        "embed_dim": 32,
        "hidden_dim": 64,
        "num_heads": 2,
        "head_dim": 16,
        "num_kv_heads": 1,
    },
    "train": {
        "steps": 12,
        "batch_size": 4,
        "seq_len": 256,
        "learning_rate": 0.01,
        "warmup_steps": 2,
        "eval_every": 6,
        "checkpoint_every": 2,
        "compute_dtype": "bfloat16",  # as the default pipeline trains
    },
}


def write_params(path: Path, overrides: dict) -> Path:
    data = json.loads(json.dumps(SMALL))
    for section, values in overrides.items():
        data[section].update(values)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def formatted(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("formatted")
    examples = root / "examples.jsonl"
    examples.write_text(
        "".join(
            dumps(trace_to_example(t, source="builtin")) + "\n"
            for t in corpus.traces(n=400, seed=0)
        )
    )
    params = load_params(write_params(root / "params.yaml", {}))
    run_format(examples, root / "data", params=params.format, seed=params.seed)
    return root / "data"


def run_train(cwd: Path, data: Path, out: str, params: Path, **popen) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "tunixrt_dvc.cli",
        "train",
        "--params",
        str(params),
        "--data",
        str(data),
        "--out",
        out,
    ]
    return subprocess.Popen(
        cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen
    )


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def test_packing_wastes_little_and_keeps_every_example(formatted):
    examples = training.load_examples(formatted / "train.jsonl")
    batches = training.epoch_batches(examples, batch_size=4, seq_len=256, seed=0, epoch=0)
    assert training.real_token_fraction(batches) >= 0.9
    rows = training.pack_rows([len(e.ids) for e in examples], seq_len=256)
    assert sorted(i for r in rows for i in r) == list(range(len(examples)))
    assert all(sum(len(examples[i].ids) for i in r) <= 256 for r in rows)


def test_each_packed_example_starts_with_bos_and_its_loss_ends_on_end_of_turn(formatted):
    tok = Tokenizer.load(formatted / "tokenizer.model")
    examples = training.load_examples(formatted / "train.jsonl")
    batch = training.epoch_batches(examples, batch_size=4, seq_len=256, seed=0, epoch=0)[0]
    for tokens, mask, pos, seg in zip(
        batch["input_tokens"],
        batch["input_mask"],
        batch["positions"],
        batch["segment_ids"],
        strict=True,
    ):
        for s in set(seg.tolist()) - {0}:
            where = np.flatnonzero(seg == s)
            ex_tokens, ex_mask = tokens[where], mask[where]
            assert ex_tokens[0] == tok.bos_id and pos[where][0] == 0
            assert ex_tokens[-1] == tok.end_of_turn_id and ex_mask[-1] == 1
            # The mask is the completion: zeros (BOS + prompt), then ones to the end.
            first = int(np.argmax(ex_mask))
            assert ex_mask[:first].sum() == 0 and ex_mask[first:].all()
            assert tok.decode(ex_tokens[first:].tolist()).startswith("<reasoning>")
        assert (mask[seg == 0] == 0).all() and (tokens[seg == 0] == 0).all()


def test_attention_stays_inside_each_packed_example(formatted):
    examples = training.load_examples(formatted / "train.jsonl")
    batch = training.epoch_batches(examples, batch_size=2, seq_len=256, seed=0, epoch=0)[0]
    mask = np.asarray(training.model_inputs(batch)["attention_mask"])
    seg = batch["segment_ids"]
    i, j = np.nonzero(mask[0])
    assert (seg[0][i] == seg[0][j]).all() and (j <= i).all() and (seg[0][i] > 0).all()


def test_mixed_precision_loss_is_tunix_loss_with_float32_gradients(formatted, tmp_path):
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from tunix.sft.peft_trainer import _default_loss_fn

    from tunixrt_dvc import model

    params = load_params(write_params(tmp_path / "params.yaml", {}))
    net, _ = model.build_model(params.model, vocab_size=256, max_len=256, seed=0)
    examples = training.load_examples(formatted / "train.jsonl")
    batch = training.epoch_batches(examples, batch_size=4, seq_len=256, seed=0, epoch=0)[0]
    inputs = training.model_inputs(batch)

    tunix = float(_default_loss_fn(net, **inputs))
    f32 = float(training.make_loss_fn("float32")(net, **inputs))
    bf16 = float(training.make_loss_fn("bfloat16")(net, **inputs))
    assert f32 == pytest.approx(tunix, rel=1e-5)
    assert bf16 == pytest.approx(tunix, rel=2e-2) and bf16 != f32

    # Called as Tunix's train step calls it: nnx.value_and_grad(loss_fn)(model, **inputs).
    _, grads = nnx.value_and_grad(training.make_loss_fn("bfloat16"))(net, **inputs)
    leaves = jax.tree.leaves(nnx.state(grads, nnx.Param))
    assert leaves and all(g.dtype == jnp.float32 for g in leaves)
    assert all(bool(jnp.any(g != 0)) for g in leaves)


def test_training_learns_and_is_bit_identical(formatted, tmp_path):
    params = write_params(tmp_path / "params.yaml", {})
    a, b = run_train(tmp_path, formatted, "a", params), run_train(tmp_path, formatted, "b", params)
    finish(a), finish(b)
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["steps"] == 12
    assert metrics["eval_loss_last"] < metrics["eval_loss_first"] - 1.0
    assert metrics["real_token_fraction"] >= 0.9
    assert sha256_tree(tmp_path / "a" / "model") == sha256_tree(tmp_path / "b" / "model")
    for name in ("metrics.json", "fingerprint.json", "plots/loss.tsv", "plots/eval_loss.tsv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    loss = (tmp_path / "a" / "plots" / "loss.tsv").read_text().splitlines()
    assert loss[0].split("\t") == ["step", "loss", "grad_norm", "learning_rate"]
    assert len(loss) == 1 + 12
    manifest = json.loads((tmp_path / "a" / "run_manifest.json").read_text())
    assert manifest["data_sha256"] and manifest["tokenizer_sha256"] and manifest["git_sha"]
    assert manifest["timings"]["tokens_per_s"] > 0


def test_killed_run_resumes_to_identical_weights(formatted, tmp_path):
    params = write_params(tmp_path / "params.yaml", {"train": {"steps": 16}})
    reference = run_train(tmp_path, formatted, "ref", params)
    finish(reference)

    victim = run_train(tmp_path, formatted, "run", params, start_new_session=True)
    steps = tmp_path / "run" / ".resume" / "checkpoints"
    deadline = time.monotonic() + 300

    def saved() -> bool:
        return steps.exists() and any(
            p.name.isdigit() and int(p.name) >= 6 for p in steps.glob("*")
        )

    while not saved():
        assert victim.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "run" / "model").exists()

    finish(run_train(tmp_path, formatted, "run", params))
    manifest = json.loads((tmp_path / "run" / "run_manifest.json").read_text())
    assert manifest["timings"]["resumed_from_step"] >= 6
    assert sha256_tree(tmp_path / "run" / "model") == sha256_tree(tmp_path / "ref" / "model")
    for name in ("metrics.json", "plots/loss.tsv", "plots/eval_loss.tsv"):
        assert (tmp_path / "run" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()


def test_checkpoint_of_another_config_is_not_resumed(formatted, tmp_path):
    first = write_params(tmp_path / "first.yaml", {"train": {"learning_rate": 0.02}})
    finish(run_train(tmp_path, formatted, "run", first))
    assert any((tmp_path / "run" / ".resume" / "checkpoints").iterdir())

    second = write_params(tmp_path / "second.yaml", {})
    finish(run_train(tmp_path, formatted, "run", second))
    finish(run_train(tmp_path, formatted, "fresh", second))
    manifest = json.loads((tmp_path / "run" / "run_manifest.json").read_text())
    assert manifest["timings"]["resumed_from_step"] == 0
    assert sha256_tree(tmp_path / "run" / "model") == sha256_tree(tmp_path / "fresh" / "model")


def test_invalid_params_fail_before_any_compute(formatted, tmp_path):
    params = write_params(tmp_path / "params.yaml", {"train": {"seq_len": 64}})
    proc = run_train(tmp_path, formatted, "out", params)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "train.seq_len" in out and "format.max_len" in out
    assert not (tmp_path / "out").exists()

    params.write_text(params.read_text().replace("learning_rate: 0.01", "learning_rate: -1"))
    proc = run_train(tmp_path, formatted, "out", params)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "train.learning_rate" in out and "params.yaml:" in out
    assert not (tmp_path / "out").exists()
