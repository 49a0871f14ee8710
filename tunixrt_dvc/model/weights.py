"""A trained model directory: its card (`config.json`) beside its weights (`weights/`).

    train/model/
      config.json        the preset, the resolved architecture, the base it was trained from
                         and, with LoRA, the adapter's rank, alpha, targets and quantization
      weights/           the parameters (with LoRA: merged into the base), an orbax checkpoint
      adapter/weights/   with LoRA: the adapter's A and B matrices alone

The weights are written with orbax's handler alone: orbax's `Checkpointer` adds commit timestamps
and an absolute path, so its bytes would differ on every run; the handler's restore with
`orbax.checkpoint.PyTreeCheckpointer().restore(path)`.
"""

from __future__ import annotations

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
    model: nnx.Module,
    card: ModelCard,
    path: str | Path,
    *,
    adapter: dict | None = None,
    write: bool = True,
) -> None:
    """Write `model`'s parameters and its card to the directory `path` (replaced atomically),
    and, given one, the LoRA adapter it was merged from (`adapter/weights`, its card says how).

    The arrays are saved from host memory (gathered from every device and process first), so
    the directory is the same whatever mesh made it and restores anywhere;
    with several processes every one must call this (the gathering is collective) and only the
    one with `write` writes.
    """
    state = jax.tree.map(to_host, nnx.state(model, nnx.Param).to_pure_dict())
    adapter = None if adapter is None else jax.tree.map(to_host, adapter)
    if not write:
        return
    with atomic_dir(path) as tmp:
        # `rl_steps` only when there were any: an SFT model's card reads as it always has.
        fields = card.model_dump(mode="json", exclude={"rl_steps"} if not card.rl_steps else None)
        (tmp / CONFIG_FILE).write_text(json_text(fields), "utf-8")
        _save_tree(state, tmp / WEIGHTS_DIR)
        if adapter is not None:
            _save_tree(adapter, tmp / ADAPTER_DIR / WEIGHTS_DIR)


def is_model_dir(path: str | Path) -> bool:
    """Whether `path` is a model directory written by `save_model`."""
    path = Path(path)
    return (
        (path / WEIGHTS_DIR).is_dir()
        and (path / CONFIG_FILE).is_file()
        and ("architecture" in (path / CONFIG_FILE).read_text(encoding="utf-8", errors="replace"))
    )


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
    # Restored onto this process's first device, as jax arrays (the mesh comes later, if any).
    device = SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
        nnx.state(abstract, nnx.Param).to_pure_dict(),
    )
    restored = ocp.PyTreeCheckpointer().restore(
        (path / WEIGHTS_DIR).resolve(),
        args=ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target)
        ),
    )
    nnx.replace_by_pure_dict(state, restored)
    return nnx.merge(graphdef, state), card
