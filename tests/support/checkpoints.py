"""Checkpoint writers for the loader tests: Hugging Face safetensors (the library's exporter)
and Kaggle's orbax layout (test-only)."""

from __future__ import annotations

import shutil
from pathlib import Path

from flax import nnx
from tunix.models.gemma3 import model as gemma3

from tunixrt_dvc.model.config import ModelConfig
from tunixrt_dvc.model.export import export_safetensors as save_checkpoint_safetensors
from tunixrt_dvc.model.export import hf_config_json
from tunixrt_dvc.model.names import upstream_state

__all__ = [
    "hf_config_json",
    "save_checkpoint_orbax",
    "save_checkpoint_safetensors",
    "write_hf_checkpoint",
]


def save_checkpoint_orbax(model: gemma3.Gemma3, config: ModelConfig, path: str | Path) -> None:
    """Write `model` in the orbax layout of Google's Gemma checkpoints (as Kaggle ships them),
    which `tunix.models.gemma3.params.create_model_from_checkpoint` reads. `path` must not exist.

    Orbax records save times in its metadata files, so these bytes are not reproducible;
    the arrays are.
    """
    import orbax.checkpoint as ocp

    tree = upstream_state(nnx.state(model, nnx.Param).to_pure_dict(), config)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(Path(path).resolve(), tree)
    checkpointer.wait_until_finished()


def write_hf_checkpoint(path: Path, *, tokenizer: Path, params: Path, seed: int = 7) -> Path:
    """A small Gemma3 (the params' tiny dimensions, the tokenizer's vocabulary), drawn from
    `seed` and written as a Hugging Face directory with its tokenizer.model, as real weights
    come."""
    from tunixrt_dvc.model.config import model_config
    from tunixrt_dvc.model.export import export_safetensors
    from tunixrt_dvc.model.init import random_model
    from tunixrt_dvc.params import load_params
    from tunixrt_dvc.text.tokenizer import Tokenizer

    p = load_params(params)
    vocab = Tokenizer.load(tokenizer).vocab_size
    config = model_config(p.model, vocab_size=vocab, max_len=p.train.seq_len)
    export_safetensors(random_model(config, seed=seed), config, path)
    shutil.copy(tokenizer, path / "tokenizer.model")
    return path


def save_random_checkpoint(config: ModelConfig, path: str | Path, *, seed: int = 0) -> Path:
    """A random-init Hugging Face checkpoint of `config` (safetensors in its param dtype, and
    config.json): what a real checkpoint of that size costs to load and train, without its
    weights (memory does not depend on the values). Returns `path`."""
    from tunixrt_dvc.model.init import random_model

    save_checkpoint_safetensors(random_model(config, seed=seed), config, path)
    return Path(path)


def pad_tokenizer(source: str | Path, dest: str | Path, vocab_size: int) -> Path:
    """`source` (a tokenizer.model) with unused pieces appended up to `vocab_size` pieces, written
    to `dest`: a small formatted dataset's tokenizer with a real model's vocabulary size. The
    existing pieces keep their ids, so the dataset's ids stay valid."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(Path(source).read_bytes())
    low = min(p.score for p in proto.pieces) - 1.0
    for i in range(vocab_size - len(proto.pieces)):
        piece = proto.pieces.add()
        piece.piece, piece.score = f"<unused_pad_{i}>", low
        piece.type = pb.ModelProto.SentencePiece.UNUSED
    Path(dest).write_bytes(proto.SerializeToString())
    return Path(dest)
