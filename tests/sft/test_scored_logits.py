"""`train.logits: scored`: logits only where the loss scores, the same loss and gradients."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from support.data import small_formatted
from support.params import train_params
from support.params import write_small_params as write_params

from tunixrt_dvc.model.build import build_model
from tunixrt_dvc.model.lora import apply_lora
from tunixrt_dvc.params import LoraParams, load_params
from tunixrt_dvc.sft.inputs import model_inputs
from tunixrt_dvc.sft.loss import make_loss_fn, max_scored
from tunixrt_dvc.sft.trainer import scored_rows
from tunixrt_dvc.text import packing


@pytest.fixture(scope="module")
def formatted(tmp_path_factory) -> Path:
    return small_formatted(tmp_path_factory.mktemp("formatted"), n_traces=400)


def _batch(formatted: Path) -> dict:
    examples = packing.load_examples(formatted / "train.jsonl")
    return packing.epoch_batches(examples, batch_size=4, seq_len=256, seed=0, epoch=0)[0]


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_scored_logits_give_the_loss_and_gradients_of_all_logits(formatted, tmp_path, lora, dtype):
    params = load_params(write_params(tmp_path / "params.yaml", {}))
    net, _ = build_model(params.model, vocab_size=256, max_len=256, seed=0)
    wrt = nnx.Param
    if lora:
        adapters = LoraParams(rank=4, alpha=8.0, targets=["q_einsum", "up_proj"], quantize=None)
        net, wrt = apply_lora(net, adapters, seed=0), nnx.LoRAParam
    batch = _batch(formatted)
    inputs = model_inputs(batch)
    scored = int(np.sum(batch["input_mask"][:, 1:]))
    assert max_scored([batch]) == scored < 4 * 255  # the prompts are not scored

    def loss_and_grads(rows):
        fn = make_loss_fn(dtype, scored_rows=rows)
        step = nnx.jit(
            lambda m: nnx.value_and_grad(
                lambda mm: fn(mm, **inputs), argnums=nnx.DiffState(0, wrt)
            )(m)
        )
        loss, grads = step(net)
        return float(loss), jax.tree.leaves(nnx.state(grads, wrt))

    ref_loss, ref_grads = loss_and_grads(None)
    for rows in (scored, scored + 100):  # exactly the scored positions, or room to spare
        loss, grads = loss_and_grads(rows)
        # bfloat16 products of other shapes round differently in the last bits.
        assert loss == pytest.approx(ref_loss, rel=1e-6 if dtype is None else 1e-4)
        for g, r in zip(grads, ref_grads, strict=True):
            scale = float(jnp.abs(r).max()) + 1e-12
            assert float(jnp.abs(g - r).max()) <= 1e-5 * scale + (2e-2 * scale if dtype else 0)
    assert any(float(jnp.abs(g).max()) > 0 for g in ref_grads)


def test_the_run_scores_no_more_positions_than_its_batches_hold(formatted):
    examples = packing.load_examples(formatted / "train.jsonl")
    val = packing.load_examples(formatted / "val.jsonl")
    tp = train_params(steps=7, batch_size=4, seq_len=256, logits="scored")
    rows = scored_rows(tp, examples, val, seed=0)
    stream = packing.batch_stream(examples, batch_size=4, seq_len=256, seed=0)
    run = [next(stream) for _ in range(7)] + packing.eval_batches(val, batch_size=4, seq_len=256)
    assert rows == max(int(b["input_mask"][:, 1:].sum()) for b in run)
    assert scored_rows(tp.model_copy(update={"logits": "all"}), examples, val, seed=0) is None


def test_a_run_with_scored_logits_trains_as_one_with_all(formatted, tmp_path):
    finals = {}
    for logits in ("all", "scored"):
        params = write_params(tmp_path / f"{logits}.yaml", {"train": {"logits": logits}})
        cmd = [sys.executable, "-m", "tunixrt_dvc.cli", "train", "--params", str(params)]
        cmd += ["--data", str(formatted), "--out", str(tmp_path / logits)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        finals[logits] = json.loads((tmp_path / logits / "metrics.json").read_text())
    a, s = finals["all"], finals["scored"]
    assert s["eval"]["loss_first"] == pytest.approx(a["eval"]["loss_first"], rel=1e-5)
    assert s["eval"]["loss"] == pytest.approx(a["eval"]["loss"], rel=2e-2)
    assert s["eval"]["loss"] < s["eval"]["loss_first"] - 1.0
