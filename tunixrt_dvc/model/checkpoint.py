"""Reading real Gemma3 checkpoints from local paths, with Tunix's own loaders.

Two on-disk layouts are read:
- Hugging Face safetensors (`*.safetensors`, usually with `config.json`), names such as
  `model.layers.0.self_attn.q_proj.weight`;
- an orbax checkpoint as Kaggle ships Gemma (`_METADATA`, `manifest.ocdbt`, ...), names such as
  `transformer/layer_0/attn/q_einsum` / `w`.
Before any weight is read, the names and shapes stored in the checkpoint are checked against the
model the config describes, so that a wrong preset or a truncated file is reported by name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from tunix.models.gemma3 import model as gemma3
from tunix.models.gemma3 import params as gemma3_params
from tunix.models.gemma3 import params_safetensors as gemma3_safetensors
from tunix.utils import torch_utils

from tunixrt_dvc.errors import Problem
from tunixrt_dvc.model.config import ModelConfig
from tunixrt_dvc.model.hf_config import config_json_problems
from tunixrt_dvc.model.layout import CheckpointError, detect_layout, hf_shapes, orbax_shapes
from tunixrt_dvc.model.names import abstract_state, expected_hf, expected_upstream


class VocabMismatch(CheckpointError):
    pass


class ShapeMismatch(CheckpointError):
    pass


def _compare(
    found: dict[str, tuple[int, ...]],
    expected: dict[str, tuple[int, ...]],
    *,
    where: Callable[[str], str],
    is_text: Callable[[str], bool],
) -> list[Problem]:
    """Missing, misshapen and unexpected text-model parameters, each named."""
    problems = []
    for name, shape in expected.items():
        if name not in found:
            problems.append(Problem(where(name), None, name, f"missing (expected shape {shape})"))
        elif found[name] != shape:
            problems.append(
                Problem(where(name), None, name, f"expected shape {shape}, found {found[name]}")
            )
    for name in sorted(set(found) - set(expected)):
        if is_text(name):
            problems.append(
                Problem(where(name), None, name, "not in the configured model (a deeper model?)")
            )
    return problems


def _hf_unused(name: str, config: ModelConfig) -> bool:
    """Names Tunix's loader deliberately skips (rotary caches, a tied lm_head, biases)."""
    try:
        key, _ = torch_utils.torch_key_to_jax_key(
            gemma3_safetensors._get_key_and_transform_mapping(config), name
        )
    except ValueError:
        return False
    return key.startswith("unused.")


def _check_hf(path: Path, config: ModelConfig) -> bool:
    """Raise on any mismatch; return whether Tunix's fast loader can read the files."""
    found, files, mixed = hf_shapes(path)
    problems = []
    if (path / "config.json").exists():
        problems += config_json_problems(path / "config.json", config)

    def is_text(name: str) -> bool:
        return name.startswith("model.") and not _hf_unused(name, config)

    problems += _compare(
        found,
        expected_hf(config),
        where=lambda n: str(path / files.get(n, "*.safetensors")),
        is_text=is_text,
    )
    if problems:
        raise ShapeMismatch(problems)
    # Tunix's optimized loader reads a whole file as the dtype of its first tensor.
    return not mixed


def _check_orbax(path: Path, config: ModelConfig) -> None:
    found = orbax_shapes(path)
    if found is None:
        return
    problems = _compare(
        found,
        expected_upstream(config),
        where=lambda n: str(path),
        is_text=lambda n: n.startswith("transformer/layer_") or n.startswith("transformer/final"),
    )
    if problems:
        raise ShapeMismatch(problems)


def _check_loaded(model: gemma3.Gemma3, config: ModelConfig, path: Path) -> None:
    """After loading: every parameter holds an array of the configured shape."""
    expected = jax.tree_util.tree_flatten_with_path(abstract_state(config))[0]
    loaded = dict(
        jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param).to_pure_dict())[0]
    )
    problems = []
    for key, want in expected:
        got = loaded.get(key)
        name = ".".join(str(getattr(k, "key", k)) for k in key)
        if not isinstance(got, jax.Array):
            problems.append(Problem(str(path), None, name, "missing"))
        elif got.shape != want.shape:
            problems.append(
                Problem(str(path), None, name, f"expected shape {want.shape}, found {got.shape}")
            )
    if problems:
        raise ShapeMismatch(problems)


def load_checkpoint(path: str | Path, config: ModelConfig, *, dtype: Any) -> gemma3.Gemma3:
    """A Gemma3 model with the weights of a local checkpoint directory, cast to `dtype`.

    Nothing is downloaded. Raises `CheckpointError` (an InvalidInput naming the file and the
    parameter) for a missing path, an unrecognized layout or a parameter that does not fit.
    """
    layout, where = detect_layout(path)
    dtype = jnp.dtype(dtype)
    config = dataclasses.replace(config, param_dtype=dtype)
    if layout == "safetensors":
        fast = _check_hf(where, config)
        model = gemma3_safetensors.create_model_from_safe_tensors(
            str(where), config, dtype=dtype, mode="optimized" if fast else "original"
        )
    else:
        _check_orbax(where, config)
        model = gemma3_params.create_model_from_checkpoint(
            str(where.resolve()), config, dtype=dtype
        )
    _check_loaded(model, config, where)
    return model
