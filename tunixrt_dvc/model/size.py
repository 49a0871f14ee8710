"""Size and cost of a model: parameters and training FLOPs per token."""

from __future__ import annotations

import math

import jax
from flax import nnx
from tunix.models.gemma3 import model as gemma3

from tunixrt_dvc.model.config import ATTENTION_PATTERN, ModelConfig


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


def model_flops_per_token(config: ModelConfig, seq_len: int, *, frozen: bool = False) -> float:
    """Training FLOPs per token (forward + backward), PaLM's convention for MFU:
    6 * N (matmul parameters) + 12 * layers * heads * head_dim * attended length, where a
    sliding-window layer attends to at most its window. No discount for causal masking.

    `frozen` (LoRA): the weights get no gradients, so the backward pass computes the activations'
    gradients only: 4 * N (the adapters' own products are left out)."""
    span = 0
    for i in range(config.num_layers):
        local = ATTENTION_PATTERN[i % len(ATTENTION_PATTERN)] == gemma3.AttentionType.LOCAL_SLIDING
        span += min(seq_len, config.sliding_window_size) if local else seq_len
    weights = (4.0 if frozen else 6.0) * _matmul_params(config)
    return weights + 12.0 * config.num_heads * config.head_dim * span
