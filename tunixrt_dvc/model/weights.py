"""A trained model directory: its card (`config.json`) beside its weights (`weights/`).

    train/model/
      config.json   the preset, the resolved architecture and the base it was trained from
      weights/      the parameters, an orbax PyTree checkpoint

The weights are written with orbax's handler alone: orbax's `Checkpointer` adds commit timestamps
and an absolute path, so its bytes would differ on every run; the handler's restore with
`orbax.checkpoint.PyTreeCheckpointer().restore(path)`.
"""

from __future__ import annotations

from pathlib import Path

import orbax.checkpoint as ocp
from etils import epath
from flax import nnx
from tunix.models.gemma3 import model as gemma3

from tunixrt_dvc.errors import InvalidInput, Problem
from tunixrt_dvc.io import atomic_dir, json_text
from tunixrt_dvc.model.config import ModelCard, read_card

CONFIG_FILE = "config.json"
WEIGHTS_DIR = "weights"


def save_model(model: nnx.Module, card: ModelCard, path: str | Path) -> None:
    """Write `model`'s parameters and its card to the directory `path` (replaced atomically)."""
    state = nnx.state(model, nnx.Param).to_pure_dict()
    with atomic_dir(path) as tmp:
        (tmp / CONFIG_FILE).write_text(json_text(card.model_dump(mode="json")), "utf-8")
        handler = ocp.PyTreeCheckpointHandler(use_ocdbt=False)
        handler.save(epath.Path(tmp / WEIGHTS_DIR), args=ocp.args.PyTreeSave(state))
        handler.finalize(epath.Path(tmp / WEIGHTS_DIR))
        handler.close()


def load_model(path: str | Path) -> tuple[gemma3.Gemma3, ModelCard]:
    """The model a directory written by `save_model` holds, built from its own card."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_DIR).is_dir():
        msg = f"not a trained model directory (needs {CONFIG_FILE} and {WEIGHTS_DIR}/)"
        raise InvalidInput([Problem(str(path), None, "<dir>", msg)])
    card = read_card(path / CONFIG_FILE)
    config = card.architecture.config()
    abstract = nnx.eval_shape(lambda: gemma3.Gemma3(config, rngs=nnx.Rngs(params=0)))
    graphdef, state = nnx.split(abstract)
    target = nnx.state(abstract, nnx.Param).to_pure_dict()
    restored = ocp.PyTreeCheckpointer().restore(
        (path / WEIGHTS_DIR).resolve(),
        args=ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target)
        ),
    )
    nnx.replace_by_pure_dict(state, restored)
    return nnx.merge(graphdef, state), card
