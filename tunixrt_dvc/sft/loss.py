"""The completion-only loss, with optional mixed precision.

Tunix's own loss (`peft_trainer._default_loss_fn`) is private and its return type changes in
newer releases, so the loss is ours: the same formula (the mean negative log-likelihood of the
target tokens where `input_mask[:, 1:]` is 1), with the log-softmax in float32 and the targets
gathered rather than one-hot encoded (3% faster per step here).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx


def _castable(leaf: object) -> bool:
    """A plain floating-point array: quantized weights (integer values with scales) are not."""
    return isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jnp.floating)


def cast_params(state: nnx.State, dtype: jnp.dtype) -> nnx.State:
    """The floating-point arrays of `state` in `dtype`; everything else (quantized) as it is."""
    return jax.tree.map(
        lambda w: w.astype(dtype) if _castable(w) else w,
        state,
        # A quantized array (qwix's QArray) is a pytree of its values and scales: keep it whole.
        is_leaf=lambda x: hasattr(x, "qvalue"),
    )


def token_nll(logits: jax.Array, input_tokens: jax.Array, input_mask: jax.Array) -> jax.Array:
    """Mean negative log-likelihood of each next token where the mask (shifted by one) is 1."""
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32))
    target = jnp.take_along_axis(logp, input_tokens[:, 1:, None], axis=-1)[..., 0]
    mask = input_mask[:, 1:].astype(jnp.float32)
    return -jnp.sum(target * mask) / (jnp.sum(mask) + 1e-8)


def make_loss_fn(compute_dtype: str | None = None) -> Callable[..., jax.Array]:
    """A Tunix loss function (`PeftTrainer.with_loss_fn`).

    With `compute_dtype` set, the forward and backward passes run on a copy of the weights cast
    to it while the optimizer keeps the weights in their own dtype (float32 master weights,
    bfloat16 matmuls).
    """
    dtype = None if compute_dtype is None else jnp.dtype(compute_dtype)

    # Named arguments: nnx.value_and_grad maps keyword arguments to positions by name.
    def loss_fn(model, input_tokens, input_mask, positions, attention_mask):
        if dtype is not None:
            graphdef, weights, rest = nnx.split(model, nnx.Param, ...)
            model = nnx.merge(graphdef, cast_params(weights, dtype), rest)
        logits, _ = model(input_tokens, positions, None, attention_mask)
        return token_nll(logits, input_tokens, input_mask)

    return loss_fn
