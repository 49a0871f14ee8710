"""What a local checkpoint directory holds, read without loading any weight: its layout
(Hugging Face safetensors, or orbax as Kaggle ships Gemma) and the shapes of its tensors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np

from tunixrt_dvc.errors import InvalidInput, Problem

Layout = Literal["safetensors", "orbax"]


class CheckpointError(InvalidInput):
    """A checkpoint that cannot be loaded into the configured model."""


class CheckpointNotFound(CheckpointError):
    pass


class UnknownLayout(CheckpointError):
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


def hf_shapes(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str], set[str]]:
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


def orbax_shapes(path: Path) -> dict[str, tuple[int, ...]] | None:
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
        shape = hf_shapes(where)[0].get("model.embed_tokens.weight")
    else:
        shape = (orbax_shapes(where) or {}).get("transformer/embedder.input_embedding")
    return shape[0] if shape else None
