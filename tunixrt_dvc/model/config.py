"""Model configs: the Gemma3 architecture a preset and the params resolve to, and its JSON form.

A trained model directory carries its config (`ModelCard`), so later stages build the model from
the directory instead of from the params that made it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal

import jax.numpy as jnp
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tunix.models.gemma3 import model as gemma3

from tunixrt_dvc.errors import InvalidInput, problems_from_validation
from tunixrt_dvc.io import read_json_object
from tunixrt_dvc.params import ModelParams
from tunixrt_dvc.registry import DTYPES, LORA_TARGETS, PRESETS, QUANTIZATIONS, TINY

ModelConfig = gemma3.ModelConfig
# Gemma3 repeats 5 local (sliding-window) layers and 1 global one.
ATTENTION_PATTERN = gemma3.GEMMA3_ATTENTION_PATTERN


def _next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def model_config(params: ModelParams, *, vocab_size: int, max_len: int) -> ModelConfig:
    """The Gemma3 config of `params.preset`; `tiny` takes its dimensions from the params."""
    dtype = jnp.dtype(params.dtype)
    factory = PRESETS[params.preset]
    if factory is not None:
        return dataclasses.replace(getattr(ModelConfig, factory)(), param_dtype=dtype)
    if params.num_layers >= len(ATTENTION_PATTERN):
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


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Architecture(_Frozen):
    """The fields of Tunix's Gemma3 `ModelConfig` that define the weights and the function."""

    num_layers: Annotated[int, Field(ge=1)]
    num_embed: Annotated[int, Field(ge=1)]
    embed_dim: Annotated[int, Field(ge=1)]
    hidden_dim: Annotated[int, Field(ge=1)]
    num_heads: Annotated[int, Field(ge=1)]
    head_dim: Annotated[int, Field(ge=1)]
    num_kv_heads: Annotated[int, Field(ge=1)]
    sliding_window_size: int | None
    local_base_frequency: int
    global_base_frequency: int
    local_scale_factor: float
    global_scale_factor: float
    query_pre_attn_norm: Literal[tuple(gemma3.QueryPreAttentionNormalisation.__members__)]
    param_dtype: Literal[DTYPES]

    @classmethod
    def of(cls, config: ModelConfig) -> Architecture:
        if config.vision_config is not None:
            raise ValueError("only text-only Gemma3 models are supported")
        fields = {name: getattr(config, name) for name in cls.model_fields}
        fields["query_pre_attn_norm"] = config.query_pre_attn_norm.name
        fields["param_dtype"] = jnp.dtype(config.param_dtype).name
        return cls(**fields)

    def config(self) -> ModelConfig:
        fields = self.model_dump()
        fields["query_pre_attn_norm"] = gemma3.QueryPreAttentionNormalisation[
            self.query_pre_attn_norm
        ]
        fields["param_dtype"] = jnp.dtype(self.param_dtype)
        return ModelConfig(**fields)


class RandomBase(_Frozen):
    """The weights training started from: drawn from a seed (`model.init.random_model`)."""

    init: Literal["random"] = "random"
    seed: int


class CheckpointBase(_Frozen):
    """The weights training started from: a local checkpoint directory, known by its content
    (`io.sha256_tree`) and the params key that points at it, never by a path, so that a clone
    elsewhere, with the checkpoint elsewhere, finds it again and a different one is refused."""

    init: Literal["checkpoint"] = "checkpoint"
    sha256: str
    params_key: str = "model.checkpoint"
    dtype: Literal[DTYPES]


class AdapterCard(_Frozen):
    """The LoRA adapter merged into a model's weights (kept beside them, in `adapter/`)."""

    rank: int
    alpha: float
    targets: list[Literal[LORA_TARGETS]]
    quantize: Literal[QUANTIZATIONS] | None
    base_sha256: str  # the base weights it was trained on (`model.lora.weights_sha256`)


# What a model directory stores beside its card: all the weights (`weights/`), the LoRA adapter
# alone (`adapter/`: the model is the base with the adapter applied), or nothing (the model is
# the base unchanged: no training steps).
STORED = ("weights", "adapter", "base")


class ModelCard(_Frozen):
    """What a model directory is: its preset, its architecture, the base it was trained from,
    what it stores (`STORED`), for LoRA the adapter, and the RL steps it had after SFT."""

    preset: Literal[tuple(PRESETS)]
    architecture: Architecture
    base: Annotated[RandomBase | CheckpointBase, Field(discriminator="init")]
    adapter: AdapterCard | None = None
    rl_steps: Annotated[int, Field(ge=0)] = 0
    stored: Literal[STORED] = "weights"

    @classmethod
    def of(
        cls,
        config: ModelConfig,
        params: ModelParams,
        *,
        seed: int,
        checkpoint_sha256: str | None = None,
        adapter: AdapterCard | None = None,
        stored: str = "weights",
    ) -> ModelCard:
        """`checkpoint_sha256`: the content hash of `params.checkpoint`, when there is one."""
        base: RandomBase | CheckpointBase
        if params.checkpoint:
            if checkpoint_sha256 is None:
                raise ValueError("a checkpoint base needs its content hash")
            base = CheckpointBase(sha256=checkpoint_sha256, dtype=params.dtype)
        else:
            base = RandomBase(seed=seed)
        architecture = Architecture.of(config)
        return cls(
            preset=params.preset,
            architecture=architecture,
            base=base,
            adapter=adapter,
            stored=stored,
        )

    @property
    def is_tiny(self) -> bool:
        return self.preset == TINY


def read_card(path: str | Path) -> ModelCard:
    """A model card from its JSON file, or InvalidInput naming the file and field."""
    data = read_json_object(path, what="model config")
    try:
        return ModelCard.model_validate(data)
    except ValidationError as e:
        raise InvalidInput(problems_from_validation(e, file=str(path), line=None)) from None
