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

import bisect
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


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """The line of every object key in a JSON document, by its path of keys.

    Arrays are not entered (config.json keeps no architecture in them). `text` must be valid JSON.
    """
    decoder = json.JSONDecoder()
    lines: dict[tuple[str, ...], int] = {}
    newlines = [i for i, c in enumerate(text) if c == "\n"]

    def skip(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    def value(i: int, path: tuple[str, ...]) -> int:
        i = skip(i)
        if text[i] != "{":
            return decoder.raw_decode(text, i)[1]
        i = skip(i + 1)
        if text[i] == "}":
            return i + 1
        while True:
            i = skip(i)
            key, j = json.decoder.scanstring(text, i + 1)
            lines[path + (key,)] = bisect.bisect_left(newlines, i) + 1  # the last, as json.loads
            j = skip(value(skip(j) + 1, path + (key,)))  # the value after the ':'
            if text[j] == "}":
                return j + 1
            i = j + 1  # past the ','

    value(0, ())
    return lines


def _query_pre_attn_scalar(config: ModelConfig) -> tuple[int, str]:
    """transformers' `query_pre_attn_scalar` (queries are scaled by its inverse square root) for
    Tunix's `query_pre_attn_norm`, and where the value comes from."""
    norm = gemma3.QueryPreAttentionNormalisation
    if config.query_pre_attn_norm == norm.BY_ONE_OVER_SQRT_EMBED_DIM_DIV_NUM_HEADS:
        return config.embed_dim // config.num_heads, "embed_dim // num_heads"
    return config.head_dim, "head_dim"


_ROPE_TYPES = ("default", "linear")  # Tunix's Gemma3 RoPE: a base frequency and a linear scale


def _config_json_problems(file: Path, config: ModelConfig) -> list[Problem]:
    """Architecture facts in config.json that tensor shapes cannot reveal (or reveal late).

    Both forms transformers writes are read. Up to version 4: `rope_theta` (global layers),
    `rope_local_base_freq` (sliding-window layers) and `rope_scaling` (global layers). From
    version 5, `rope_parameters`, one entry per layer type:
    `{"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
    "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}`.
    A key the file does not have is not checked.
    """
    try:
        text = file.read_text(encoding="utf-8")
        cfg = json.loads(text)
    except (OSError, json.JSONDecodeError) as e:
        return [Problem(str(file), getattr(e, "lineno", None), "<json>", str(e))]
    if not isinstance(cfg, dict):
        return [Problem(str(file), None, "<json>", "expected an object")]
    prefix: tuple[str, ...] = ()
    if isinstance(cfg.get("text_config"), dict):
        # Multimodal checkpoints nest the language model's config.
        cfg, prefix = cfg["text_config"], ("text_config",)
    lines = _key_lines(text)
    problems = []

    def report(path: tuple[str, ...], message: str, *, at: tuple[str, ...] | None = None) -> None:
        """A problem named by the key `path`, on the line of `at` (or of `path`); where the file
        lacks that key, on the line of the nearest enclosing key."""
        where = prefix + (at or path)
        while where and where not in lines:
            where = where[:-1]
        problems.append(Problem(str(file), lines.get(where), ".".join(prefix + path), message))

    def compare(
        path: tuple[str, ...],
        have: Any,
        want: Any,
        *,
        note: str = "",
        want_note: str = "",
        at: tuple[str, ...] | None = None,
    ) -> None:
        if have != want:
            report(path, f"checkpoint has {have}{note}, the config has {want}{want_note}", at=at)

    def scaling(path: tuple[str, ...], rope: dict, want: float, *, untyped: str) -> None:
        """The linear scale factor `rope` applies (transformers ignores `factor` unless the
        `rope_type` is linear); a `rope_type` that Tunix's Gemma3 lacks is reported by name."""
        field = "type" if "type" in rope and "rope_type" not in rope else "rope_type"
        kind = rope.get(field, untyped)
        if kind not in _ROPE_TYPES:
            supported = " and ".join(repr(k) for k in _ROPE_TYPES)
            report(path + (field,), f"checkpoint has {kind!r}: Tunix's Gemma3 has only {supported}")
            return
        factor = rope.get("factor", 1.0) if kind == "linear" else 1.0
        note = "" if kind == "linear" else f" ({field} {kind!r})"
        at = path + ("factor" if "factor" in rope else field,)
        compare(path + ("factor",), factor, want, note=note, at=at)

    # Only where global layers exist are their RoPE values and the window architecture: an
    # all-local tiny model's window is set never to bind.
    has_global = config.num_layers >= len(ATTENTION_PATTERN)
    q_scalar, q_source = _query_pre_attn_scalar(config)
    checks = [
        ("num_hidden_layers", config.num_layers, ""),
        ("hidden_size", config.embed_dim, ""),
        ("intermediate_size", config.hidden_dim, ""),
        ("num_attention_heads", config.num_heads, ""),
        ("num_key_value_heads", config.num_kv_heads, ""),
        ("head_dim", config.head_dim, ""),
        ("query_pre_attn_scalar", q_scalar, f" ({q_source}: {config.query_pre_attn_norm.name})"),
        ("rope_local_base_freq", config.local_base_frequency, ""),
    ]
    if has_global:
        checks += [
            ("sliding_window", config.sliding_window_size, ""),
            ("rope_theta", config.global_base_frequency, ""),
        ]
    for key, want, want_note in checks:
        if key in cfg:
            compare((key,), cfg[key], want, want_note=want_note)
    if "rope_scaling" in cfg and has_global:  # transformers 4: the global layers' scaling
        rope = cfg["rope_scaling"] if isinstance(cfg["rope_scaling"], dict) else {}
        scaling(("rope_scaling",), rope, config.global_scale_factor, untyped="linear")
    rope_parameters = cfg.get("rope_parameters")
    if isinstance(rope_parameters, dict):  # transformers 5: per layer type
        kinds = [("sliding_attention", config.local_base_frequency, config.local_scale_factor)]
        if has_global:
            kinds += [("full_attention", config.global_base_frequency, config.global_scale_factor)]
        for kind, base, scale in kinds:
            rope = rope_parameters.get(kind)
            if isinstance(rope, dict):
                if "rope_theta" in rope:
                    compare(("rope_parameters", kind, "rope_theta"), rope["rope_theta"], base)
                scaling(("rope_parameters", kind), rope, scale, untyped="default")
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
