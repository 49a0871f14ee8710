"""Checkpoint writers for the loader tests: Hugging Face safetensors (the library's exporter)
and Kaggle's orbax layout (test-only)."""

from __future__ import annotations

from pathlib import Path

from flax import nnx
from tunix.models.gemma3 import model as gemma3

from tunixrt_dvc.model.config import ModelConfig
from tunixrt_dvc.model.export import export_safetensors as save_checkpoint_safetensors
from tunixrt_dvc.model.export import hf_config_json
from tunixrt_dvc.model.names import upstream_state

__all__ = ["hf_config_json", "save_checkpoint_orbax", "save_checkpoint_safetensors"]


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
