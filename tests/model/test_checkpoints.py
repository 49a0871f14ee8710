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
from tunixrt_dvc.model.checkpoint import load_checkpoint
from tunixrt_dvc.model.config import ModelConfig, model_config
from tunixrt_dvc.model.init import random_model
from tunixrt_dvc.model.layout import CheckpointNotFound, UnknownLayout, detect_layout
from tunixrt_dvc.params import ModelParams

VOCAB, MAX_LEN = 256, 32


def _params(**kw) -> ModelParams:
    dims = dict(num_layers=2, embed_dim=64, hidden_dim=128, num_heads=4, head_dim=16)
    return model_params(**(dims | kw))


def _random_model(params: ModelParams, seed: int = 0):
    """Every parameter random (Tunix initialises MLPs and norms to zero, which would hide a
    swapped gate/up projection or a misplaced norm)."""
    model, config = build_model(params, vocab_size=VOCAB, max_len=MAX_LEN, seed=seed)
    return _randomize(model, seed), config


def _randomize(model, seed: int):
    rng = np.random.default_rng(seed)
    state = nnx.state(model, nnx.Param)
    nnx.update(
        model, jax.tree.map(lambda x: jnp.asarray(rng.normal(0, 0.5, x.shape), x.dtype), state)
    )
    return model


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
    with pytest.raises(CheckpointNotFound, match=f"{tmp_path / 'nope'}: model.checkpoint: no such"):
        load_checkpoint(tmp_path / "nope", saved[1], dtype="float32")


def test_unrecognized_layout(tmp_path, saved):
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    with pytest.raises(UnknownLayout, match="neither \\*.safetensors"):
        load_checkpoint(tmp_path, saved[1], dtype="float32")
    with pytest.raises(UnknownLayout, match="expected a directory"):
        load_checkpoint(tmp_path / "weights.bin", saved[1], dtype="float32")
    (tmp_path / "model.safetensors").write_bytes(b"\x10\0\0\0\0\0\0\0{not json")
    with pytest.raises(UnknownLayout, match="model.safetensors: <header>: not safetensors"):
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


# config.json as transformers 5 writes it (`rope_parameters` per layer type), and the values that
# tensor shapes cannot reveal: RoPE bases and scaling, the query scaling. Small models with a real
# preset's architecture: 6 layers, so that one is global (layer 5), as in Gemma3.


def _preset_shaped(factory: str, **dims) -> ModelConfig:
    """The preset's RoPE bases and scaling, window and query normalisation; small dimensions."""
    small = dict(num_layers=6, embed_dim=64, hidden_dim=128, num_heads=4, head_dim=16)
    return dataclasses.replace(
        getattr(ModelConfig, factory)(),
        **(small | dims),
        num_kv_heads=1,
        num_embed=VOCAB,
        param_dtype=jnp.float32,
    )


SHAPED = {
    # factory -> small dimensions; 27b scales queries by embed_dim // num_heads (96 // 4 = 24),
    # not by head_dim (16), so the two are told apart.
    "gemma3_1b_pt": {},
    "gemma3_4b_pt": {},
    "gemma3_27b_pt": {"embed_dim": 96},
}


@pytest.fixture(scope="module")
def shaped(tmp_path_factory):
    """factory -> (directory with `v4/` and `v5/` config.json forms of one model, config, model)."""
    made = {}

    def get(factory: str):
        if factory not in made:
            config = _preset_shaped(factory, **SHAPED[factory])
            model = _randomize(random_model(config, seed=1), seed=1)
            root = tmp_path_factory.mktemp(factory)
            save_checkpoint_safetensors(model, config, root / "v4")
            save_checkpoint_safetensors(model, config, root / "v5", transformers5=True)
            made[factory] = root, config, model
        return made[factory]

    return get


def _line(text: str, *keys: str) -> int:
    """The line of the last of `keys`, each looked for after the line of the one before."""
    lines, start = text.splitlines(), 0
    for key in keys:
        n = next(i for i in range(start, len(lines)) if f'"{key}"' in lines[i])
        start = n + 1
    return start


def _edited(src, dest, edit) -> str:
    """`src`'s checkpoint in `dest`, its config.json changed by `edit(cfg)`; the new text."""
    dest.mkdir(exist_ok=True)
    shutil.copy(src / "model.safetensors", dest)
    cfg = json.loads((src / "config.json").read_text())
    edit(cfg)
    text = json.dumps(cfg, indent=2, sort_keys=True) + "\n"
    (dest / "config.json").write_text(text)
    return text


def test_transformers5_config_json_form(saved, shaped, tmp_path):
    root, config, _ = saved
    model = load_checkpoint(root / "hf", config, dtype="float32")
    save_checkpoint_safetensors(model, config, tmp_path, transformers5=True)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert not {"rope_theta", "rope_local_base_freq", "rope_scaling", "torch_dtype"} & set(cfg)
    assert cfg["rope_parameters"] == {
        "full_attention": {"rope_type": "default", "rope_theta": 10000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
    }
    assert cfg["dtype"] == "float32"
    cfg = json.loads((shaped("gemma3_4b_pt")[0] / "v5" / "config.json").read_text())
    assert cfg["rope_parameters"] == {
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
    }


def test_transformers5_writer_matches_transformers(shaped):
    """transformers 5 (a test dependency) reads the v4 form into the same `rope_parameters` as
    the v5 writer writes."""
    import transformers

    root = shaped("gemma3_4b_pt")[0]
    v4, v5 = (json.loads((root / v / "config.json").read_text()) for v in ("v4", "v5"))
    drop = {"architectures", "model_type", "torch_dtype", "dtype"}
    got = transformers.Gemma3TextConfig(**{k: v for k, v in v4.items() if k not in drop})
    assert got.rope_parameters == v5["rope_parameters"]
    assert got.query_pre_attn_scalar == v5["query_pre_attn_scalar"]


def test_transformers5_config_round_trip(saved, tmp_path):
    """The tiny all-local model, from a config.json in transformers 5's form."""
    root, config, want = saved
    model = load_checkpoint(root / "hf", config, dtype="float32")
    save_checkpoint_safetensors(model, config, tmp_path, transformers5=True)
    np.testing.assert_array_equal(_logits(load_checkpoint(tmp_path, config, dtype="float32")), want)


@pytest.mark.parametrize("form", ["v4", "v5"])
@pytest.mark.parametrize(
    ("preset", "factory"),
    [("gemma3-1b", "gemma3_1b_pt"), ("gemma3-4b", "gemma3_4b_pt"), ("gemma3-27b", "gemma3_27b_pt")],
)
def test_preset_architecture_round_trip(shaped, monkeypatch, preset, factory, form):
    """A real preset's RoPE (4b and 27b: global layers scaled linearly by 8) and query scaling, in
    both config.json forms, through build_model: loads with identical logits."""
    root, config, model = shaped(factory)
    monkeypatch.setattr(ModelConfig, factory, staticmethod(lambda: config))
    params = model_params(preset=preset, checkpoint=str(root / form))
    loaded, got = build_model(params, vocab_size=VOCAB, max_len=MAX_LEN, seed=5)
    assert got == config
    np.testing.assert_array_equal(_logits(loaded), _logits(model))


def _set(*path, value):
    def edit(cfg):
        for key in path[:-1]:
            cfg = cfg[key]
        cfg[path[-1]] = value

    return edit


_LINEAR_8 = {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0}
_DEFAULT_1M = {"rope_type": "default", "rope_theta": 1000000.0}
_HEAD_DIM = " (head_dim: BY_ONE_OVER_SQRT_HEAD_DIM)"
_EMBED_DIV = " (embed_dim // num_heads: BY_ONE_OVER_SQRT_EMBED_DIM_DIV_NUM_HEADS)"


@pytest.mark.parametrize(
    ("factory", "form", "edit", "keys", "message", "at"),
    [
        pytest.param(
            "gemma3_1b_pt",
            "v5",
            _set("rope_parameters", "full_attention", "rope_theta", value=10000.0),
            ("rope_parameters", "full_attention", "rope_theta"),
            "checkpoint has 10000.0, the config has 1000000",
            None,
            id="v5-global-base",
        ),
        pytest.param(
            "gemma3_1b_pt",
            "v5",
            _set("rope_parameters", "sliding_attention", "rope_theta", value=1000000.0),
            ("rope_parameters", "sliding_attention", "rope_theta"),
            "checkpoint has 1000000.0, the config has 10000",
            None,
            id="v5-local-base",
        ),
        pytest.param(
            "gemma3_1b_pt",
            "v5",
            _set("rope_parameters", "full_attention", value=_LINEAR_8),
            ("rope_parameters", "full_attention", "factor"),
            "checkpoint has 8.0, the config has 1.0",
            None,
            id="v5-scaling-8-on-1b",
        ),
        pytest.param(
            "gemma3_1b_pt",
            "v5",
            _set("rope_parameters", "sliding_attention", value=_LINEAR_8 | {"rope_theta": 1e4}),
            ("rope_parameters", "sliding_attention", "factor"),
            "checkpoint has 8.0, the config has 1.0",
            None,
            id="v5-local-scaling",
        ),
        pytest.param(
            "gemma3_4b_pt",
            "v5",
            _set("rope_parameters", "full_attention", value=_DEFAULT_1M),
            ("rope_parameters", "full_attention", "factor"),
            "checkpoint has 1.0 (rope_type 'default'), the config has 8.0",
            ("rope_parameters", "full_attention", "rope_type"),  # no "factor" key: its rope_type
            id="v5-no-scaling-on-4b",
        ),
        pytest.param(
            "gemma3_1b_pt",
            "v5",
            _set("rope_parameters", "full_attention", "rope_type", value="yarn"),
            ("rope_parameters", "full_attention", "rope_type"),
            "checkpoint has 'yarn': Tunix's Gemma3 has only 'default' and 'linear'",
            None,
            id="v5-unsupported-rope-type",
        ),
        pytest.param(
            "gemma3_1b_pt",
            "v5",
            _set("query_pre_attn_scalar", value=256),
            ("query_pre_attn_scalar",),
            "checkpoint has 256, the config has 16" + _HEAD_DIM,
            None,
            id="v5-query-scalar",
        ),
        pytest.param(
            "gemma3_27b_pt",
            "v5",
            _set("query_pre_attn_scalar", value=16),
            ("query_pre_attn_scalar",),
            "checkpoint has 16, the config has 24" + _EMBED_DIV,
            None,
            id="v5-query-scalar-27b",
        ),
        pytest.param(
            "gemma3_1b_pt",
            "v4",
            _set("rope_theta", value=10000.0),
            ("rope_theta",),
            "checkpoint has 10000.0, the config has 1000000",
            None,
            id="v4-global-base",
        ),
        pytest.param(
            "gemma3_1b_pt",
            "v4",
            _set("rope_scaling", value={"factor": 8.0, "rope_type": "linear"}),
            ("rope_scaling", "factor"),
            "checkpoint has 8.0, the config has 1.0",
            None,
            id="v4-scaling-8-on-1b",
        ),
        pytest.param(
            "gemma3_4b_pt",
            "v4",
            _set("rope_scaling", value=None),
            ("rope_scaling", "factor"),
            "checkpoint has 1.0, the config has 8.0",
            ("rope_scaling",),  # null: the line of rope_scaling
            id="v4-no-scaling-on-4b",
        ),
        pytest.param(
            "gemma3_1b_pt",
            "v4",
            _set("query_pre_attn_scalar", value=256),
            ("query_pre_attn_scalar",),
            "checkpoint has 256, the config has 16" + _HEAD_DIM,
            None,
            id="v4-query-scalar",
        ),
        pytest.param(
            "gemma3_27b_pt",
            "v4",
            _set("query_pre_attn_scalar", value=16),
            ("query_pre_attn_scalar",),
            "checkpoint has 16, the config has 24" + _EMBED_DIV,
            None,
            id="v4-query-scalar-27b",
        ),
    ],
)
def test_config_json_value_mismatch_names_file_line_and_key(
    shaped, tmp_path, factory, form, edit, keys, message, at
):
    root, config, _ = shaped(factory)
    text = _edited(root / form, tmp_path, edit)
    with pytest.raises(C.ShapeMismatch) as e:
        load_checkpoint(tmp_path, config, dtype="float32")
    # The only problem: file:line: key: message, the line being the key's own.
    line = _line(text, *(at or keys))
    want = f"{tmp_path / 'config.json'}:{line}: {'.'.join(keys)}: {message}"
    assert [str(p) for p in e.value.problems] == [want]
    assert want in e.value.message


def test_multimodal_config_json_names_the_text_config_key(shaped, tmp_path):
    """The language model's config nested in `text_config`, after a `vision_config` that has keys
    of the same names: the line is the text config's."""
    root, config, _ = shaped("gemma3_1b_pt")
    shutil.copy(root / "v5" / "model.safetensors", tmp_path)
    text_config = json.loads((root / "v5" / "config.json").read_text())
    text_config["rope_parameters"]["full_attention"]["rope_theta"] = 10000.0
    vision = {"hidden_size": 1152, "num_hidden_layers": 27, "num_attention_heads": 16}
    vision["rope_parameters"] = {"full_attention": {"rope_theta": 10000.0}}
    cfg = {"model_type": "gemma3", "vision_config": vision, "text_config": text_config}
    text = json.dumps(cfg, indent=2) + "\n"
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(C.ShapeMismatch) as e:
        load_checkpoint(tmp_path, config, dtype="float32")
    line = _line(text, "text_config", "rope_parameters", "full_attention", "rope_theta")
    assert [str(p) for p in e.value.problems] == [
        f"{tmp_path / 'config.json'}:{line}: text_config.rope_parameters.full_attention.rope_theta:"
        " checkpoint has 10000.0, the config has 1000000"
    ]


@pytest.mark.parametrize("form", ["v4", "v5"])
def test_all_local_model_ignores_global_layer_values(saved, tmp_path, form):
    """The tiny 2-layer model has no global layer: the window, the global RoPE base and scaling in
    config.json are not architecture, in either form (the local base and the query scaling are)."""
    root, config, want = saved
    model = load_checkpoint(root / "hf", config, dtype="float32")
    save_checkpoint_safetensors(model, config, tmp_path / "src", transformers5=form == "v5")

    def edit(cfg):
        cfg["sliding_window"] = 512
        if form == "v5":
            cfg["rope_parameters"]["full_attention"] = _LINEAR_8
        else:
            cfg |= {"rope_theta": 1000000.0, "rope_scaling": {"factor": 8.0, "rope_type": "linear"}}

    _edited(tmp_path / "src", tmp_path / "edited", edit)
    loaded = load_checkpoint(tmp_path / "edited", config, dtype="float32")
    np.testing.assert_array_equal(_logits(loaded), want)
    key = (
        ("rope_parameters", "sliding_attention", "rope_theta")
        if form == "v5"
        else ("rope_local_base_freq",)
    )
    text = _edited(tmp_path / "src", tmp_path / "local", _set(*key, value=5000.0))
    with pytest.raises(
        C.ShapeMismatch, match=f"config.json:{_line(text, *key)}: {'.'.join(key)}: "
    ):
        load_checkpoint(tmp_path / "local", config, dtype="float32")


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
