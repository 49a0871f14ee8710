"""The model a run starts from: random init from the seed, a real checkpoint's weights, or a
model this project trained (for LoRA or RL on top of it); and any trained model directory opened
with its base (`open_model`): a LoRA directory stores only its adapter, a 0-step one nothing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx
from tunix.models.gemma3 import model as gemma3

from tunixrt_dvc.errors import InvalidInput, Problem
from tunixrt_dvc.io import sha256_tree
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
from tunixrt_dvc.model.lora import apply_lora, merge, weights_sha256
from tunixrt_dvc.model.weights import (
    CONFIG_FILE,
    is_model_dir,
    load_adapter,
    load_model,
    read_model_card,
)
from tunixrt_dvc.params import LoraParams, ModelParams

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


def checkpoint_sha256(path: str | Path) -> str:
    """A checkpoint directory's content hash, as model cards record their base."""
    return sha256_tree(path)


def build_base(card: ModelCard, *, checkpoint: str | None) -> gemma3.Gemma3:
    """The model a trained directory started from, as its card describes it: drawn from its
    seed, or read from `checkpoint` (what the card's `params_key` names now), which must be the
    checkpoint it was trained from, byte for byte."""
    config = card.architecture.config()
    if not isinstance(card.base, CheckpointBase):
        return random_model(config, seed=card.base.seed)
    key, want = card.base.params_key, card.base.sha256
    if not checkpoint:
        msg = f"is not set, but the model was trained from the checkpoint with sha256 {want}"
        raise InvalidInput([Problem("params.yaml", None, key, msg)])
    got = checkpoint_sha256(checkpoint)
    if got != want:
        msg = (
            f"{checkpoint} has sha256 {got}, but the model was trained from the checkpoint with "
            f"sha256 {want}: not its base"
        )
        raise InvalidInput([Problem("params.yaml", None, key, msg)])
    if is_model_dir(checkpoint):
        return _cast(load_model(checkpoint)[0], jnp.dtype(card.base.dtype))
    return load_checkpoint(checkpoint, config, dtype=card.base.dtype)


def open_model(path: str | Path, *, checkpoint: str | None) -> tuple[gemma3.Gemma3, ModelCard]:
    """Any trained model directory as a plain Gemma3 model: its weights; or its base with its
    LoRA adapter merged in (checked against the base it was trained on); or its base unchanged.
    `checkpoint` is the base checkpoint directory when the card names one (see `build_base`)."""
    card = read_model_card(path)
    if card.stored == "weights":
        return load_model(path)
    if card.stored == "base":
        return build_base(card, checkpoint=checkpoint), card
    adapter = card.adapter
    if adapter is None:
        msg = "stores an adapter, but its card has none"
        raise InvalidInput([Problem(str(Path(path) / CONFIG_FILE), None, "adapter", msg)])
    lora = LoraParams(**adapter.model_dump(exclude={"base_sha256"}))
    base = build_base(card, checkpoint=checkpoint)
    if (got := weights_sha256(base)) != adapter.base_sha256:
        msg = f"was trained on weights with sha256 {adapter.base_sha256}; its base has {got}"
        raise InvalidInput([Problem(str(Path(path) / CONFIG_FILE), None, "adapter", msg)])
    adapted = apply_lora(base, lora, seed=0)
    load_adapter(path, adapted)
    return merge(build_base(card, checkpoint=checkpoint), adapted, lora), card


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
