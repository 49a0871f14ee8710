"""The model a run starts from: random init from the seed, a real checkpoint's weights, or a
model this project trained (for LoRA or RL on top of it)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx
from tunix.models.gemma3 import model as gemma3

from tunixrt_dvc.errors import Problem
from tunixrt_dvc.model.checkpoint import ShapeMismatch, VocabMismatch, load_checkpoint
from tunixrt_dvc.model.config import (
    Architecture,
    CheckpointBase,
    ModelCard,
    ModelConfig,
    model_config,
)
from tunixrt_dvc.model.init import random_model
from tunixrt_dvc.model.layout import checkpoint_num_embed
from tunixrt_dvc.model.weights import CONFIG_FILE, is_model_dir, load_model
from tunixrt_dvc.params import ModelParams

# An embedding table may have more rows than the tokenizer has pieces (Gemma3's Hugging Face
# multimodal checkpoints have 262208 rows for 262144 pieces); more than this many spare rows means
# the tokenizer does not belong to the checkpoint.
MAX_EMBEDDING_PADDING = 1024


def build_model(
    params: ModelParams, *, vocab_size: int, max_len: int, seed: int
) -> tuple[gemma3.Gemma3, ModelConfig]:
    """The model to train: random init from `seed`, or the weights in `params.checkpoint`.

    `vocab_size` is the tokenizer's. A real checkpoint's embedding table may be padded beyond it
    (see `check_vocab`); the config then takes the checkpoint's row count.
    """
    config = model_config(params, vocab_size=vocab_size, max_len=max_len)
    if not params.checkpoint:
        return random_model(config, seed=seed), config
    if is_model_dir(params.checkpoint):  # a model this project trained (train/model)
        return _trained(params, config, vocab_size)
    rows = checkpoint_num_embed(params.checkpoint)
    if rows is not None and rows != config.num_embed:
        config = dataclasses.replace(config, num_embed=rows)
    check_vocab(config, vocab_size, source=params.checkpoint)
    return load_checkpoint(params.checkpoint, config, dtype=params.dtype), config


def _trained(
    params: ModelParams, config: ModelConfig, vocab_size: int
) -> tuple[gemma3.Gemma3, ModelConfig]:
    """A trained model directory as the base: its card must describe the configured model."""
    model, card = load_model(params.checkpoint)
    want = Architecture.of(dataclasses.replace(config, num_embed=card.architecture.num_embed))
    file = str(Path(params.checkpoint) / CONFIG_FILE)
    problems = [
        Problem(file, None, f"architecture.{k}", f"is {v!r}, the config has {want_v!r}")
        for (k, v), want_v in zip(card.architecture, want.model_dump().values(), strict=True)
        if k != "param_dtype" and v != want_v
    ]
    if problems:
        raise ShapeMismatch(problems)
    config = card.architecture.config()
    check_vocab(config, vocab_size, source=params.checkpoint)
    dtype = jnp.dtype(params.dtype)
    return _cast(model, dtype), dataclasses.replace(config, param_dtype=dtype)


def _cast(model: gemma3.Gemma3, dtype: jnp.dtype) -> gemma3.Gemma3:
    state = nnx.state(model, nnx.Param)
    if any(leaf.dtype != dtype for leaf in jax.tree.leaves(state)):
        nnx.update(model, jax.tree.map(lambda w: w.astype(dtype), state))
    return model


def build_base(card: ModelCard) -> gemma3.Gemma3:
    """The model a trained directory started from, as its card describes it."""
    config = card.architecture.config()
    if isinstance(card.base, CheckpointBase):
        if is_model_dir(card.base.path):
            return _cast(load_model(card.base.path)[0], jnp.dtype(card.base.dtype))
        return load_checkpoint(card.base.path, config, dtype=card.base.dtype)
    return random_model(config, seed=card.base.seed)


def check_vocab(config: ModelConfig, tokenizer_vocab_size: int, *, source: str = "model") -> None:
    """Refuse a tokenizer that does not belong to the model's embedding table (`source` names
    where the table came from, for the message).

    A mismatch is a tokenizer with more pieces than the table has rows (its last ids would index
    past the table, and JAX clamps out-of-range indices silently), or a table more than
    `MAX_EMBEDDING_PADDING` rows larger than the tokenizer (a different vocabulary, not padding).
    """
    rows = config.num_embed
    spare = rows - tokenizer_vocab_size
    if 0 <= spare <= MAX_EMBEDDING_PADDING:
        return
    why = (
        "ids past the table would be clamped silently"
        if spare < 0
        else f"more than {MAX_EMBEDDING_PADDING} spare rows: not this model's tokenizer"
    )
    raise VocabMismatch(
        [
            Problem(
                source,
                None,
                "vocab_size",
                f"tokenizer has {tokenizer_vocab_size} pieces, the model's embedding table has "
                f"{rows} rows ({why})",
            )
        ]
    )
