"""A memory plan: what one training step needs per device, before renting the devices.

- Weights and optimizer state: each parameter's shard on one device, from Gemma3's own sharding
  annotations on the (fsdp, tp) mesh (AdamW keeps two moments of every trained parameter).
- Gradients: one per trained parameter, sharded as the parameter is.
- Activations: the step's forward and backward pass (the project's loss; full fine-tuning or
  LoRA) compiled for one device and its share of the batch (batch / fsdp rows), nothing
  allocated; XLA's memory analysis of the compiled computation gives what it keeps live while
  it computes (the gradients it returns are counted above). Splitting heads and features over
  tp shrinks that further: with tp > 1 the figure is an upper bound.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec
from tunix.models.gemma3 import model as gemma3

from tunixrt_dvc.model.config import ModelConfig
from tunixrt_dvc.model.lora import apply_lora
from tunixrt_dvc.params import LoraParams, MeshParams
from tunixrt_dvc.sft.inputs import model_inputs
from tunixrt_dvc.sft.loss import make_loss_fn

GIB = 1 << 30
ADAM_MOMENTS = 2


@dataclass(frozen=True)
class MemoryPlan:
    mesh: dict[str, int]
    batch_size: int
    seq_len: int
    params: int  # in the model
    trainable: int  # what the optimizer updates (all of them, or the LoRA adapters)
    weights_bytes: float  # per device, from here on
    optimizer_bytes: float
    gradient_bytes: float
    activation_bytes: float  # the compiled step's temporaries for one device's rows
    total_bytes: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def shard_shape(shape: tuple[int, ...], spec: PartitionSpec, axes: dict[str, int]):
    """The shape of one device's shard of an array sharded by `spec` over mesh `axes`."""
    out = []
    for i, dim in enumerate(shape):
        names = spec[i] if i < len(spec) else None
        names = () if names is None else (names,) if isinstance(names, str) else names
        out.append(math.ceil(dim / math.prod(axes.get(n, 1) for n in names)))
    return tuple(out)


def _bytes(tree: Any, specs: Any, axes: dict[str, int]) -> float:
    return float(
        sum(
            math.prod(shard_shape(x.shape, s, axes)) * jnp.dtype(x.dtype).itemsize
            for x, s in zip(jax.tree.leaves(tree), jax.tree.leaves(specs), strict=True)
        )
    )


def _count(tree: Any) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def _abstract(config: ModelConfig, lora: LoraParams | None) -> nnx.Module:
    def build() -> nnx.Module:
        model = gemma3.Gemma3(config, rngs=nnx.Rngs(params=0))
        return apply_lora(model, lora, seed=0) if lora is not None else model

    return nnx.eval_shape(build)


def activation_bytes(
    config: ModelConfig,
    *,
    rows: int,
    seq_len: int,
    lora: LoraParams | None,
    compute_dtype: str | None,
) -> float:
    """Temporaries of the forward and backward pass compiled for one device and `rows` rows."""
    wrt = nnx.LoRAParam if lora is not None else nnx.Param
    model = _abstract(config, lora)
    graphdef, state = nnx.split(model)
    loss_fn = make_loss_fn(compute_dtype)
    batch = {
        k: jax.ShapeDtypeStruct((rows, seq_len), jnp.int32)
        for k in ("input_tokens", "input_mask", "positions", "segment_ids")
    }

    def grads(state, batch):
        model = nnx.merge(graphdef, state)

        def loss(m):
            return loss_fn(m, **model_inputs(batch))

        return nnx.value_and_grad(loss, argnums=nnx.DiffState(0, wrt))(model)

    compiled = jax.jit(grads).lower(state, batch).compile()
    return float(compiled.memory_analysis().temp_size_in_bytes)


def memory_plan(
    config: ModelConfig,
    mesh: MeshParams | None,
    *,
    batch_size: int,
    seq_len: int,
    lora: LoraParams | None = None,
    compute_dtype: str | None = "bfloat16",
) -> MemoryPlan:
    """The per-device bytes of one training step of `config` (see the module docs)."""
    axes = {"fsdp": mesh.fsdp, "tp": mesh.tp} if mesh is not None else {"fsdp": 1, "tp": 1}
    model = _abstract(config, lora)
    params = nnx.state(model, nnx.Param)
    trainable = nnx.state(model, nnx.LoRAParam if lora is not None else nnx.Param)
    weights = _bytes(params, nnx.get_partition_spec(params), axes)
    gradients = _bytes(trainable, nnx.get_partition_spec(trainable), axes)
    rows = math.ceil(batch_size / axes["fsdp"])
    activations = activation_bytes(
        config, rows=rows, seq_len=seq_len, lora=lora, compute_dtype=compute_dtype
    )
    return MemoryPlan(
        mesh=axes,
        batch_size=batch_size,
        seq_len=seq_len,
        params=_count(params),
        trainable=_count(trainable),
        weights_bytes=weights,
        optimizer_bytes=ADAM_MOMENTS * gradients,
        gradient_bytes=gradients,
        activation_bytes=activations,
        total_bytes=weights + (1 + ADAM_MOMENTS) * gradients + activations,
    )
