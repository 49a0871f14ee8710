"""Peak host memory (RSS) of a `tunixrt train` process on a CPU, predicted before it starts.

On a CPU the device is the host: the per-device plan (`sft.plan`) is host memory, plus what the
process holds beside the step. Measured with `/usr/bin/time -v` on real `tunixrt train` runs
(docs/benchmarks.md), the peak is the training step's, and it is the sum of:

  runtime     Python with JAX, Tunix, orbax and DVCLive imported, XLA compiling the steps: the
              peak RSS of a tiny default run, whose model is a few MB (`RUNTIME_BYTES`)
  LoRA        what qwix's trace of the model leaves behind when it adds the adapters
  state       the weights (with LoRA: base and adapters) and the optimizer's moments
  step copy   Tunix jits its steps with the model not donated: each step writes a new copy of
              the whole model state and frees the old one afterwards
  step temps  XLA's temporaries of the train step (the plan's activations)
  held        glibc keeps what earlier steps freed (the temporaries of the eval steps the
              trainer runs first and every `eval_every` steps, the earlier copies) in per-thread
              arenas the train step's own buffers do not reuse: measured, once training has
              alternated with evaluation twice, one eval step's temporaries (the plan's eval
              activations) and one more copy of the model state; flat from there on

Loading the weights peaks earlier, and lower on the shapes measured: the checkpoint's pages
(read through mmap), the arrays, and a cast copy of the largest tensor (the embedding). A LoRA
run that merges its adapters into a fresh base at the end (`Adapted.finish(merge_into=...)`)
loads the base once more, on top of what the arenas hold: measured 0.86x the step's peak
(Gemma3 270M at 7f6a3b1, whose train stage merged).
"""

from __future__ import annotations

import ctypes
import gc
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tunixrt_dvc.errors import ResourceError
from tunixrt_dvc.params import Params
from tunixrt_dvc.sft.plan import GIB, MemoryPlan

# Measured on `tunixrt train` (CPU, jax 0.10.2): peak RSS of the tiny default run (0.82-0.85 GiB),
# RSS once everything is imported (0.36-0.39 GiB), and what applying LoRA adds after training's
# other terms (Gemma3 270M and a 6-layer model: 0.25-0.3 GiB).
RUNTIME_BYTES = 0.80 * GIB
IMPORT_BYTES = 0.40 * GIB
LORA_BYTES = 0.25 * GIB

_MEMINFO = Path("/proc/meminfo")
_CGROUP = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class HostMemory:
    """The predicted peak RSS of one training process and its parts, in bytes."""

    devices: int  # the process's devices: every term below is the sum over them
    runtime_bytes: float
    lora_bytes: float
    state_bytes: float  # weights and optimizer state
    copy_bytes: float  # the step's new copy of the model state
    step_bytes: float  # the train step's temporaries
    held_bytes: float  # freed memory the allocator keeps (an eval step's temporaries, a copy)
    load_bytes: float  # the peak while the weights load (reached before training)
    compiled: bool  # temporaries from XLA's analysis; False: analytic upper bounds

    @property
    def train_bytes(self) -> float:
        """The peak during training steps."""
        return (
            self.runtime_bytes
            + self.lora_bytes
            + self.state_bytes
            + self.copy_bytes
            + self.step_bytes
            + self.held_bytes
        )

    @property
    def peak_bytes(self) -> float:
        return max(self.train_bytes, self.load_bytes)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "train_bytes": self.train_bytes, "peak_bytes": self.peak_bytes}

    def describe(self) -> str:
        """The parts, in GiB, for a message."""
        parts = {
            "runtime": self.runtime_bytes,
            "LoRA": self.lora_bytes,
            "weights and optimizer": self.state_bytes,
            "step copy": self.copy_bytes,
            "step temporaries": self.step_bytes,
            "held by the allocator": self.held_bytes,
        }
        return ", ".join(f"{k} {v / GIB:.2f}" for k, v in parts.items() if v)


def checkpoint_bytes(path: str | Path) -> int:
    """Bytes of a checkpoint directory's files (what loading maps into memory)."""
    path = Path(path)
    files = list(path.glob("*.safetensors")) or [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files)


def host_memory(
    plan: MemoryPlan,
    *,
    largest_param_bytes: float,
    lora: bool,
    checkpoint: str | Path | None = None,
    processes: int = 1,
) -> HostMemory:
    """The peak RSS of each of `processes` training processes that share `plan`'s mesh evenly
    (their devices in host memory: fake CPU devices). `largest_param_bytes` is the biggest
    weight (a cast copy of it exists while loading); `checkpoint` is the directory the weights
    load from (None: random init)."""
    n = max(1, plan.mesh["fsdp"] * plan.mesh["tp"] // processes)
    weights = n * plan.weights_bytes
    if checkpoint is not None and Path(checkpoint).is_dir():
        load = IMPORT_BYTES + checkpoint_bytes(checkpoint) + weights + largest_param_bytes
    else:  # random init: the arrays and the initializers' draws
        load = IMPORT_BYTES + 2 * weights
    return HostMemory(
        devices=n,
        runtime_bytes=RUNTIME_BYTES,
        lora_bytes=LORA_BYTES if lora else 0.0,
        state_bytes=weights + n * plan.optimizer_bytes,
        copy_bytes=weights,
        step_bytes=n * plan.activation_bytes,
        held_bytes=n * plan.eval_activation_bytes + weights,
        load_bytes=load,
        compiled=plan.compiled,
    )


def predict(
    params: Params,
    *,
    vocab_size: int | None = None,
    compile: bool = True,
    plan: MemoryPlan | None = None,
    processes: int = 1,
) -> HostMemory:
    """The peak RSS of `tunixrt train` with `params` (see `sft.plan.train_config` for
    `vocab_size`), from `plan` when it is already made; with `processes`, of each of them.

    With `compile=False` nothing is compiled: the temporaries are analytic upper bounds, so the
    figure is too high (a run it accepts fits; one it refuses may fit too)."""
    import jax.numpy as jnp

    from tunixrt_dvc.sft.plan import plan_for, train_config, train_lora

    config = train_config(params, vocab_size=vocab_size)
    if plan is None:
        plan = plan_for(params, vocab_size=vocab_size, compile=compile)
    largest = config.num_embed * config.embed_dim * jnp.dtype(config.param_dtype).itemsize
    return host_memory(
        plan,
        largest_param_bytes=largest,
        lora=train_lora(params) is not None,
        checkpoint=params.model.checkpoint,
        processes=processes,
    )


def _kib_fields(path: Path) -> dict[str, int]:
    """`Key: N kB` lines (/proc/meminfo, /proc/self/status) as bytes."""
    fields = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def available_memory(*, own: bool = True) -> tuple[float, str]:
    """Bytes a process can reach now, and where the figure comes from: with `own`, this
    process's (what it holds already, VmRSS, counts as available to it).

    MemAvailable, not MemTotal: on a shared machine other processes hold part of the memory, and
    MemAvailable counts what the kernel can give without swapping (free memory and the page
    cache it can drop). Under a cgroup v2 memory limit, the limit less the group's usage when
    that is lower."""
    figure, source = float(_kib_fields(_MEMINFO)["MemAvailable"]), "MemAvailable in /proc/meminfo"
    try:
        limit = (_CGROUP / "memory.max").read_text().strip()
        used = int((_CGROUP / "memory.current").read_text())
        if limit != "max" and int(limit) - used < figure:
            figure, source = float(int(limit) - used), "the cgroup's memory.max less memory.current"
    except (OSError, ValueError):
        pass
    if own:
        figure += _kib_fields(Path("/proc/self/status")).get("VmRSS", 0)
        source += " plus this process's RSS"
    return figure, source


def _release_compiler_memory() -> None:
    # The plan's compilations leave freed memory in glibc's arenas; training would start on top
    # of it. Give it back to the system (glibc only; elsewhere nothing to do).
    import jax

    jax.clear_caches()
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def check_fits(
    what: Params | HostMemory,
    available_bytes: float | None = None,
    *,
    vocab_size: int | None = None,
    processes: int = 1,
) -> HostMemory:
    """Refuse a training run whose predicted peak RSS exceeds the memory available (raises
    `ResourceError` with both figures); returns the prediction.

    Given params, the analytic bounds come first (nothing compiled: 0.1 s for the tiny default,
    seconds where qwix traces LoRA adapters); only when they do not fit are the steps compiled
    for XLA's figures (0.5-1.5 min for Gemma3 270M here), so a refusal rests on the compiled
    figures. `vocab_size` is the tokenizer's; `processes` the job's process count (each checks
    its own share of the mesh; processes sharing one machine are not added up).
    `available_bytes` defaults to `available_memory()`. Call it on a CPU backend, before the
    weights load and after `jax.distributed.initialize`.
    """
    if available_bytes is None:
        available_bytes, source = available_memory()
    else:
        source = "given"
    memory = what
    if isinstance(what, Params):
        shape = {"vocab_size": vocab_size, "processes": processes}
        memory = predict(what, compile=False, **shape)
        if memory.peak_bytes > available_bytes:
            memory = predict(what, compile=True, **shape)
            _release_compiler_memory()
    assert isinstance(memory, HostMemory)
    if memory.peak_bytes > available_bytes:
        raise ResourceError(
            f"training needs more memory than this machine has: peak host memory (RSS), "
            f"predicted: {memory.peak_bytes / GIB:.2f} GiB ({memory.describe()}; loading "
            f"{memory.load_bytes / GIB:.2f}), available: {available_bytes / GIB:.2f} GiB "
            f"({source}). Lower train.batch_size, train LoRA adapters (train.lora), or use "
            "a machine with more memory; `tunixrt plan` shows the figures."
        )
    return memory
