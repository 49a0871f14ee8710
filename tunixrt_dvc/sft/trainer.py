"""Supervised fine-tuning with Tunix's `PeftTrainer`: packed batches, completion-only loss.

Read top to bottom: the resume guard, the trainer's config, its input and loss functions and
hooks, the deterministic batch stream, the run, and what it measured.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh
from tunix.sft import peft_trainer, sharding_utils

from tunixrt_dvc.distributed import local_batch, local_rows, shard_model
from tunixrt_dvc.loop.progress import Progress, silence_tunix_bar
from tunixrt_dvc.loop.resume import guard_resume
from tunixrt_dvc.params import TrainParams
from tunixrt_dvc.sft.hooks import BatchTokens, TrainLog
from tunixrt_dvc.sft.inputs import model_inputs
from tunixrt_dvc.sft.loss import make_loss_fn, max_scored
from tunixrt_dvc.sft.matmul import float32_sums
from tunixrt_dvc.sft.optimizer import make_optimizer
from tunixrt_dvc.text.packing import (
    Example,
    batch_stream,
    epoch_batches,
    eval_batches,
    real_token_fraction,
)

if TYPE_CHECKING:
    from dvclive import Live


@dataclass
class TrainResult:
    steps: int
    resumed_from: int
    train_loss_first: float
    train_loss_last: float
    eval_loss_first: float | None
    eval_loss_last: float | None
    real_token_fraction: float  # of the first epoch's batches
    real_tokens_per_s: float  # tokens of examples, padding left out (first step left out too)
    computed_tokens_per_s: float  # rows x seq_len: padding included
    wall_s: float
    train_rows: list[dict]
    eval_rows: list[dict]

    @property
    def tokens_per_s(self) -> float:
        """The computed tokens per second (padding included), under its old name."""
        return self.computed_tokens_per_s


def train(
    model: nnx.Module,
    *,
    train_examples: Sequence[Example],
    val_examples: Sequence[Example],
    params: TrainParams,
    seed: int,
    work_dir: Path,
    fingerprint: dict,
    live: Live | None = None,
    mesh: Mesh | None = None,
) -> TrainResult:
    """Fine-tune `model` in place; resumes from `work_dir` when it holds this run's checkpoint.

    Each step's loss, grad norm and learning rate, and every evaluation, go to `live` (DVCLive)
    as they happen; how far it is goes to stderr (`loop.progress`). On a `mesh`, the model is
    placed by its sharding annotations and each batch is split over the fsdp axis; with several
    processes, each feeds the rows its devices hold and only the first writes files (the log,
    the resume stamp) and shows progress.
    """
    guard_resume(work_dir, fingerprint, name="train")
    with mesh or contextlib.nullcontext():
        if mesh is not None:
            shard_model(model, mesh)
        return _train(model, train_examples, val_examples, params, seed, work_dir, live, mesh)


def _train(
    model: nnx.Module,
    train_examples: Sequence[Example],
    val_examples: Sequence[Example],
    params: TrainParams,
    seed: int,
    work_dir: Path,
    live: Live | None,
    mesh: Mesh | None,
) -> TrainResult:
    main = jax.process_index() == 0
    config = peft_trainer.TrainingConfig(
        eval_every_n_steps=params.eval_every,
        max_steps=params.steps,
        checkpoint_root_directory=str((work_dir / "checkpoints").resolve()),
        checkpointing_options=ocp.CheckpointManagerOptions(
            save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(
                params.checkpoint_every
            ),
            max_to_keep=2,
        ),
        # In-memory metrics only: no TensorBoard files, no W&B, nothing on the network.
        metrics_logging_options=None,
        pbar_description="train",
    )
    trainer = peft_trainer.PeftTrainer(model, make_optimizer(params), config)
    trainer = trainer.with_gen_model_input_fn(model_inputs)
    rows = {"batch_size": params.batch_size, "seq_len": params.seq_len}
    scored = scored_rows(params, train_examples, val_examples, seed=seed)
    trainer = trainer.with_loss_fn(make_loss_fn(params.compute_dtype, scored_rows=scored))
    silence_tunix_bar(trainer)  # ours shows real tokens/s and the compilation
    resumed_from = trainer.train_steps
    progress = Progress("train", params.steps, initial=resumed_from, enabled=main)
    tokens = BatchTokens()
    log = TrainLog(
        work_dir / "steps.jsonl" if main else None,
        resumed_from=resumed_from,
        eval_every=params.eval_every,
        live=live if main else None,
        progress=progress,
        tokens=tokens,
    )
    trainer.with_training_hooks(log.hooks)

    mine = local_rows(mesh, params.batch_size)
    batches = tokens.count(batch_stream(train_examples, seed=seed, **rows))  # the global batch
    stream = (local_batch(b, mine) for b in batches)
    val = [local_batch(b, mine) for b in eval_batches(val_examples, **rows)]
    t0 = time.perf_counter()
    try:
        with float32_sums():  # bfloat16 products as XLA:CPU's fast kernels take them
            trainer.train(stream, val or None)
            if val and trainer.train_steps % params.eval_every:
                note = f"evaluating the final model at step {trainer.train_steps} (compiling)"
                progress.note(note)
                loss = eval_loss(model, val, params.compute_dtype, scored_rows=scored)
                log.final_eval(trainer.train_steps, loss)
    finally:
        log.close()
        progress.close()
    wall = time.perf_counter() - t0

    train_rows, eval_rows = log.rows("train"), log.eval_rows()
    # The first step includes XLA compilation: leave it out of the throughput.
    timed = slice(1, None) if len(log.step_times) > 1 else slice(None)
    seconds = max(sum(log.step_times[timed]), 1e-9)
    real = sum(r for r, _ in log.step_tokens[timed])
    computed = sum(c for _, c in log.step_tokens[timed])
    first_epoch = epoch_batches(train_examples, seed=seed, epoch=0, **rows)
    return TrainResult(
        steps=trainer.train_steps,
        resumed_from=resumed_from,
        train_loss_first=train_rows[0]["loss"],
        train_loss_last=train_rows[-1]["loss"],
        eval_loss_first=eval_rows[0]["eval_loss"] if eval_rows else None,
        eval_loss_last=eval_rows[-1]["eval_loss"] if eval_rows else None,
        real_token_fraction=real_token_fraction(first_epoch),
        real_tokens_per_s=real / seconds,
        computed_tokens_per_s=computed / seconds,
        wall_s=wall,
        train_rows=train_rows,
        eval_rows=eval_rows,
    )


def scored_rows(
    params: TrainParams,
    train_examples: Sequence[Example],
    val_examples: Sequence[Example],
    *,
    seed: int,
) -> int | None:
    """With `logits: scored`, the most positions any batch of the run scores (its train steps'
    batches and the validation batches, all known before it starts); else None."""
    if params.logits == "all":
        return None
    rows = {"batch_size": params.batch_size, "seq_len": params.seq_len}
    run = itertools.islice(batch_stream(train_examples, seed=seed, **rows), params.steps)
    return max_scored(itertools.chain(run, eval_batches(val_examples, **rows)))


def eval_loss(
    model: nnx.Module,
    batches: Sequence[dict],
    compute_dtype: str | None,
    *,
    scored_rows: int | None = None,
) -> float:
    """Mean completion-only loss over batches, with the loss function the run trains with.

    Under a mesh, each batch is this process's rows, assembled into the global batch as Tunix's
    own evaluation does.
    """
    loss_fn = make_loss_fn(compute_dtype, scored_rows=scored_rows)
    step = nnx.jit(lambda m, b: loss_fn(m, **model_inputs(b)))
    batches = [sharding_utils.shard_input(b, ("fsdp",)) for b in batches]
    return float(np.mean([float(step(model, b)) for b in batches]))
