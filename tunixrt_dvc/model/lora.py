"""LoRA and QLoRA adapters on a Gemma3 model (qwix): apply them, read them out, merge them.

`apply_lora` returns a new model whose target modules carry `nnx.LoRAParam`s (A, B) beside their
frozen weights (quantized to nf4 or int8 for QLoRA); Tunix's trainer then updates the LoRA params
only. `merge` folds a trained adapter into a plain Gemma3 model of the base weights:
W + (alpha / rank) * A·B, with the layout of the einsum qwix computes the adapter with. `adapt`
and `Adapted.finish` wrap a training loop (SFT or RL) with all of that.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import qwix
from flax import nnx

from tunixrt_dvc.distributed import to_local
from tunixrt_dvc.model.config import AdapterCard
from tunixrt_dvc.params import LoraParams

# Gemma3 names its einsum weight `w` and its linears' `kernel`; qwix adds `<name>_lora_a/_b`.
_WEIGHTS = ("w", "kernel")
# nf4 quantizes in tiles along the contracting axes: 32 wide, or narrower where a dimension is
# (a tiny model's head_dim); int8 per channel.
_NF4_TILE = 32


def module_regex(targets: list[str]) -> str:
    """The qwix `module_path` regex for the target module names (any layer)."""
    return r".*/(" + "|".join(re.escape(t) for t in targets) + r")"


def apply_lora(model: nnx.Module, lora: LoraParams, *, seed: int) -> nnx.Module:
    """`model` with LoRA adapters on `lora.targets` (B starts at zero: the function is unchanged).

    With `lora.quantize`, the frozen target weights are stored quantized (QLoRA). qwix traces the
    model once with example inputs to find the target modules.
    """
    kwargs: dict[str, Any] = {"module_path": module_regex(lora.targets)}
    kwargs |= {"rank": lora.rank, "alpha": lora.alpha}
    if lora.quantize is not None:
        kwargs["weight_qtype"] = lora.quantize
        if lora.quantize == "nf4":
            c = model.config
            kwargs["tile_size"] = math.gcd(_NF4_TILE, c.embed_dim, c.head_dim, c.hidden_dim)
    provider = qwix.LoraProvider(**kwargs)
    return qwix.apply_lora_to_model(
        model, provider, rngs=nnx.Rngs(params=seed), **model.get_model_input()
    )


def _adapted(model: nnx.Module) -> Iterator[tuple[tuple, nnx.Module, str]]:
    """(path, module, weight name) of every module that carries an adapter."""
    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Module):
            for name in _WEIGHTS:
                if isinstance(getattr(node, f"{name}_lora_a", None), nnx.LoRAParam):
                    yield tuple(path), node, name


def adapter_state(model: nnx.Module) -> dict:
    """The LoRA params alone, as a pure dict (what an adapter checkpoint holds)."""
    return nnx.state(model, nnx.LoRAParam).to_pure_dict()


def has_adapters(model: nnx.Module) -> bool:
    return any(True for _ in _adapted(model))


def _delta(module: nnx.Module, name: str, scale: float) -> jax.Array:
    """(alpha / rank) * A·B in the layout of the module's weight."""
    a = to_local(getattr(module, f"{name}_lora_a")[...])
    b = to_local(getattr(module, f"{name}_lora_b")[...])
    if name == "w":  # an einsum: qwix's "lhs,a,b->out" beside the module's "lhs,w->out"
        _, a_str, b_str = getattr(module, f"{name}_lora_einsum_str").split("->")[0].split(",")
        w_str = module.einsum_str.split("->")[0].split(",")[1]
        delta = jnp.einsum(f"{a_str},{b_str}->{w_str}", a, b)
    else:  # a linear: kernel (in, out) = A (in, r) @ B (r, out)
        delta = a @ b
    return delta * scale


def _frozen(module: nnx.Module, name: str) -> jax.Array | None:
    """The weight a QLoRA module computes with (its quantized base, dequantized); None if the
    module's weight is not quantized."""
    value = getattr(module, name)
    if isinstance(value, nnx.Variable):
        value = value.get_value()
    qarray = getattr(value, "array", value)  # qwix wraps it with how it was quantized
    if not isinstance(qarray, qwix.QArray):
        return None
    return qwix.dequantize(qarray)


def merge(base: nnx.Module, adapted: nnx.Module, lora: LoraParams) -> nnx.Module:
    """`base` (a plain model of the base weights, changed in place and returned) with the
    adapters of `adapted` folded into its weights.

    For QLoRA the adapters were trained against the quantized base, so they are folded into
    that (dequantized): the merged model computes what was trained.
    """
    scale = lora.alpha / lora.rank
    found = 0
    for path, module, name in _adapted(adapted):
        target = base
        for key in path:
            target = target[key] if isinstance(key, int) else getattr(target, key)
        weight = getattr(target, name)
        frozen = _frozen(module, name)
        frozen = None if frozen is None else to_local(frozen)
        w = weight[...] if frozen is None else frozen.astype(weight.dtype)
        weight.set_value(
            (w + _delta(module, name, scale).astype(weight.dtype)).astype(weight.dtype)
        )
        found += 1
    if not found:
        raise ValueError("the model carries no LoRA adapters to merge")
    return base


def weights_sha256(model: nnx.Module) -> str:
    """One hash over a model's parameters (names, dtypes, shapes, bytes): the base an adapter
    was trained on, when it was drawn from a seed rather than read from files."""
    h = hashlib.sha256()
    flat = jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param).to_pure_dict())[0]
    for key, leaf in flat:
        arr = np.asarray(jax.device_get(leaf))
        h.update(jax.tree_util.keystr(key).encode() + f"{arr.dtype}{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Finished:
    """A trained model as a stage saves it: all its weights (`model`), or, with LoRA, the
    adapter alone (`adapter`, described by `card`; the base is not copied)."""

    model: nnx.Module | None
    adapter: dict | None
    card: AdapterCard | None

    @property
    def stored(self) -> str:
        """What the model directory stores (`model.config.STORED`)."""
        return "weights" if self.adapter is None else "adapter"


@dataclass(frozen=True)
class Adapted:
    """The model a loop trains: the model itself, or, with `lora`, adapters on its frozen base."""

    model: nnx.Module
    lora: LoraParams | None
    base_sha256: str | None  # with LoRA: the base the adapters are trained on

    def finish(
        self, trained: nnx.Module, *, merge_into: Callable[[], nnx.Module] | None = None
    ) -> Finished:
        """`trained` (this model after the loop) as a stage saves it: with LoRA, the adapter
        and its card, or, given `merge_into` (a fresh copy of the base), the adapters folded
        into it."""
        if self.lora is None:
            return Finished(model=trained, adapter=None, card=None)
        card = AdapterCard(**self.lora.model_dump(), base_sha256=self.base_sha256)
        if merge_into is not None:
            return Finished(model=merge(merge_into(), trained, self.lora), adapter=None, card=card)
        return Finished(model=None, adapter=adapter_state(trained), card=card)


def adapt(model: nnx.Module, lora: LoraParams | None, *, seed: int) -> Adapted:
    """`model` ready to train: unchanged without LoRA, else with adapters on its frozen weights."""
    if lora is None:
        return Adapted(model=model, lora=None, base_sha256=None)
    base_sha256 = weights_sha256(model)
    return Adapted(model=apply_lora(model, lora, seed=seed), lora=lora, base_sha256=base_sha256)
