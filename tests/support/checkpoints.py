"""Checkpoint writers for the loader tests: Hugging Face safetensors and Kaggle's orbax layout."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from tunix.models.gemma3 import model as gemma3

from tunixrt_dvc.io import atomic_write_with
from tunixrt_dvc.model.config import ATTENTION_PATTERN, ModelConfig
from tunixrt_dvc.model.names import hf_state, upstream_state


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
    tensors = hf_state(nnx.state(model, nnx.Param).to_pure_dict(), config)
    tensors = {k: np.ascontiguousarray(jax.device_get(v)) for k, v in tensors.items()}
    dtype = str(next(iter(tensors.values())).dtype)
    atomic_write_with(
        path / "model.safetensors",
        lambda f: safetensors.numpy.save_file(tensors, str(f), metadata={"format": "pt"}),
    )
    text = json.dumps(_hf_config_json(config, dtype), indent=2, sort_keys=True) + "\n"
    atomic_write_with(path / "config.json", lambda f: f.write_text(text, encoding="utf-8"))


def save_checkpoint_orbax(model: gemma3.Gemma3, config: ModelConfig, path: str | Path) -> None:
    """Write `model` in the orbax layout of Google's Gemma checkpoints (as Kaggle ships them),
    which `tunix.models.gemma3.params.create_model_from_checkpoint` reads. `path` must not exist.

    Orbax records save times in its metadata files, so these bytes are not reproducible;
    the arrays are.
    """
    import orbax.checkpoint as ocp

    tree = upstream_state(nnx.state(model, nnx.Param).to_pure_dict(), config)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(Path(path).resolve(), tree)
    checkpointer.wait_until_finished()
