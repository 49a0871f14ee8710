"""Model presets, sizes and costs (no checkpoint files: see test_checkpoints.py)."""

from __future__ import annotations

import dataclasses
from typing import get_args

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from support.params import model_params
from tunix.models.gemma3 import model as gemma3

from tunixrt_dvc.bench.gpu import gpu_bench, measure_train_throughput, peak_bf16_flops
from tunixrt_dvc.errors import InvalidInput
from tunixrt_dvc.model.build import build_model, check_vocab
from tunixrt_dvc.model.checkpoint import VocabMismatch
from tunixrt_dvc.model.config import ModelConfig, model_config
from tunixrt_dvc.model.size import _matmul_params, count_params, model_flops_per_token
from tunixrt_dvc.params import ModelParams, load_params
from tunixrt_dvc.registry import PRESETS

SMALL = dict(num_layers=2, embed_dim=64, hidden_dim=128, num_heads=4, head_dim=16, num_kv_heads=1)


def _abstract(config):
    return nnx.eval_shape(lambda: gemma3.Gemma3(config, rngs=nnx.Rngs(params=0)))


def _preset(name: str) -> ModelConfig:
    return getattr(ModelConfig, PRESETS[name])()


def test_presets_match_params_schema():
    assert set(PRESETS) == set(get_args(ModelParams.model_fields["preset"].annotation))


def test_unknown_preset_is_refused_with_file_and_line(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("seed: 0\nmodel:\n  preset: gemma3-2b\n  checkpoint: x\n")
    with pytest.raises(InvalidInput) as e:
        load_params(f)
    assert f"{f}:3: model.preset:" in str(e.value.message)


def test_tiny_config_from_params():
    config = model_config(model_params(**SMALL), vocab_size=300, max_len=100)
    assert (config.num_layers, config.num_embed, config.embed_dim) == (2, 300, 64)
    assert config.param_dtype == jnp.float32
    # All layers are sliding-window: the window must cover training rows and the sampler's cache
    # (prompt up to max_len plus as many new tokens), and more.
    assert config.sliding_window_size >= 4 * 100


def test_real_preset_config_is_tunix_with_params_dtype():
    params = model_params(preset="gemma3-1b", checkpoint="ckpt", dtype="bfloat16")
    config = model_config(params, vocab_size=262144, max_len=128)
    want = ModelConfig.gemma3_1b_pt()
    assert dataclasses.replace(config, param_dtype=want.param_dtype) == want
    assert config.param_dtype == jnp.bfloat16


def test_tiny_init_is_deterministic_in_the_seed():
    def weights(seed):
        model, _ = build_model(model_params(**SMALL), vocab_size=256, max_len=32, seed=seed)
        return jax.tree.leaves(nnx.state(model, nnx.Param))

    a, b, c = weights(0), weights(0), weights(1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])


def test_tiny_init_gives_every_weight_a_gradient():
    """Tunix zero-initialises the MLP kernels (it expects a checkpoint); all-zero gate, up and down
    kernels get zero gradients and would never train. Every weight must get a gradient."""
    model, _ = build_model(model_params(**SMALL), vocab_size=256, max_len=32, seed=0)
    tokens = jax.random.randint(jax.random.key(1), (2, 17), 3, 256)
    positions = jnp.broadcast_to(jnp.arange(16), (2, 16))
    mask = jnp.broadcast_to(jnp.tril(jnp.ones((16, 16), bool)), (2, 16, 16))

    def loss(m):
        logits, _ = m(tokens[:, :-1], positions, None, mask)
        logp = jax.nn.log_softmax(logits)
        return -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1).mean()

    grads = nnx.grad(loss)(model)
    dead = [
        "/".join(map(str, path))
        for path, g in jax.tree_util.tree_leaves_with_path(nnx.state(grads, nnx.Param))
        if not np.any(np.asarray(g))
    ]
    assert dead == []
    mlp = model.layers[0].mlp
    for kernel in (mlp.gate_proj.kernel, mlp.up_proj.kernel, mlp.down_proj.kernel):
        assert 0.5 < float(np.std(kernel[...])) * np.sqrt(kernel.shape[0]) < 2


@pytest.mark.parametrize(
    ("preset", "published"),
    # Parameter counts Hugging Face lists for google/gemma-3-270m and google/gemma-3-1b-pt.
    [("gemma3-270m", 268_098_176), ("gemma3-1b", 999_885_952)],
)
def test_real_preset_sizes(preset, published):
    assert count_params(_abstract(_preset(preset))) == published


def test_matmul_params_are_all_but_the_norms():
    config = model_config(model_params(**SMALL), vocab_size=256, max_len=32)
    norms = config.num_layers * (4 * config.embed_dim + 2 * config.head_dim) + config.embed_dim
    assert _matmul_params(config) + norms == count_params(_abstract(config))


def test_flops_per_token():
    config = model_config(model_params(**SMALL), vocab_size=256, max_len=32)
    n = 256 * 64 + 2 * (64 * 16 * (2 * 4 + 2 * 1) + 3 * 64 * 128)
    assert model_flops_per_token(config, 32) == 6 * n + 12 * 2 * 4 * 16 * 32
    # Gemma3-1b at 4096 tokens: 22 local layers attend to 512 tokens, 4 global ones (5, 11, 17, 23)
    # to all.
    big = _preset("gemma3-1b")
    attn = 12 * 4 * 256 * (22 * 512 + 4 * 4096)
    assert model_flops_per_token(big, 4096) == 6 * _matmul_params(big) + attn


@pytest.mark.parametrize(
    ("rows", "pieces", "ok"),
    [(256, 256, True), (262208, 262144, True), (256, 300, False), (262144, 512, False)],
)
def test_check_vocab(rows, pieces, ok):
    config = dataclasses.replace(_preset("gemma3-270m"), num_embed=rows)
    if ok:
        check_vocab(config, pieces)
    else:
        with pytest.raises(VocabMismatch, match=f"tokenizer has {pieces} pieces.*{rows} rows"):
            check_vocab(config, pieces)


def test_peak_flops_by_device_name():
    assert peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_bf16_flops("NVIDIA H200") == 989e12
    assert peak_bf16_flops("cpu") is None


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="checks the refusal on a CPU")
def test_gpu_bench_refuses_without_gpu():
    with pytest.raises(RuntimeError, match="needs a GPU"):
        gpu_bench()


def test_throughput_measurement_trains_on_cpu():
    config = model_config(model_params(**SMALL), vocab_size=256, max_len=32)
    row = measure_train_throughput(config, batch_size=2, seq_len=16, steps=2, warmup=1)
    assert row["params"] == count_params(_abstract(config))
    assert row["tokens_per_s"] > 0 and np.isfinite(row["final_loss"])
    assert row["model_flops_per_s"] == pytest.approx(
        row["tokens_per_s"] * model_flops_per_token(config, 16)
    )
