"""Per-step metrics: a JSONL log that survives a kill, forwarded to DVCLive as training goes.

The log is the record: a resumed run replays its rows up to the step it resumes from, so DVCLive's
files (metrics and plots, which `dvc exp show` reads while a run goes on) come out byte for byte
as an uninterrupted run writes them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tunix.sft.hooks as hooks

if TYPE_CHECKING:
    from dvclive import Live

# DVCLive metric names per kind of row, and the row key each is read from.
TRAIN_METRICS = {"train/loss": "loss", "train/grad_norm": "grad_norm", "train/lr": "learning_rate"}
EVAL_METRICS = {"eval/loss": "eval_loss"}


class StepLog:
    """Tunix training hooks that log each step and each scheduled evaluation."""

    def __init__(self, path: Path | None, *, resumed_from: int, eval_every: int, live: Live | None):
        """`path` None keeps the log in memory (a process other than the first of a job)."""
        self.path = path
        self.eval_every = eval_every
        self.live = live
        self._logged_evals: set[int] = set()
        self._final: int | None = None
        rows = []
        if path is not None and path.exists() and resumed_from:
            logged = map(json.loads, path.read_text().splitlines())
            rows = [r for r in logged if r["step"] <= resumed_from]
        self._rows: list[dict[str, Any]] = rows
        if path is not None:
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        replayed: set[tuple[str, int]] = set()
        for r in list(rows):  # in the order they were logged, as DVCLive first saw them
            if (r["kind"], r["step"]) not in replayed:
                replayed.add((r["kind"], r["step"]))
                if r["kind"] == "train":
                    self._to_live(r["step"], r, TRAIN_METRICS)
                else:
                    self._eval_to_live(r)
        self._file = None if path is None else open(path, "a", buffering=1)  # noqa: SIM115
        self._t = time.perf_counter()
        self.step_times: list[float] = []
        self.hooks = _Hooks(self)

    def _append(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        if self._file is not None:
            self._file.write(json.dumps(row) + "\n")

    def _to_live(self, step: int, row: dict[str, Any], names: dict[str, str]) -> None:
        if self.live is None:
            return
        self.live.step = step
        for name, key in names.items():
            if key in row:
                self.live.log_metric(name, row[key])
        self.live.make_summary()

    def _eval_to_live(self, row: dict[str, Any]) -> None:
        # Tunix also evaluates on entry, so a resumed run evaluates again at the step it resumed
        # from: only the scheduled evaluations count, once each.
        if row["step"] % self.eval_every == 0 and row["step"] not in self._logged_evals:
            self._logged_evals.add(row["step"])
            self._to_live(row["step"], row, EVAL_METRICS)

    def log_train(self, row: dict[str, Any]) -> None:
        self._append({"kind": "train", **row})
        self._to_live(row["step"], row, TRAIN_METRICS)

    def log_eval(self, row: dict[str, Any]) -> None:
        self._append({"kind": "eval", **row})
        self._eval_to_live(row)

    def final_eval(self, step: int, eval_loss: float) -> None:
        """The evaluation of the final model (Tunix evaluates every `eval_every` steps only)."""
        row = {"step": step, "eval_loss": eval_loss}
        self._append({"kind": "eval", **row})
        self._final = step
        self._logged_evals.add(step)
        self._to_live(step, row, EVAL_METRICS)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def rows(self, kind: str) -> list[dict[str, Any]]:
        """The last row per step (a resumed run logs the replayed steps again, identically)."""
        by_step: dict[int, dict] = {}
        for r in self._rows:
            if r["kind"] == kind:
                by_step[r["step"]] = {k: v for k, v in r.items() if k != "kind"}
        return [by_step[s] for s in sorted(by_step)]

    def eval_rows(self) -> list[dict[str, Any]]:
        """The scheduled evaluations and the final one, as an uninterrupted run has them."""
        every, final = self.eval_every, self._final
        return [r for r in self.rows("eval") if r["step"] % every == 0 or r["step"] == final]


class _Hooks(hooks.TrainingHooks):
    def __init__(self, log: StepLog):
        self.log = log

    def on_train_start(self, train_ctx) -> None:
        self.log._t = time.perf_counter()

    def on_train_end(self, train_ctx) -> None:
        pass

    def on_train_step_start(self, train_ctx) -> None:
        pass

    def on_train_step_end(self, train_ctx, train_step, train_loss) -> None:
        now = time.perf_counter()
        self.log.step_times.append(now - self.log._t)
        self.log._t = now
        hist = train_ctx.metrics_logger
        row = {"step": int(train_step), "loss": float(train_loss)}
        for name in ("grad_norm", "learning_rate"):
            if hist.metric_exists("", name, "train"):
                row[name] = float(hist.get_metric_history("", name, "train")[-1])
        self.log.log_train(row)

    def on_eval_step_start(self, train_ctx) -> None:
        pass

    def on_eval_step_end(self, train_ctx, eval_loss) -> None:
        hist = train_ctx.metrics_logger
        loss = float(hist.get_metric_history("", "loss", "eval")[-1])
        self.log.log_eval({"step": int(train_ctx.train_steps), "eval_loss": loss})
