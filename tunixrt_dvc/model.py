"""Gemma3 models: presets, random init, and real checkpoints loaded from (and saved to) local paths.

Two on-disk layouts are read, both with Tunix's own loaders:
- Hugging Face safetensors (`*.safetensors`, usually with `config.json`), names such as
  `model.layers.0.self_attn.q_proj.weight`;
- an orbax checkpoint as Kaggle ships Gemma (`_METADATA`, `manifest.ocdbt`, ...), names such as
  `transformer/layer_0/attn/q_einsum` / `w`.
Before any weight is read, the names and shapes stored in the checkpoint are checked against the
model the config describes, so that a wrong preset or a truncated file is reported by name.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import click
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tunix.models.gemma3 import model as gemma3
from tunix.models.gemma3 import params as gemma3_params
from tunix.models.gemma3 import params_safetensors as gemma3_safetensors
from tunix.utils import torch_utils

from tunixrt_dvc.errors import InvalidInput, Problem
from tunixrt_dvc.params import ModelParams

ModelConfig = gemma3.ModelConfig
Layout = Literal["safetensors", "orbax"]

# Real sizes: Tunix's architectures. The -it and -pt variants share one architecture; the weights
# come from `model.checkpoint`. Keep in sync with `ModelPreset` in params.py (a test checks).
PRESETS: dict[str, Callable[[], ModelConfig] | None] = {
    "tiny": None,  # built from the params' dimensions
    "gemma3-270m": ModelConfig.gemma3_270m,
    "gemma3-1b": ModelConfig.gemma3_1b_pt,
    "gemma3-4b": ModelConfig.gemma3_4b_pt,
    "gemma3-12b": ModelConfig.gemma3_12b_pt,
    "gemma3-27b": ModelConfig.gemma3_27b_pt,
}

# An embedding table may have more rows than the tokenizer has pieces (Gemma3's Hugging Face
# multimodal checkpoints have 262208 rows for 262144 pieces); more than this many spare rows means
# the tokenizer does not belong to the checkpoint.
MAX_EMBEDDING_PADDING = 1024

# Gemma3 repeats 5 local (sliding-window) layers and 1 global one.
_PATTERN = gemma3.GEMMA3_ATTENTION_PATTERN
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class CheckpointError(InvalidInput):
    """A checkpoint that cannot be loaded into the configured model."""


class CheckpointNotFound(CheckpointError):
    pass


class UnknownLayout(CheckpointError):
    pass


class VocabMismatch(CheckpointError):
    pass


class ShapeMismatch(CheckpointError):
    pass


def _next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def model_config(params: ModelParams, *, vocab_size: int, max_len: int) -> ModelConfig:
    """The Gemma3 config of `params.preset`; `tiny` takes its dimensions from the params."""
    if params.preset not in PRESETS:
        raise click.ClickException(
            f"model.preset: unknown preset {params.preset!r}; known: {', '.join(PRESETS)}"
        )
    dtype = _DTYPES[params.dtype]
    factory = PRESETS[params.preset]
    if factory is not None:
        return dataclasses.replace(factory(), param_dtype=dtype)
    if params.num_layers >= len(_PATTERN):
        # A global layer would exist: its window is real architecture, keep Gemma3's ratio.
        window = max(512, _next_pow2(max_len))
    else:
        # Every layer is sliding-window (gotcha 6). The window must never bind, neither on training
        # sequences (<= max_len) nor on the sampler's cache (prompt <= max_len plus new tokens),
        # so that the tiny model is plainly causal: 4x the next power of two leaves room for
        # max_len new tokens and more.
        window = 4 * _next_pow2(max_len)
    return ModelConfig(
        num_layers=params.num_layers,
        num_embed=vocab_size,
        embed_dim=params.embed_dim,
        hidden_dim=params.hidden_dim,
        num_heads=params.num_heads,
        head_dim=params.head_dim,
        num_kv_heads=params.num_kv_heads,
        sliding_window_size=window,
        param_dtype=dtype,
    )


def build_model(
    params: ModelParams, *, vocab_size: int, max_len: int, seed: int
) -> tuple[gemma3.Gemma3, ModelConfig]:
    """The model to train: random init from `seed`, or the weights in `params.checkpoint`.

    `vocab_size` is the tokenizer's. A real checkpoint's embedding table may be padded beyond it
    (see `check_vocab`); the config then takes the checkpoint's row count.
    """
    config = model_config(params, vocab_size=vocab_size, max_len=max_len)
    if not params.checkpoint:
        return random_model(config, seed=seed), config
    rows = checkpoint_num_embed(params.checkpoint)
    if rows is not None and rows != config.num_embed:
        config = dataclasses.replace(config, num_embed=rows)
    check_vocab(config, vocab_size, source=params.checkpoint)
    return load_checkpoint(params.checkpoint, config, dtype=params.dtype), config


def random_model(config: ModelConfig, *, seed: int) -> gemma3.Gemma3:
    """A Gemma3 with every weight drawn from `seed`, ready to train from scratch.

    Tunix initialises the feed-forward kernels (gate, up, down) to zeros because it expects them
    from a checkpoint. All three at zero get zero gradients, so a model trained from that init
    never uses its MLPs. They get LeCun-normal kernels here instead, from a key of their own.
    """
    model = gemma3.Gemma3(config, rngs=nnx.Rngs(params=seed))
    init = nnx.initializers.lecun_normal()
    key = jax.random.fold_in(jax.random.key(seed), 0x6D6C70)  # "mlp"
    for i, layer in enumerate(model.layers):
        for j, name in enumerate(("gate_proj", "up_proj", "down_proj")):
            kernel = getattr(layer.mlp, name).kernel
            k = jax.random.fold_in(jax.random.fold_in(key, i), j)
            kernel.set_value(init(k, kernel.shape, kernel.dtype))
    return model


def check_vocab(config: ModelConfig, tokenizer_vocab_size: int, *, source: str = "model") -> None:
    """Refuse a tokenizer that does not belong to the model's embedding table (`source` names
    where the table came from, for the message).

    A mismatch is a tokenizer with more pieces than the table has rows (its last ids would index
    past the table, and JAX clamps out-of-range indices silently), or a table more than
    `MAX_EMBEDDING_PADDING` rows larger than the tokenizer (a different vocabulary, not padding).
    """
    rows = config.num_embed
    spare = rows - tokenizer_vocab_size
    if 0 <= spare <= MAX_EMBEDDING_PADDING:
        return
    why = (
        "ids past the table would be clamped silently"
        if spare < 0
        else f"more than {MAX_EMBEDDING_PADDING} spare rows: not this model's tokenizer"
    )
    raise VocabMismatch(
        [
            Problem(
                source,
                None,
                "vocab_size",
                f"tokenizer has {tokenizer_vocab_size} pieces, the model's embedding table has "
                f"{rows} rows ({why})",
            )
        ]
    )


# ---------------------------------------------------------------------------------------------
# On-disk names. Both exporters take the model's parameters as a pure dict and use jnp ops only,
# so `jax.eval_shape` over them gives the names and shapes a checkpoint must contain.


def _layer_params(state: dict, config: ModelConfig):
    for i in range(config.num_layers):
        yield i, state["layers"][i]


def _hf_state(state: dict, config: ModelConfig) -> dict[str, jax.Array]:
    """The parameters under Hugging Face Gemma3 names, in PyTorch's (out, in) orientation."""
    d = config.embed_dim
    out = {"model.embed_tokens.weight": state["embedder"]["input_embedding"]}
    for i, layer in _layer_params(state, config):
        p = f"model.layers.{i}."
        attn = layer["attn"]
        if "qkv_einsum" in attn:
            q, k, v = (attn["qkv_einsum"]["w"][j] for j in range(3))
        else:
            q = attn["q_einsum"]["w"]
            k, v = attn["kv_einsum"]["w"][0], attn["kv_einsum"]["w"][1]
        # (heads, embed, head_dim) -> (heads * head_dim, embed)
        for name, w in (("q_proj", q), ("k_proj", k), ("v_proj", v)):
            out[p + f"self_attn.{name}.weight"] = jnp.transpose(w, (0, 2, 1)).reshape(-1, d)
        out[p + "self_attn.o_proj.weight"] = attn["attn_vec_einsum"]["w"].reshape(-1, d).T
        out[p + "self_attn.q_norm.weight"] = attn["_query_norm"]["scale"]
        out[p + "self_attn.k_norm.weight"] = attn["_key_norm"]["scale"]
        for name in ("gate_proj", "up_proj", "down_proj"):
            out[p + f"mlp.{name}.weight"] = layer["mlp"][name]["kernel"].T
        out[p + "input_layernorm.weight"] = layer["pre_attention_norm"]["scale"]
        out[p + "post_attention_layernorm.weight"] = layer["post_attention_norm"]["scale"]
        out[p + "pre_feedforward_layernorm.weight"] = layer["pre_ffw_norm"]["scale"]
        out[p + "post_feedforward_layernorm.weight"] = layer["post_ffw_norm"]["scale"]
    out["model.norm.weight"] = state["final_norm"]["scale"]
    return out


def _upstream_state(state: dict, config: ModelConfig) -> dict[str, dict[str, jax.Array]]:
    """The parameters under the names of Google's Gemma checkpoints (Kaggle's orbax layout)."""
    out = {
        "transformer/embedder": {"input_embedding": state["embedder"]["input_embedding"]},
        "transformer/final_norm": {"scale": state["final_norm"]["scale"]},
    }
    for i, layer in _layer_params(state, config):
        p = f"transformer/layer_{i}/"
        for name, module in layer["attn"].items():
            out[p + f"attn/{name}"] = dict(module)  # q/kv/qkv/attn_vec einsums, q/k norms
        mlp = layer["mlp"]
        gating = jnp.stack([mlp["gate_proj"]["kernel"].T, mlp["up_proj"]["kernel"].T])
        out[p + "mlp/gating_einsum"] = {"w": gating}
        out[p + "mlp/linear"] = {"w": mlp["down_proj"]["kernel"]}
        for name in ("pre_attention_norm", "post_attention_norm", "pre_ffw_norm", "post_ffw_norm"):
            out[p + name] = {"scale": layer[name]["scale"]}
    return out


def _abstract_state(config: ModelConfig) -> dict:
    model = nnx.eval_shape(lambda: gemma3.Gemma3(config, rngs=nnx.Rngs(params=0)))
    return nnx.state(model, nnx.Param).to_pure_dict()


def _expected_hf(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    shapes = jax.eval_shape(lambda s: _hf_state(s, config), _abstract_state(config))
    return {k: tuple(v.shape) for k, v in shapes.items()}


def _expected_upstream(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    shapes = jax.eval_shape(lambda s: _upstream_state(s, config), _abstract_state(config))
    return {f"{m}.{p}": tuple(v.shape) for m, params in shapes.items() for p, v in params.items()}


# ---------------------------------------------------------------------------------------------
# Reading checkpoints.

_ORBAX_MARKERS = ("_METADATA", "_CHECKPOINT_METADATA", "manifest.ocdbt")


def _is_orbax(path: Path) -> bool:
    return path.is_dir() and any((path / m).exists() for m in _ORBAX_MARKERS)


def detect_layout(path: str | Path) -> tuple[Layout, Path]:
    """Which layout a local checkpoint directory holds, and the directory to read.

    Kaggle's download puts the orbax checkpoint one level down, beside `tokenizer.model`:
    a single orbax subdirectory is followed.
    """
    path = Path(path)

    def problem(message: str) -> list[Problem]:
        return [Problem(str(path), None, "model.checkpoint", message)]

    if not path.exists():
        raise CheckpointNotFound(problem("no such directory"))
    if not path.is_dir():
        raise UnknownLayout(problem("expected a directory, found a file"))
    if any(path.glob("*.safetensors")):
        return "safetensors", path
    if _is_orbax(path):
        return "orbax", path
    subdirs = [p for p in sorted(path.iterdir()) if _is_orbax(p)]
    if len(subdirs) == 1:
        return "orbax", subdirs[0]
    msg = (
        "several orbax checkpoints inside: " + ", ".join(p.name for p in subdirs)
        if subdirs
        else "neither *.safetensors (Hugging Face) nor an orbax checkpoint (_METADATA, "
        "manifest.ocdbt; as Kaggle ships Gemma) found"
    )
    raise UnknownLayout(problem(msg))


def _safetensors_header(file: Path) -> dict[str, dict]:
    """Tensor name -> {dtype, shape} from a safetensors header, without reading any data."""
    try:
        with open(file, "rb") as f:
            (n,) = np.frombuffer(f.read(8), dtype="<u8")
            header = json.loads(f.read(int(min(n, 100_000_000))))
        header.pop("__metadata__", None)
        if not all(isinstance(v, dict) and {"dtype", "shape"} <= v.keys() for v in header.values()):
            raise ValueError("tensor entries without dtype and shape")
    except (OSError, ValueError, AttributeError) as e:  # JSONDecodeError is a ValueError
        raise UnknownLayout([Problem(str(file), None, "<header>", f"not safetensors: {e}")]) from e
    return header


def _hf_shapes(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str], set[str]]:
    """Names (without a `language_model.` prefix) -> shape and -> file; dtypes per file."""
    shapes, files, mixed = {}, {}, set()
    for file in sorted(path.glob("*.safetensors")):
        header = _safetensors_header(file)
        if len({v["dtype"] for v in header.values()}) > 1:
            mixed.add(file.name)
        for name, meta in header.items():
            name = name.removeprefix("language_model.")
            shapes[name], files[name] = tuple(meta["shape"]), file.name
    return shapes, files, mixed


def _orbax_shapes(path: Path) -> dict[str, tuple[int, ...]] | None:
    """`module.param` -> shape from the checkpoint's metadata; None if it has none to read."""
    import orbax.checkpoint as ocp

    try:
        meta = ocp.StandardCheckpointer().metadata(path)
    except Exception:  # an older orbax format: the shapes are checked after loading instead
        return None
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    shapes = {}
    for module, params in tree.items():
        if isinstance(params, dict):
            for name, leaf in params.items():
                if hasattr(leaf, "shape"):
                    shapes[f"{module}.{name}"] = tuple(leaf.shape)
    return shapes


def checkpoint_num_embed(path: str | Path) -> int | None:
    """Rows of the embedding table stored in a checkpoint (None if it cannot be told)."""
    layout, where = detect_layout(path)
    if layout == "safetensors":
        shape = _hf_shapes(where)[0].get("model.embed_tokens.weight")
    else:
        shape = (_orbax_shapes(where) or {}).get("transformer/embedder.input_embedding")
    return shape[0] if shape else None


def _compare(
    found: dict[str, tuple[int, ...]],
    expected: dict[str, tuple[int, ...]],
    *,
    where: Callable[[str], str],
    is_text: Callable[[str], bool],
) -> list[Problem]:
    """Missing, misshapen and unexpected text-model parameters, each named."""
    problems = []
    for name, shape in expected.items():
        if name not in found:
            problems.append(Problem(where(name), None, name, f"missing (expected shape {shape})"))
        elif found[name] != shape:
            problems.append(
                Problem(where(name), None, name, f"expected shape {shape}, found {found[name]}")
            )
    for name in sorted(set(found) - set(expected)):
        if is_text(name):
            problems.append(
                Problem(where(name), None, name, "not in the configured model (a deeper model?)")
            )
    return problems


def _hf_unused(name: str, config: ModelConfig) -> bool:
    """Names Tunix's loader deliberately skips (rotary caches, a tied lm_head, biases)."""
    try:
        key, _ = torch_utils.torch_key_to_jax_key(
            gemma3_safetensors._get_key_and_transform_mapping(config), name
        )
    except ValueError:
        return False
    return key.startswith("unused.")


def _config_json_problems(file: Path, config: ModelConfig) -> list[Problem]:
    """Architecture facts in config.json that tensor shapes cannot reveal (or reveal late)."""
    try:
        text = file.read_text(encoding="utf-8")
        cfg = json.loads(text)
    except (OSError, json.JSONDecodeError) as e:
        return [Problem(str(file), getattr(e, "lineno", None), "<json>", str(e))]
    cfg = cfg.get("text_config", cfg)  # multimodal checkpoints nest the language model's config
    checks = [
        ("num_hidden_layers", config.num_layers),
        ("hidden_size", config.embed_dim),
        ("intermediate_size", config.hidden_dim),
        ("num_attention_heads", config.num_heads),
        ("num_key_value_heads", config.num_kv_heads),
        ("head_dim", config.head_dim),
        ("rope_local_base_freq", config.local_base_frequency),
    ]
    if config.num_layers >= len(_PATTERN):
        # Only where global layers exist: an all-local tiny model's window is set never to bind,
        # so its value is not architecture.
        checks += [
            ("sliding_window", config.sliding_window_size),
            ("rope_theta", config.global_base_frequency),
        ]
    have = dict(cfg)
    if "rope_scaling" in cfg and config.num_layers >= len(_PATTERN):
        have["rope_scaling.factor"] = (cfg["rope_scaling"] or {}).get("factor", 1.0)
        checks.append(("rope_scaling.factor", config.global_scale_factor))
    lines = text.splitlines()
    problems = []
    for key, want in checks:
        if key in have and have[key] != want:
            quoted = '"' + key.split(".")[0] + '"'
            line = next((n for n, s in enumerate(lines, 1) if quoted in s), None)
            problems.append(
                Problem(str(file), line, key, f"checkpoint has {have[key]}, the config has {want}")
            )
    return problems


def _check_hf(path: Path, config: ModelConfig) -> bool:
    """Raise on any mismatch; return whether Tunix's fast loader can read the files."""
    found, files, mixed = _hf_shapes(path)
    problems = []
    if (path / "config.json").exists():
        problems += _config_json_problems(path / "config.json", config)

    def is_text(name: str) -> bool:
        return name.startswith("model.") and not _hf_unused(name, config)

    problems += _compare(
        found,
        _expected_hf(config),
        where=lambda n: str(path / files.get(n, "*.safetensors")),
        is_text=is_text,
    )
    if problems:
        raise ShapeMismatch(problems)
    # Tunix's optimized loader reads a whole file as the dtype of its first tensor.
    return not mixed


def _check_orbax(path: Path, config: ModelConfig) -> None:
    found = _orbax_shapes(path)
    if found is None:
        return
    problems = _compare(
        found,
        _expected_upstream(config),
        where=lambda n: str(path),
        is_text=lambda n: n.startswith("transformer/layer_") or n.startswith("transformer/final"),
    )
    if problems:
        raise ShapeMismatch(problems)


def _check_loaded(model: gemma3.Gemma3, config: ModelConfig, path: Path) -> None:
    """After loading: every parameter holds an array of the configured shape."""
    expected = jax.tree_util.tree_flatten_with_path(_abstract_state(config))[0]
    loaded = dict(
        jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param).to_pure_dict())[0]
    )
    problems = []
    for key, want in expected:
        got = loaded.get(key)
        name = ".".join(str(getattr(k, "key", k)) for k in key)
        if not isinstance(got, jax.Array):
            problems.append(Problem(str(path), None, name, "missing"))
        elif got.shape != want.shape:
            problems.append(
                Problem(str(path), None, name, f"expected shape {want.shape}, found {got.shape}")
            )
    if problems:
        raise ShapeMismatch(problems)


def load_checkpoint(path: str | Path, config: ModelConfig, *, dtype: Any) -> gemma3.Gemma3:
    """A Gemma3 model with the weights of a local checkpoint directory, cast to `dtype`.

    Nothing is downloaded. Raises `CheckpointError` (a click exception naming the file and the
    parameter) for a missing path, an unrecognized layout or a parameter that does not fit.
    """
    layout, where = detect_layout(path)
    dtype = jnp.dtype(_DTYPES.get(dtype, dtype))
    config = dataclasses.replace(config, param_dtype=dtype)
    if layout == "safetensors":
        fast = _check_hf(where, config)
        model = gemma3_safetensors.create_model_from_safe_tensors(
            str(where), config, dtype=dtype, mode="optimized" if fast else "original"
        )
    else:
        _check_orbax(where, config)
        model = gemma3_params.create_model_from_checkpoint(
            str(where.resolve()), config, dtype=dtype
        )
    _check_loaded(model, config, where)
    return model


# ---------------------------------------------------------------------------------------------
# Writing checkpoints.


def _hf_config_json(config: ModelConfig, dtype: str) -> dict:
    """A Gemma3 text config.json (transformers' Gemma3TextConfig fields) for `config`."""
    q_scalar = (
        config.embed_dim // config.num_heads
        if config.query_pre_attn_norm
        == gemma3.QueryPreAttentionNormalisation.BY_ONE_OVER_SQRT_EMBED_DIM_DIV_NUM_HEADS
        else config.head_dim
    )
    kinds = {
        gemma3.AttentionType.LOCAL_SLIDING: "sliding_attention",
        gemma3.AttentionType.GLOBAL: "full_attention",
    }
    scaling = config.global_scale_factor
    return {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "vocab_size": config.num_embed,
        "hidden_size": config.embed_dim,
        "intermediate_size": config.hidden_dim,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "query_pre_attn_scalar": q_scalar,
        "sliding_window": config.sliding_window_size,
        "layer_types": [kinds[_PATTERN[i % len(_PATTERN)]] for i in range(config.num_layers)],
        "rope_theta": config.global_base_frequency,
        "rope_local_base_freq": config.local_base_frequency,
        "rope_scaling": None if scaling == 1.0 else {"factor": scaling, "rope_type": "linear"},
        "hidden_activation": "gelu_pytorch_tanh",
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "bos_token_id": 2,
        "torch_dtype": dtype,
    }


def _write_atomic(target: Path, write: Callable[[Path], None]) -> None:
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint_safetensors(
    model: gemma3.Gemma3, config: ModelConfig, path: str | Path
) -> None:
    """Write `model` as a Hugging Face Gemma3 checkpoint: `model.safetensors` + `config.json`.

    Byte-identical for identical weights; each file is replaced atomically.
    """
    import safetensors.numpy

    if config.vision_config is not None:
        raise ValueError("only text-only Gemma3 models can be saved")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = _hf_state(nnx.state(model, nnx.Param).to_pure_dict(), config)
    tensors = {k: np.ascontiguousarray(jax.device_get(v)) for k, v in tensors.items()}
    dtype = str(next(iter(tensors.values())).dtype)
    _write_atomic(
        path / "model.safetensors",
        lambda f: safetensors.numpy.save_file(tensors, str(f), metadata={"format": "pt"}),
    )
    text = json.dumps(_hf_config_json(config, dtype), indent=2, sort_keys=True) + "\n"
    _write_atomic(path / "config.json", lambda f: f.write_text(text, encoding="utf-8"))


def save_checkpoint_orbax(model: gemma3.Gemma3, config: ModelConfig, path: str | Path) -> None:
    """Write `model` in the orbax layout of Google's Gemma checkpoints (as Kaggle ships them),
    which `tunix.models.gemma3.params.create_model_from_checkpoint` reads. `path` must not exist.

    Orbax records save times in its metadata files, so these bytes are not reproducible;
    the arrays are.
    """
    import orbax.checkpoint as ocp

    tree = _upstream_state(nnx.state(model, nnx.Param).to_pure_dict(), config)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(Path(path).resolve(), tree)
    checkpointer.wait_until_finished()


# ---------------------------------------------------------------------------------------------
# Size and cost.


def count_params(model: nnx.Module) -> int:
    """Number of parameters (works on abstract models from `nnx.eval_shape` too)."""
    leaves = jax.tree_util.tree_leaves(nnx.state(model, nnx.Param))
    return sum(math.prod(x.shape) for x in leaves)


def _matmul_params(config: ModelConfig) -> int:
    """Parameters used in matrix products per token: the blocks plus the tied embedding once,
    as the output projection (the input lookup is a gather, not a product)."""
    d, h = config.embed_dim, config.head_dim
    attn = d * h * (2 * config.num_heads + 2 * config.num_kv_heads)
    return config.num_embed * d + config.num_layers * (attn + 3 * d * config.hidden_dim)


def model_flops_per_token(config: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward), PaLM's convention for MFU:
    6 * N (matmul parameters) + 12 * layers * heads * head_dim * attended length, where a
    sliding-window layer attends to at most its window. No discount for causal masking."""
    span = 0
    for i in range(config.num_layers):
        local = _PATTERN[i % len(_PATTERN)] == gemma3.AttentionType.LOCAL_SLIDING
        span += min(seq_len, config.sliding_window_size) if local else seq_len
    return 6.0 * _matmul_params(config) + 12.0 * config.num_heads * config.head_dim * span


# Dense bf16 peak of one GPU (NVIDIA data sheets), by a substring of jax's `device_kind`; the more
# specific names first.
PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H200 NVL", 835e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("A100", 312e12),
)


def peak_bf16_flops(device_kind: str) -> float | None:
    for name, flops in PEAK_BF16_FLOPS:
        if name in device_kind:
            return flops
    return None


def measure_train_throughput(
    config: ModelConfig,
    *,
    batch_size: int,
    seq_len: int,
    steps: int,
    warmup: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """Full fine-tuning (AdamW, every parameter) of a randomly initialised model on random
    tokens: a jitted train step with donated buffers, timed after `warmup` compiled steps."""
    import optax
    from tqdm import tqdm

    model = random_model(config, seed=seed)
    n_params = count_params(model)
    graphdef, params = nnx.split(model, nnx.Param)
    tx = optax.adamw(1e-5, weight_decay=0.01)
    opt_state = tx.init(params)
    tokens = jax.random.randint(
        jax.random.key(seed), (batch_size, seq_len + 1), 3, config.num_embed, dtype=jnp.int32
    )
    positions = jnp.broadcast_to(jnp.arange(seq_len), (batch_size, seq_len))
    mask = jnp.broadcast_to(
        jnp.tril(jnp.ones((seq_len, seq_len), bool)), (batch_size,) + (seq_len,) * 2
    )

    def loss_fn(params):
        logits, _ = nnx.merge(graphdef, params)(tokens[:, :-1], positions, None, mask)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32))
        return -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1).mean()

    def step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    step = jax.jit(step, donate_argnums=(0, 1))
    for _ in range(warmup):
        params, opt_state, loss = step(params, opt_state)
    jax.block_until_ready(loss)
    start = time.perf_counter()
    for _ in tqdm(range(steps), desc=f"bench {n_params / 1e6:.0f}M", disable=None):
        params, opt_state, loss = step(params, opt_state)
    jax.block_until_ready(loss)
    seconds = time.perf_counter() - start
    tokens_per_s = batch_size * seq_len * steps / seconds
    return {
        "params": n_params,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "steps": steps,
        "seconds": seconds,
        "tokens_per_s": tokens_per_s,
        "model_flops_per_s": tokens_per_s * model_flops_per_token(config, seq_len),
        "final_loss": float(loss),
    }


def gpu_bench(
    *,
    presets: tuple[str, ...] = ("gemma3-270m", "gemma3-1b"),
    batch_size: int = 8,
    seq_len: int = 1024,
    steps: int = 20,
) -> list[dict[str, Any]]:
    """Gemma3 full fine-tuning in bf16 on one GPU: tokens/s and MFU (model FLOPs per second
    over the device's dense bf16 peak). Refuses to run without a GPU."""
    if jax.default_backend() != "gpu":
        raise click.ClickException(f"gpu_bench needs a GPU (jax backend: {jax.default_backend()})")
    kind = jax.devices()[0].device_kind
    peak = peak_bf16_flops(kind)
    rows = []
    for name in presets:
        if PRESETS.get(name) is None:
            raise click.ClickException(f"gpu_bench: {name!r} is not a real-size preset")
        config = dataclasses.replace(PRESETS[name](), param_dtype=jnp.bfloat16)
        row = measure_train_throughput(config, batch_size=batch_size, seq_len=seq_len, steps=steps)
        row |= {
            "preset": name,
            "device": kind,
            "peak_bf16_flops": peak,
            "mfu": row["model_flops_per_s"] / peak if peak else None,
        }
        rows.append(row)
    return rows
