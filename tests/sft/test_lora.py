"""LoRA and QLoRA (qwix): only the adapters train, the merged model computes what was trained,
exports to Hugging Face safetensors in any number of shards, and runs resume like full FT."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from support import stages
from support.data import small_formatted
from support.params import model_params, write_small_params

from tunixrt_dvc.io import sha256_tree
from tunixrt_dvc.model.build import build_model
from tunixrt_dvc.model.export import export_safetensors
from tunixrt_dvc.model.lora import adapter_state, apply_lora, merge
from tunixrt_dvc.params import LoraParams, load_params
from tunixrt_dvc.sft.trainer import eval_loss, train
from tunixrt_dvc.text.packing import epoch_batches, load_examples
from tunixrt_dvc.text.tokenizer import Tokenizer

TARGETS = ["q_einsum", "kv_einsum", "attn_vec_einsum", "gate_proj", "up_proj", "down_proj"]
DIMS = dict(num_layers=2, embed_dim=64, hidden_dim=128, num_heads=4, head_dim=32, num_kv_heads=1)


def _lora(quantize: str | None = None) -> LoraParams:
    return LoraParams(rank=4, alpha=8.0, targets=TARGETS, quantize=quantize)


def _logits(model) -> np.ndarray:
    tokens = jax.random.randint(jax.random.key(3), (2, 24), 3, 256)
    positions = jnp.broadcast_to(jnp.arange(24), (2, 24))
    mask = jnp.tril(jnp.ones((24, 24), bool))[None].repeat(2, 0)
    return np.asarray(model(tokens, positions, None, mask)[0])


@pytest.mark.parametrize("quantize", [None, "int8", "nf4"])
def test_the_merged_model_computes_what_the_adapted_one_does(quantize):
    """Adapters folded into the base give the adapted model's logits (QLoRA: into the base as it
    was quantized, which is what the adapters were trained against)."""
    params = model_params(**DIMS)
    adapted = apply_lora(
        build_model(params, vocab_size=256, max_len=64, seed=0)[0], _lora(quantize), seed=1
    )
    rng = np.random.default_rng(0)
    state = nnx.state(adapted, nnx.LoRAParam)
    nnx.update(
        adapted, jax.tree.map(lambda x: jnp.asarray(rng.normal(0, 0.05, x.shape), x.dtype), state)
    )
    merged = merge(
        build_model(params, vocab_size=256, max_len=64, seed=0)[0], adapted, _lora(quantize)
    )
    assert not any(isinstance(v, nnx.LoRAParam) for _, v in nnx.iter_graph(merged))
    np.testing.assert_allclose(_logits(merged), _logits(adapted), rtol=0, atol=1e-4)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, Path]:
    """A small data set and a briefly fully fine-tuned model on it: LoRA starts from a trained
    base (from random init, with the embeddings frozen, it cannot learn)."""
    root = tmp_path_factory.mktemp("lora")
    data = small_formatted(root, n_traces=400)
    params = write_small_params(root / "full.yaml", {})
    stages.finish(stages.train(params, data, root / "full"))
    return {"root": root, "data": data, "model": root / "full" / "model"}


def _overrides(base: dict[str, Path], *, quantize: str | None = None, **train) -> dict:
    return {
        "model": {"checkpoint": str(base["model"])},
        "format": {"tokenizer": str(base["data"] / "tokenizer.model")},
        "train": {
            **{"steps": 8, "eval_every": 4, "checkpoint_every": 2, **train},
            "lora": _lora(quantize).model_dump(),
        },
    }


@pytest.mark.slow
def test_only_the_adapters_train_and_the_merge_and_export_are_exact(base, tmp_path):
    p = load_params(write_small_params(tmp_path / "p.yaml", _overrides(base, steps=6)))
    vocab = Tokenizer.load(base["data"] / "tokenizer.model").vocab_size

    def base_model():
        return build_model(p.model, vocab_size=vocab, max_len=p.train.seq_len, seed=p.seed)

    net, config = base_model()
    frozen = jax.tree.map(np.asarray, nnx.state(net, nnx.Param).to_pure_dict())
    adapted = apply_lora(net, p.train.lora, seed=p.seed)
    examples = load_examples(base["data"] / "train.jsonl")
    # Learning, judged on fixed batches: one step's loss against another's is mostly which
    # examples each drew.
    fixed = epoch_batches(examples, batch_size=4, seq_len=p.train.seq_len, seed=1, epoch=0)[:2]
    before = eval_loss(adapted, fixed, p.train.compute_dtype)
    result = train(
        adapted,
        train_examples=examples,
        val_examples=[],
        params=p.train,
        seed=p.seed,
        work_dir=tmp_path / "work",
        fingerprint={},
    )
    assert result.steps == 6 and eval_loss(adapted, fixed, p.train.compute_dtype) < before
    # The base weights are bit-unchanged; every adapter's B moved away from its zero start.
    base_after = nnx.state(adapted, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam))).to_pure_dict()
    same = jax.tree.map(lambda a, b: np.array_equal(a, np.asarray(b)), frozen, base_after)
    assert all(jax.tree.leaves(same))
    b_mats = [v for k, v in jax.tree_util.tree_leaves_with_path(adapter_state(adapted))
              if "lora_b" in jax.tree_util.keystr(k)]  # fmt: skip
    assert len(b_mats) == p.model.num_layers * len(TARGETS)
    assert all(np.any(np.asarray(b) != 0) for b in b_mats)

    merged = merge(base_model()[0], adapted, p.train.lora)
    np.testing.assert_allclose(_logits(merged), _logits(adapted), rtol=0, atol=1e-4)
    # Exported in several shards, it loads back through the Hugging Face loader unchanged.
    files = export_safetensors(merged, config, tmp_path / "hf", max_shard_bytes=20_000)
    assert len(files) >= 3 and (tmp_path / "hf" / "model.safetensors.index.json").exists()
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == [f.name for f in files]
    hf = p.model.model_copy(update={"checkpoint": str(tmp_path / "hf")})
    loaded, _ = build_model(hf, vocab_size=vocab, max_len=p.train.seq_len, seed=0)
    np.testing.assert_array_equal(_logits(loaded), _logits(merged))


@pytest.mark.slow
def test_lora_runs_resume_exactly_and_qlora_trains_in_mixed_precision(base):
    root, data = base["root"], base["data"]
    params = write_small_params(root / "lora.yaml", _overrides(base))
    stages.finish(stages.train(params, data, root / "ref"))
    card = json.loads((root / "ref" / "model" / "config.json").read_text())
    # The base by its content hash, not its path; the adapter alone, no copy of the weights.
    assert card["adapter"]["rank"] == 4 and card["base"]["sha256"] == sha256_tree(base["model"])
    assert (root / "ref" / "model" / "adapter" / "weights").is_dir()
    assert not (root / "ref" / "model" / "weights").exists()

    victim = stages.train(params, data, root / "run")
    checkpoints = root / "run" / ".resume" / "checkpoints"
    deadline = time.monotonic() + 600
    while not (checkpoints.is_dir() and any(
        p.name.isdigit() and int(p.name) >= 4 for p in checkpoints.iterdir()
    )):  # fmt: skip
        assert victim.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    victim.kill()
    victim.communicate()
    stages.finish(stages.train(params, data, root / "run"))
    manifest = json.loads((root / "run" / "run_manifest.json").read_text())
    assert manifest["timings"]["resumed_from_step"] >= 4
    assert sha256_tree(root / "run" / "model") == sha256_tree(root / "ref" / "model")
    assert (root / "run" / "metrics.json").read_bytes() == (
        root / "ref" / "metrics.json"
    ).read_bytes()

    # QLoRA: the frozen base quantized (nf4), the step in bfloat16: quantized weights are not cast.
    qlora = write_small_params(
        root / "qlora.yaml", _overrides(base, quantize="nf4", compute_dtype="bfloat16")
    )
    stages.finish(stages.train(qlora, data, root / "qlora"))
    metrics = json.loads((root / "qlora" / "metrics.json").read_text())
    assert metrics["step"] == 8 and np.isfinite(metrics["eval"]["loss"])
    card = json.loads((root / "qlora" / "model" / "config.json").read_text())
    assert card["adapter"]["quantize"] == "nf4"
