"""The model inputs Tunix's trainer feeds the model, built from a packed batch."""

from __future__ import annotations

import jax.numpy as jnp


def model_inputs(batch: dict) -> dict:
    """Tunix input function: causal attention within each packed example only."""
    seg = batch["segment_ids"]
    seq_len = seg.shape[-1]
    causal = jnp.tril(jnp.ones((seq_len, seq_len), dtype=jnp.bool_))
    same = (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] > 0)
    return {
        "input_tokens": batch["input_tokens"],
        "input_mask": batch["input_mask"],
        "positions": batch["positions"],
        "attention_mask": same & causal[None],
    }
