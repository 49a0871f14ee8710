"""A memory plan: what one training step needs per device, before renting the devices.

- Weights and optimizer state: each parameter's shard on one device, from Gemma3's own sharding
  annotations on the (fsdp, tp) mesh (AdamW keeps two moments of every trained parameter).
- Gradients: one per trained parameter, sharded as the parameter is.
- Activations: the step's forward and backward pass (the project's loss; full fine-tuning or
  LoRA) compiled for one device and its share of the batch (batch / fsdp rows), nothing
  allocated; XLA's memory analysis of the compiled computation gives what it keeps live while
  it computes (the gradients it returns are counted above). Splitting heads and features over
  tp shrinks that further: with tp > 1 the figure is an upper bound. The eval step's forward
  pass is compiled the same way (the trainer evaluates before it trains; see `host_memory`).
- Without compiling (`compile=False`), both figures are analytic upper bounds instead
  (`activation_bound`): free to compute, 1.3-5x XLA's figures on the shapes measured.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec
from tunix.models.gemma3 import model as gemma3

from tunixrt_dvc.model.config import ModelConfig, model_config
from tunixrt_dvc.model.lora import apply_lora
from tunixrt_dvc.params import LoraParams, MeshParams, Params
from tunixrt_dvc.registry import TINY
from tunixrt_dvc.sft.inputs import model_inputs
from tunixrt_dvc.sft.loss import make_loss_fn

GIB = 1 << 30
ADAM_MOMENTS = 2
# The analytic bounds' margin over their own formula (see `activation_bound`).
BOUND_MARGIN = 1.3


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
    eval_activation_bytes: float = 0.0  # the eval step's (forward pass) temporaries
    compiled: bool = True  # activations from XLA's analysis; False: analytic upper bounds

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
    train: bool = True,
) -> float:
    """Temporaries of the forward and backward pass (with `train=False`, of the forward pass
    alone: the eval step) compiled for one device and `rows` rows."""
    model = _abstract(config, lora)
    return _temps(model, rows, seq_len, lora is not None, compute_dtype, train=train)


def _temps(
    model: nnx.Module,
    rows: int,
    seq_len: int,
    lora: bool,
    compute_dtype: str | None,
    *,
    train: bool,
) -> float:
    wrt = nnx.LoRAParam if lora else nnx.Param
    graphdef, state = nnx.split(model)
    loss_fn = make_loss_fn(compute_dtype)
    batch = {
        k: jax.ShapeDtypeStruct((rows, seq_len), jnp.int32)
        for k in ("input_tokens", "input_mask", "positions", "segment_ids")
    }

    def step(state, batch):
        model = nnx.merge(graphdef, state)

        def loss(m):
            return loss_fn(m, **model_inputs(batch))

        if not train:
            return loss(model)
        return nnx.value_and_grad(loss, argnums=nnx.DiffState(0, wrt))(model)

    compiled = jax.jit(step).lower(state, batch).compile()
    return float(compiled.memory_analysis().temp_size_in_bytes)


def activation_bound(
    config: ModelConfig,
    *,
    rows: int,
    seq_len: int,
    params: int,
    trainable: int,
    compute_dtype: str | None,
) -> tuple[float, float]:
    """Upper bounds of the train and eval steps' temporaries, without compiling anything.

    The terms XLA keeps live: the weights cast to the compute dtype, float32 gradients of the
    trained parameters, the logits (tokens x vocabulary: in the compute dtype, upcast, their
    log-softmax and its gradient) and each layer's saved activations (attention scores are
    tokens x heads x seq_len), times `BOUND_MARGIN`. Against XLA's figures on 12 shapes (the
    tiny default to gemma3-1b, vocabularies of 512 to 262,144, 256 to 1024 tokens a row, LoRA
    and full fine-tuning) they were 1.26-2.9x (train) and 1.3-5.4x (eval) too high: safe to
    accept a run on, not to refuse one on.
    """
    c = jnp.dtype(compute_dtype or config.param_dtype).itemsize
    tokens = rows * seq_len
    d, f, h, kv, hd = (
        config.embed_dim,
        config.hidden_dim,
        config.num_heads,
        config.num_kv_heads,
        config.head_dim,
    )
    layer = 4 * (12 * d + 6 * f + 6 * h * hd + 4 * kv * hd + 6 * h * seq_len)
    train = params * c + trainable * 4 + tokens * config.num_embed * (2 * c + 12)
    train += tokens * config.num_layers * layer
    forward = 4 * (4 * d + 2 * f + 2 * h * hd + 3 * h * seq_len)
    evaluation = params * c + tokens * config.num_embed * (c + 8)
    evaluation += tokens * config.num_layers * forward
    return BOUND_MARGIN * train, BOUND_MARGIN * evaluation


def memory_plan(
    config: ModelConfig,
    mesh: MeshParams | None,
    *,
    batch_size: int,
    seq_len: int,
    lora: LoraParams | None = None,
    compute_dtype: str | None = "bfloat16",
    compile: bool = True,
) -> MemoryPlan:
    """The per-device bytes of one training step of `config` (see the module docs); with
    `compile=False` the activations are `activation_bound`'s, and nothing is compiled."""
    axes = {"fsdp": mesh.fsdp, "tp": mesh.tp} if mesh is not None else {"fsdp": 1, "tp": 1}
    model = _abstract(config, lora)
    params = nnx.state(model, nnx.Param)
    trainable = nnx.state(model, nnx.LoRAParam if lora is not None else nnx.Param)
    weights = _bytes(params, nnx.get_partition_spec(params), axes)
    gradients = _bytes(trainable, nnx.get_partition_spec(trainable), axes)
    rows = math.ceil(batch_size / axes["fsdp"])
    if compile:
        shape = (model, rows, seq_len, lora is not None, compute_dtype)
        activations = _temps(*shape, train=True)
        evaluation = _temps(*shape, train=False)
    else:
        activations, evaluation = activation_bound(
            config,
            rows=rows,
            seq_len=seq_len,
            params=_count(params),
            trainable=_count(trainable),
            compute_dtype=compute_dtype,
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
        eval_activation_bytes=evaluation,
        compiled=compile,
    )


def train_lora(params: Params) -> LoraParams | None:
    """The adapters `params` trains (rank 0 or null: none, full fine-tuning)."""
    lora = params.train.lora
    return lora if lora is not None and lora.rank > 0 else None


def train_config(params: Params, *, vocab_size: int | None = None) -> ModelConfig:
    """The model config the train stage builds from `params`.

    `vocab_size` is the tokenizer's (the train stage knows it); by default the tiny preset takes
    `format.vocab_size` (an upper bound of what the format stage trains) and the real presets
    their own. A checkpoint's embedding rows, when it has more (padding), count instead.
    """
    mp = params.model
    if vocab_size is None:
        vocab_size = params.format.vocab_size if mp.preset == TINY else 0
    config = model_config(mp, vocab_size=vocab_size, max_len=params.train.seq_len)
    config = dataclasses.replace(config, param_dtype=jnp.dtype(mp.dtype))
    rows = _checkpoint_rows(mp.checkpoint) if mp.checkpoint else None
    if rows is not None and rows != config.num_embed:
        config = dataclasses.replace(config, num_embed=rows)
    return config


def plan_for(params: Params, *, vocab_size: int | None = None, compile: bool = True) -> MemoryPlan:
    """The memory plan of the train stage with `params` (see `train_config`)."""
    return memory_plan(
        train_config(params, vocab_size=vocab_size),
        params.mesh,
        batch_size=params.train.batch_size,
        seq_len=params.train.seq_len,
        lora=train_lora(params),
        compute_dtype=params.train.compute_dtype,
        compile=compile,
    )


def _checkpoint_rows(path: str) -> int | None:
    from tunixrt_dvc.model.layout import checkpoint_num_embed

    try:
        return checkpoint_num_embed(path)
    except Exception:  # unreadable: loading it reports why, with the file and the parameter
        return None
