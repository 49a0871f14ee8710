"""Real-checkpoint loading, on small random Gemma3 models saved in both on-disk layouts.

The loaded model must give *exactly* the logits of the saved one: loading only moves, transposes
and reshapes float32 values, so the forward pass runs the same program on the same numbers.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from flax import nnx
from support.checkpoints import save_checkpoint_orbax, save_checkpoint_safetensors
from support.params import model_params

from tunixrt_dvc.model import checkpoint as C
from tunixrt_dvc.model.build import build_model
from tunixrt_dvc.model.checkpoint import detect_layout, load_checkpoint
from tunixrt_dvc.model.config import ModelConfig, model_config
from tunixrt_dvc.model.init import random_model
from tunixrt_dvc.params import ModelParams

VOCAB, MAX_LEN = 256, 32


def _params(**kw) -> ModelParams:
    dims = dict(num_layers=2, embed_dim=64, hidden_dim=128, num_heads=4, head_dim=16)
    return model_params(**(dims | kw))


def _random_model(params: ModelParams, seed: int = 0):
    """Every parameter random (Tunix initialises MLPs and norms to zero, which would hide a
    swapped gate/up projection or a misplaced norm)."""
    model, config = build_model(params, vocab_size=VOCAB, max_len=MAX_LEN, seed=seed)
    rng = np.random.default_rng(seed)
    state = nnx.state(model, nnx.Param)
    nnx.update(
        model, jax.tree.map(lambda x: jnp.asarray(rng.normal(0, 0.5, x.shape), x.dtype), state)
    )
    return model, config


@nnx.jit
def _forward(model, tokens):
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    mask = jnp.tril(jnp.ones((tokens.shape[1],) * 2, bool))[None].repeat(tokens.shape[0], 0)
    return model(tokens, positions, None, mask)[0]


def _logits(model, vocab: int = VOCAB) -> np.ndarray:
    return np.asarray(_forward(model, jax.random.randint(jax.random.key(7), (2, 24), 0, vocab)))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A 2-layer MQA model (as Gemma3-270m/1b: 4 query heads, 1 KV head) in both layouts."""
    root = tmp_path_factory.mktemp("ckpt")
    model, config = _random_model(_params(num_kv_heads=1))
    save_checkpoint_safetensors(model, config, root / "hf")
    save_checkpoint_orbax(model, config, root / "kaggle" / "gemma3-tiny")
    return root, config, _logits(model)


@pytest.mark.parametrize("layout", ["hf", "kaggle"])
def test_round_trip_gives_identical_logits(saved, layout):
    root, config, want = saved
    assert detect_layout(root / layout)[0] == ("safetensors" if layout == "hf" else "orbax")
    model = load_checkpoint(root / layout, config, dtype="float32")
    np.testing.assert_array_equal(_logits(model), want)


def test_safetensors_uses_hugging_face_names_and_shapes(saved):
    root, _, _ = saved
    tensors = safetensors.numpy.load_file(root / "hf" / "model.safetensors")
    assert tensors["model.embed_tokens.weight"].shape == (VOCAB, 64)
    assert tensors["model.layers.1.self_attn.q_proj.weight"].shape == (4 * 16, 64)
    assert tensors["model.layers.1.self_attn.k_proj.weight"].shape == (1 * 16, 64)
    assert tensors["model.layers.1.self_attn.o_proj.weight"].shape == (64, 4 * 16)
    assert tensors["model.layers.1.mlp.down_proj.weight"].shape == (64, 128)
    assert tensors["model.layers.1.pre_feedforward_layernorm.weight"].shape == (64,)
    assert "model.norm.weight" in tensors and len(tensors) == 1 + 2 * 13 + 1
    cfg = json.loads((root / "hf" / "config.json").read_text())
    assert (cfg["model_type"], cfg["num_key_value_heads"], cfg["vocab_size"]) == (
        "gemma3_text",
        1,
        VOCAB,
    )


def test_safetensors_export_is_byte_identical(saved, tmp_path):
    root, config, _ = saved
    model = load_checkpoint(root / "hf", config, dtype="float32")
    save_checkpoint_safetensors(model, config, tmp_path)
    for name in ("model.safetensors", "config.json"):
        assert (tmp_path / name).read_bytes() == (root / "hf" / name).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


@pytest.mark.parametrize("kv_heads", [2, 4])  # grouped-query, and fused q/k/v (heads == kv heads)
def test_other_attention_layouts_round_trip(tmp_path, kv_heads):
    model, config = _random_model(_params(num_kv_heads=kv_heads), seed=kv_heads)
    want = _logits(model)
    save_checkpoint_safetensors(model, config, tmp_path / "hf")
    save_checkpoint_orbax(model, config, tmp_path / "orbax")
    for layout in ("hf", "orbax"):
        loaded = load_checkpoint(tmp_path / layout, config, dtype="float32")
        np.testing.assert_array_equal(_logits(loaded), want)


def test_bfloat16_save_and_load(tmp_path):
    model, config = _random_model(_params(num_kv_heads=1, dtype="bfloat16"))
    save_checkpoint_safetensors(model, config, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["torch_dtype"] == "bfloat16"
    loaded = load_checkpoint(tmp_path, config, dtype="bfloat16")
    leaf = jax.tree.leaves(nnx.state(loaded, nnx.Param))[0]
    assert leaf.dtype == jnp.bfloat16
    np.testing.assert_array_equal(_logits(loaded), _logits(model))


def test_mixed_dtype_file_is_read_correctly(saved, tmp_path):
    # Tunix's fast loader reads a file as the dtype of its first tensor; such files must take the
    # per-tensor path. float64 holds the float32 values exactly.
    root, config, want = saved
    tensors = safetensors.numpy.load_file(root / "hf" / "model.safetensors")
    tensors["model.embed_tokens.weight"] = tensors["model.embed_tokens.weight"].astype(np.float64)
    safetensors.numpy.save_file(tensors, tmp_path / "model.safetensors")
    np.testing.assert_array_equal(_logits(load_checkpoint(tmp_path, config, dtype="float32")), want)


def test_build_model_loads_a_real_preset_with_padded_vocab(saved, monkeypatch):
    # A real preset's architecture with the test model's small dimensions: build_model must take
    # the architecture from the preset, the row count from the checkpoint, the weights from disk.
    root, config, want = saved
    monkeypatch.setattr(
        ModelConfig,
        "gemma3_270m",
        staticmethod(lambda: dataclasses.replace(config, num_embed=262144)),
    )
    params = model_params(preset="gemma3-270m", checkpoint=str(root / "kaggle"))
    model, got = build_model(params, vocab_size=VOCAB - 6, max_len=MAX_LEN, seed=123)
    assert got.num_embed == VOCAB  # 6 padded rows are allowed
    np.testing.assert_array_equal(_logits(model), want)
    with pytest.raises(C.VocabMismatch, match=f"tokenizer has {VOCAB + 1} pieces"):
        build_model(params, vocab_size=VOCAB + 1, max_len=MAX_LEN, seed=0)


def test_tiny_with_a_checkpoint_loads_it(saved):
    root, _, want = saved
    params = _params(num_kv_heads=1, checkpoint=str(root / "hf"))
    model, _ = build_model(params, vocab_size=VOCAB, max_len=MAX_LEN, seed=99)
    np.testing.assert_array_equal(_logits(model), want)


def test_missing_path(tmp_path, saved):
    with pytest.raises(
        C.CheckpointNotFound, match=f"{tmp_path / 'nope'}: model.checkpoint: no such"
    ):
        load_checkpoint(tmp_path / "nope", saved[1], dtype="float32")


def test_unrecognized_layout(tmp_path, saved):
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    with pytest.raises(C.UnknownLayout, match="neither \\*.safetensors"):
        load_checkpoint(tmp_path, saved[1], dtype="float32")
    with pytest.raises(C.UnknownLayout, match="expected a directory"):
        load_checkpoint(tmp_path / "weights.bin", saved[1], dtype="float32")
    (tmp_path / "model.safetensors").write_bytes(b"\x10\0\0\0\0\0\0\0{not json")
    with pytest.raises(C.UnknownLayout, match="model.safetensors: <header>: not safetensors"):
        load_checkpoint(tmp_path, saved[1], dtype="float32")


@pytest.mark.parametrize(
    ("layout", "name", "expected", "found"),
    [
        ("hf", "model.layers.0.mlp.gate_proj.weight", (96, 64), (128, 64)),
        ("kaggle", "transformer/layer_0/mlp/gating_einsum.w", (2, 96, 64), (2, 128, 64)),
    ],
)
def test_shape_mismatch_names_the_parameter(saved, layout, name, expected, found):
    root, config, _ = saved
    wrong = dataclasses.replace(config, hidden_dim=96)
    with pytest.raises(C.ShapeMismatch) as e:
        load_checkpoint(root / layout, wrong, dtype="float32")
    assert f"{name}: expected shape {expected}, found {found}" in e.value.message


def test_missing_tensor_and_deeper_checkpoint(saved, tmp_path):
    root, config, _ = saved
    tensors = safetensors.numpy.load_file(root / "hf" / "model.safetensors")
    del tensors["model.layers.1.self_attn.k_norm.weight"]
    safetensors.numpy.save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(C.ShapeMismatch, match="k_norm.weight: missing \\(expected shape \\(16,\\)"):
        load_checkpoint(tmp_path, config, dtype="float32")
    # A 2-layer checkpoint into a 1-layer config: the extra layer must not be dropped silently.
    with pytest.raises(C.ShapeMismatch, match="layers.1.mlp.up_proj.weight: not in the config"):
        load_checkpoint(root / "hf", dataclasses.replace(config, num_layers=1), dtype="float32")


def test_config_json_mismatch_names_file_and_line(saved, tmp_path):
    root, config, _ = saved
    shutil.copy(root / "hf" / "model.safetensors", tmp_path)
    text = (
        (root / "hf" / "config.json")
        .read_text()
        .replace('"rope_local_base_freq": 10000', '"rope_local_base_freq": 5000')
    )
    (tmp_path / "config.json").write_text(text)
    line = next(n for n, s in enumerate(text.splitlines(), 1) if "rope_local_base_freq" in s)
    with pytest.raises(C.ShapeMismatch) as e:
        load_checkpoint(tmp_path, config, dtype="float32")
    assert (
        f"config.json:{line}: rope_local_base_freq: checkpoint has 5000, the config has 10000"
        in (e.value.message)
    )


@pytest.mark.slow
def test_gemma3_270m_full_size_round_trip(tmp_path):
    """The real 270M architecture (262144-row vocabulary, 18 layers with global ones), random
    weights, through the Hugging Face layout and build_model."""
    params = model_params(preset="gemma3-270m", checkpoint=str(tmp_path))
    config = model_config(params, vocab_size=262144, max_len=MAX_LEN)
    model = random_model(config, seed=0)
    save_checkpoint_safetensors(model, config, tmp_path)
    want = _logits(model, 262144)
    del model
    loaded, _ = build_model(params, vocab_size=262144, max_len=MAX_LEN, seed=0)
    np.testing.assert_array_equal(_logits(loaded, 262144), want)
