"""Exporting a model as a Hugging Face Gemma3 checkpoint (safetensors + config.json)."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from tunix.models.gemma3 import model as gemma3

from tunixrt_dvc.distributed import to_host
from tunixrt_dvc.io import atomic_write, atomic_write_with, json_text
from tunixrt_dvc.model.config import ATTENTION_PATTERN, ModelConfig
from tunixrt_dvc.model.names import hf_state


def hf_config_json(config: ModelConfig, dtype: str, *, transformers5: bool = False) -> dict:
    """A Gemma3 text config.json (transformers' Gemma3TextConfig fields) for `config`.

    As transformers 4 writes it (`rope_theta`, `rope_local_base_freq`, `rope_scaling`,
    `torch_dtype`), or with `transformers5` as version 5 does (`rope_parameters` per layer type,
    `dtype`; see `Gemma3TextConfig.convert_rope_params_to_dict` in transformers 5).
    """
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
    cfg = {
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
        "layer_types": [
            kinds[ATTENTION_PATTERN[i % len(ATTENTION_PATTERN)]] for i in range(config.num_layers)
        ],
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
    if transformers5:
        for key in ("rope_theta", "rope_local_base_freq", "rope_scaling", "torch_dtype"):
            del cfg[key]

        def rope(base: int, factor: float) -> dict:
            if factor == 1.0:
                return {"rope_type": "default", "rope_theta": float(base)}
            return {"rope_type": "linear", "factor": factor, "rope_theta": float(base)}

        cfg["rope_parameters"] = {
            "full_attention": rope(config.global_base_frequency, scaling),
            "sliding_attention": rope(config.local_base_frequency, config.local_scale_factor),
        }
        cfg["dtype"] = dtype
    return cfg


def _shards(tensors: dict[str, np.ndarray], max_bytes: int | None) -> list[dict[str, np.ndarray]]:
    """Tensors in name order, cut into groups of at most `max_bytes` (a bigger tensor alone)."""
    groups: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name in sorted(tensors):
        n = tensors[name].nbytes
        if max_bytes is not None and groups[-1] and size + n > max_bytes:
            groups.append({})
            size = 0
        groups[-1][name] = tensors[name]
        size += n
    return groups


def export_safetensors(
    model: gemma3.Gemma3,
    config: ModelConfig,
    path: str | Path,
    *,
    max_shard_bytes: int | None = None,
    transformers5: bool = False,
) -> list[Path]:
    """Write `model` as a Hugging Face Gemma3 checkpoint that transformers loads
    (`Gemma3ForCausalLM.from_pretrained`): `config.json` (transformers 4's form, or 5's with
    `transformers5`) and the weights, in `model.safetensors` or, when they exceed
    `max_shard_bytes`, in `model-0000K-of-0000N.safetensors` with `model.safetensors.index.json`.

    Byte-identical for identical weights; every file is replaced atomically. Returns the
    weight files.
    """
    import safetensors.numpy

    if config.vision_config is not None:
        raise ValueError("only text-only Gemma3 models can be exported")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = jax.tree.map(to_host, nnx.state(model, nnx.Param).to_pure_dict())
    tensors = {k: np.ascontiguousarray(v) for k, v in hf_state(state, config).items()}
    dtype = str(next(iter(tensors.values())).dtype)
    groups = _shards(tensors, max_shard_bytes)
    names = (
        ["model.safetensors"]
        if len(groups) == 1
        else [f"model-{k:05d}-of-{len(groups):05d}.safetensors" for k in range(1, len(groups) + 1)]
    )
    for old in path.glob("model*.safetensors*"):  # another export's shards would be read too
        if old.name not in names:
            old.unlink()
    for name, group in zip(names, groups, strict=True):
        atomic_write_with(
            path / name,
            lambda f, g=group: safetensors.numpy.save_file(g, str(f), metadata={"format": "pt"}),
        )
    if len(groups) > 1:
        index = {
            "metadata": {"total_size": sum(t.nbytes for t in tensors.values())},
            "weight_map": {t: n for n, g in zip(names, groups, strict=True) for t in g},
        }
        atomic_write(path / "model.safetensors.index.json", json_text(index))
    cfg = hf_config_json(config, dtype, transformers5=transformers5)
    atomic_write(path / "config.json", json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return [path / n for n in names]
