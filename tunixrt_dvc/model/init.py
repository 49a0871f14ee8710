"""Random init of a Gemma3 model from a seed."""

from __future__ import annotations

import jax
from flax import nnx
from tunix.models.gemma3 import model as gemma3

from tunixrt_dvc.model.config import ModelConfig


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
