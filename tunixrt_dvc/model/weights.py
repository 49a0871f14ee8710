"""A trained model directory: its card (`config.json`) beside its weights (`weights/`).

    train/model/
      config.json        the preset, the resolved architecture, the base it was trained from
                         (a seed, or a checkpoint's content hash), what the directory stores
                         and, with LoRA, the adapter's rank, alpha, targets and quantization
      weights/           the parameters, an orbax checkpoint (full fine-tuning, RL)
      adapter/weights/   with LoRA: the adapter's A and B matrices alone (the base is not copied:
                         `model.build.open_model` applies them to it)

A card that stores `base` has neither: the model is its base, unchanged (no training steps).

The weights are written with orbax's handler alone: orbax's `Checkpointer` adds commit timestamps
and an absolute path, so its bytes would differ on every run; the handler's restore with
`orbax.checkpoint.PyTreeCheckpointer().restore(path)`.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx
from jax.sharding import SingleDeviceSharding
from tunix.models.gemma3 import model as gemma3

from tunixrt_dvc.distributed import to_host
from tunixrt_dvc.errors import InvalidInput, Problem
from tunixrt_dvc.io import atomic_dir, json_text
from tunixrt_dvc.model.config import ModelCard, read_card

CONFIG_FILE = "config.json"
WEIGHTS_DIR = "weights"
ADAPTER_DIR = "adapter"  # with LoRA: the adapter alone (adapter/weights; the card's `adapter`)


def _save_tree(state: dict, path: Path) -> None:
    # The writing process on its own: orbax would otherwise wait at barriers for processes
    # that do not write (the arrays are already gathered here).
    me = jax.process_index()
    alone = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})
    handler = ocp.PyTreeCheckpointHandler(use_ocdbt=False, multiprocessing_options=alone)
    handler.save(epath.Path(path), args=ocp.args.PyTreeSave(state))
    handler.finalize(epath.Path(path))
    handler.close()


def save_model(
    model: nnx.Module | None,
    card: ModelCard,
    path: str | Path,
    *,
    adapter: dict | None = None,
    write: bool = True,
) -> None:
    """Write the card and what it says the directory stores (`card.stored`) to the directory
    `path` (replaced atomically): `model`'s parameters, or the LoRA `adapter` alone, or nothing.

    The arrays are saved from host memory (gathered from every device and process first), so
    the directory is the same whatever mesh made it and restores anywhere;
    with several processes every one must call this (the gathering is collective) and only the
    one with `write` writes.
    """
    state = None
    if card.stored == "weights":
        state = jax.tree.map(to_host, nnx.state(model, nnx.Param).to_pure_dict())
    adapter = None if adapter is None else jax.tree.map(to_host, adapter)
    if card.stored == "adapter" and adapter is None:
        raise ValueError("a card that stores the adapter needs the adapter")
    if not write:
        return
    with atomic_dir(path) as tmp:
        # Defaults left out: an SFT model's card (no RL, all weights) reads as it always has.
        exclude = {k for k, v in (("rl_steps", 0), ("stored", "weights")) if getattr(card, k) == v}
        fields = card.model_dump(mode="json", exclude=exclude or None)
        (tmp / CONFIG_FILE).write_text(json_text(fields), "utf-8")
        if state is not None:
            _save_tree(state, tmp / WEIGHTS_DIR)
        if adapter is not None:
            _save_tree(adapter, tmp / ADAPTER_DIR / WEIGHTS_DIR)


def is_model_dir(path: str | Path) -> bool:
    """Whether `path` is a model directory written by `save_model` (its config.json is a model
    card, not a Hugging Face config)."""
    try:
        card = json.loads((Path(path) / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(card, dict) and {"preset", "architecture", "base"} <= card.keys()


def _restore(path: Path, abstract: nnx.Module, kind: type[nnx.Variable]) -> dict:
    """A pure dict of the `kind` variables of `abstract`, restored from the orbax tree `path`,
    as jax arrays on this process's first device (the mesh comes later, if any)."""
    device = SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
        nnx.state(abstract, kind).to_pure_dict(),
    )
    return ocp.PyTreeCheckpointer().restore(
        path.resolve(),
        args=ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target)
        ),
    )


def load_adapter(path: str | Path, adapted: nnx.Module) -> None:
    """Set the LoRA params of `adapted` (a model with adapters applied) from `path/adapter`."""
    state = nnx.state(adapted, nnx.LoRAParam)
    restored = _restore(Path(path) / ADAPTER_DIR / WEIGHTS_DIR, adapted, nnx.LoRAParam)
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(adapted, state)


def read_model_card(path: str | Path) -> ModelCard:
    """The card of a model directory, or InvalidInput if `path` is not one."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        msg = f"not a trained model directory (needs {CONFIG_FILE})"
        raise InvalidInput([Problem(str(path), None, "<dir>", msg)])
    return read_card(path / CONFIG_FILE)


def load_model(path: str | Path) -> tuple[gemma3.Gemma3, ModelCard]:
    """The model a directory written by `save_model` holds, built from its own card; the
    directory must store all the weights (`model.build.open_model` opens any)."""
    path = Path(path)
    card = read_model_card(path)
    if card.stored != "weights" or not (path / WEIGHTS_DIR).is_dir():
        msg = (
            f"stores {card.stored!r}, not all the weights: open it with its base "
            "(`model.build.open_model`)"
        )
        raise InvalidInput([Problem(str(path), None, "<dir>", msg)])
    config = card.architecture.config()
    abstract = nnx.eval_shape(lambda: gemma3.Gemma3(config, rngs=nnx.Rngs(params=0)))
    graphdef, state = nnx.split(abstract)
    nnx.replace_by_pure_dict(state, _restore(path / WEIGHTS_DIR, abstract, nnx.Param))
    return nnx.merge(graphdef, state), card
