"""SFT's per-step log: each step's loss, grad norm and learning rate, and each evaluation, from
Tunix's training hooks into the loop's `StepLog` (a JSONL file and DVCLive); the same hooks
report progress (`loop.progress`) and count each step's real tokens."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tunixrt_dvc.loop.hooks import Hooks
from tunixrt_dvc.loop.progress import Progress
from tunixrt_dvc.loop.steplog import StepLog

if TYPE_CHECKING:
    from dvclive import Live

# DVCLive metric names per kind of row, and the row key each is read from.
TRAIN_METRICS = {"train/loss": "loss", "train/grad_norm": "grad_norm", "train/lr": "learning_rate"}
EVAL_METRICS = {"eval/loss": "eval_loss"}


class BatchTokens:
    """The real (non-padding) and computed tokens of each packed batch the trainer draws.

    Tunix draws the batch of step n as the stream's n-th (a resumed run draws and skips the
    steps it has done), so `of_step(n)` is that batch's count.
    """

    def __init__(self) -> None:
        self._counts: list[tuple[int, int]] = []

    def count(self, batches: Iterable[dict[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
        for b in batches:
            seg = b["segment_ids"]
            self._counts.append((int(np.count_nonzero(seg)), int(seg.size)))
            yield b

    def of_step(self, step: int) -> tuple[int, int]:
        """(real, computed) tokens of step `step` (1-based); (0, 0) if it was never drawn."""
        return self._counts[step - 1] if 0 < step <= len(self._counts) else (0, 0)


class TrainLog(StepLog):
    """The step log of SFT: `train` rows per step, `eval` rows per scheduled evaluation.

    `progress` is shown as the steps go, with each step's tokens from `tokens`; `step_times`
    and `step_tokens` (real, computed) are this run's, one per step, in order.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        resumed_from: int,
        eval_every: int,
        live: Live | None,
        progress: Progress | None = None,
        tokens: BatchTokens | None = None,
    ):
        self.eval_every = eval_every
        self._logged_evals: set[int] = set()
        self._final: int | None = None
        self.step_times: list[float] = []
        self.step_tokens: list[tuple[int, int]] = []
        self.progress = progress or Progress("train", 0, enabled=False)
        self.tokens = tokens or BatchTokens()
        self._t = time.perf_counter()
        metrics = {"train": TRAIN_METRICS, "eval": EVAL_METRICS}
        super().__init__(path, resumed_from=resumed_from, live=live, metrics=metrics)
        self.hooks = _Hooks(self)

    def forward(self, row: dict[str, Any]) -> None:
        # Tunix also evaluates on entry, so a resumed run evaluates again at the step it resumed
        # from: only the scheduled evaluations count, once each.
        if row["kind"] == "eval":
            if row["step"] % self.eval_every or row["step"] in self._logged_evals:
                return
            self._logged_evals.add(row["step"])
        super().forward(row)

    def final_eval(self, step: int, eval_loss: float) -> None:
        """The evaluation of the final model (Tunix evaluates every `eval_every` steps only)."""
        row = {"step": step, "eval_loss": eval_loss}
        self.append("eval", row)
        self.progress.note(f"eval loss {eval_loss:.4g} at step {step}")
        self._final = step
        self._logged_evals.add(step)
        self.to_live(step, row, EVAL_METRICS)

    def eval_rows(self) -> list[dict[str, Any]]:
        """The scheduled evaluations and the final one, as an uninterrupted run has them."""
        every, final = self.eval_every, self._final
        return [r for r in self.rows("eval") if r["step"] % every == 0 or r["step"] == final]


class _Hooks(Hooks):
    def __init__(self, log: TrainLog):
        self.log = log
        self._starts = 0
        self._evaluated = False

    def on_train_start(self, train_ctx) -> None:
        self.log._t = time.perf_counter()

    def on_train_step_start(self, train_ctx) -> None:
        # The first step's call compiles it; the second step starts once that call returned.
        self._starts += 1
        if self._starts == 1:
            self.log.progress.compiling()
        elif self._starts == 2:
            self.log.progress.compiled()

    def on_train_step_end(self, train_ctx, train_step, train_loss) -> None:
        now = time.perf_counter()
        self.log.step_times.append(now - self.log._t)
        self.log._t = now
        hist = train_ctx.metrics_logger
        row = {"step": int(train_step), "loss": float(train_loss)}
        for name in ("grad_norm", "learning_rate"):
            if hist.metric_exists("", name, "train"):
                row[name] = float(hist.get_metric_history("", name, "train")[-1])
        self.log.log("train", row)
        real, computed = self.log.tokens.of_step(row["step"])
        self.log.step_tokens.append((real, computed))
        self.log.progress.update(1, real=real, computed=computed, loss=row["loss"])

    def on_eval_step_start(self, train_ctx) -> None:
        if not self._evaluated:  # Tunix evaluates before the first step: say why it waits
            self._evaluated = True
            self.log.progress.note(f"evaluating at step {int(train_ctx.train_steps)} (compiling)")

    def on_eval_step_end(self, train_ctx, eval_loss) -> None:
        hist = train_ctx.metrics_logger
        loss = float(hist.get_metric_history("", "loss", "eval")[-1])
        self.log.log("eval", {"step": int(train_ctx.train_steps), "eval_loss": loss})
        self.log.progress.note(f"eval loss {loss:.4g} at step {int(train_ctx.train_steps)}")
