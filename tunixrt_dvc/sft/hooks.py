"""SFT's per-step log: each step's loss, grad norm and learning rate, and each evaluation, from
Tunix's training hooks into the loop's `StepLog` (a JSONL file and DVCLive)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunixrt_dvc.loop.hooks import Hooks
from tunixrt_dvc.loop.steplog import StepLog

if TYPE_CHECKING:
    from dvclive import Live

# DVCLive metric names per kind of row, and the row key each is read from.
TRAIN_METRICS = {"train/loss": "loss", "train/grad_norm": "grad_norm", "train/lr": "learning_rate"}
EVAL_METRICS = {"eval/loss": "eval_loss"}


class TrainLog(StepLog):
    """The step log of SFT: `train` rows per step, `eval` rows per scheduled evaluation."""

    def __init__(self, path: Path | None, *, resumed_from: int, eval_every: int, live: Live | None):
        self.eval_every = eval_every
        self._logged_evals: set[int] = set()
        self._final: int | None = None
        self.step_times: list[float] = []
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

    def on_train_start(self, train_ctx) -> None:
        self.log._t = time.perf_counter()

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

    def on_eval_step_end(self, train_ctx, eval_loss) -> None:
        hist = train_ctx.metrics_logger
        loss = float(hist.get_metric_history("", "loss", "eval")[-1])
        self.log.log("eval", {"step": int(train_ctx.train_steps), "eval_loss": loss})
