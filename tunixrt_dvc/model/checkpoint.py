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
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tunix.models.gemma3 import model as gemma3
from tunix.models.gemma3 import params as gemma3_params
from tunix.models.gemma3 import params_safetensors as gemma3_safetensors
from tunix.utils import torch_utils

from tunixrt_dvc.errors import InvalidInput, Problem
from tunixrt_dvc.model.config import ATTENTION_PATTERN, ModelConfig
from tunixrt_dvc.model.names import abstract_state, expected_hf, expected_upstream

Layout = Literal["safetensors", "orbax"]


class CheckpointError(InvalidInput):
    """A checkpoint that cannot be loaded into the configured model."""


class CheckpointNotFound(CheckpointError):
    pass


class UnknownLayout(CheckpointError):
    pass


class VocabMismatch(CheckpointError):
    pass


class ShapeMismatch(CheckpointError):
    pass


_ORBAX_MARKERS = ("_METADATA", "_CHECKPOINT_METADATA", "manifest.ocdbt")


def _is_orbax(path: Path) -> bool:
    return path.is_dir() and any((path / m).exists() for m in _ORBAX_MARKERS)


def detect_layout(path: str | Path) -> tuple[Layout, Path]:
    """Which layout a local checkpoint directory holds, and the directory to read.

    Kaggle's download puts the orbax checkpoint one level down, beside `tokenizer.model`:
    a single orbax subdirectory is followed.
    """
    path = Path(path)

    def problem(message: str) -> list[Problem]:
        return [Problem(str(path), None, "model.checkpoint", message)]

    if not path.exists():
        raise CheckpointNotFound(problem("no such directory"))
    if not path.is_dir():
        raise UnknownLayout(problem("expected a directory, found a file"))
    if any(path.glob("*.safetensors")):
        return "safetensors", path
    if _is_orbax(path):
        return "orbax", path
    subdirs = [p for p in sorted(path.iterdir()) if _is_orbax(p)]
    if len(subdirs) == 1:
        return "orbax", subdirs[0]
    msg = (
        "several orbax checkpoints inside: " + ", ".join(p.name for p in subdirs)
        if subdirs
        else "neither *.safetensors (Hugging Face) nor an orbax checkpoint (_METADATA, "
        "manifest.ocdbt; as Kaggle ships Gemma) found"
    )
    raise UnknownLayout(problem(msg))


def _safetensors_header(file: Path) -> dict[str, dict]:
    """Tensor name -> {dtype, shape} from a safetensors header, without reading any data."""
    try:
        with open(file, "rb") as f:
            (n,) = np.frombuffer(f.read(8), dtype="<u8")
            header = json.loads(f.read(int(min(n, 100_000_000))))
        header.pop("__metadata__", None)
        if not all(isinstance(v, dict) and {"dtype", "shape"} <= v.keys() for v in header.values()):
            raise ValueError("tensor entries without dtype and shape")
    except (OSError, ValueError, AttributeError) as e:  # JSONDecodeError is a ValueError
        raise UnknownLayout([Problem(str(file), None, "<header>", f"not safetensors: {e}")]) from e
    return header


def _hf_shapes(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str], set[str]]:
    """Names (without a `language_model.` prefix) -> shape and -> file; dtypes per file."""
    shapes, files, mixed = {}, {}, set()
    for file in sorted(path.glob("*.safetensors")):
        header = _safetensors_header(file)
        if len({v["dtype"] for v in header.values()}) > 1:
            mixed.add(file.name)
        for name, meta in header.items():
            name = name.removeprefix("language_model.")
            shapes[name], files[name] = tuple(meta["shape"]), file.name
    return shapes, files, mixed


def _orbax_shapes(path: Path) -> dict[str, tuple[int, ...]] | None:
    """`module.param` -> shape from the checkpoint's metadata; None if it has none to read."""
    import orbax.checkpoint as ocp

    try:
        meta = ocp.StandardCheckpointer().metadata(path)
    except Exception:  # an older orbax format: the shapes are checked after loading instead
        return None
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    shapes = {}
    for module, params in tree.items():
        if isinstance(params, dict):
            for name, leaf in params.items():
                if hasattr(leaf, "shape"):
                    shapes[f"{module}.{name}"] = tuple(leaf.shape)
    return shapes


def checkpoint_num_embed(path: str | Path) -> int | None:
    """Rows of the embedding table stored in a checkpoint (None if it cannot be told)."""
    layout, where = detect_layout(path)
    if layout == "safetensors":
        shape = _hf_shapes(where)[0].get("model.embed_tokens.weight")
    else:
        shape = (_orbax_shapes(where) or {}).get("transformer/embedder.input_embedding")
    return shape[0] if shape else None


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


def _config_json_problems(file: Path, config: ModelConfig) -> list[Problem]:
    """Architecture facts in config.json that tensor shapes cannot reveal (or reveal late)."""
    try:
        text = file.read_text(encoding="utf-8")
        cfg = json.loads(text)
    except (OSError, json.JSONDecodeError) as e:
        return [Problem(str(file), getattr(e, "lineno", None), "<json>", str(e))]
    cfg = cfg.get("text_config", cfg)  # multimodal checkpoints nest the language model's config
    checks = [
        ("num_hidden_layers", config.num_layers),
        ("hidden_size", config.embed_dim),
        ("intermediate_size", config.hidden_dim),
        ("num_attention_heads", config.num_heads),
        ("num_key_value_heads", config.num_kv_heads),
        ("head_dim", config.head_dim),
        ("rope_local_base_freq", config.local_base_frequency),
    ]
    if config.num_layers >= len(ATTENTION_PATTERN):
        # Only where global layers exist: an all-local tiny model's window is set never to bind,
        # so its value is not architecture.
        checks += [
            ("sliding_window", config.sliding_window_size),
            ("rope_theta", config.global_base_frequency),
        ]
    have = dict(cfg)
    if "rope_scaling" in cfg and config.num_layers >= len(ATTENTION_PATTERN):
        have["rope_scaling.factor"] = (cfg["rope_scaling"] or {}).get("factor", 1.0)
        checks.append(("rope_scaling.factor", config.global_scale_factor))
    lines = text.splitlines()
    problems = []
    for key, want in checks:
        if key in have and have[key] != want:
            quoted = '"' + key.split(".")[0] + '"'
            line = next((n for n, s in enumerate(lines, 1) if quoted in s), None)
            problems.append(
                Problem(str(file), line, key, f"checkpoint has {have[key]}, the config has {want}")
            )
    return problems


def _check_hf(path: Path, config: ModelConfig) -> bool:
    """Raise on any mismatch; return whether Tunix's fast loader can read the files."""
    found, files, mixed = _hf_shapes(path)
    problems = []
    if (path / "config.json").exists():
        problems += _config_json_problems(path / "config.json", config)

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
    found = _orbax_shapes(path)
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
