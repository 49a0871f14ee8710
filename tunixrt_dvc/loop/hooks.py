"""Tunix's training hooks with every event a no-op: a loop overrides the events it needs."""

from __future__ import annotations

import tunix.sft.hooks as hooks


class Hooks(hooks.TrainingHooks):
    def on_train_start(self, train_ctx) -> None:
        pass

    def on_train_end(self, train_ctx) -> None:
        pass

    def on_train_step_start(self, train_ctx) -> None:
        pass

    def on_train_step_end(self, train_ctx, train_step, train_loss) -> None:
        pass

    def on_eval_step_start(self, train_ctx) -> None:
        pass

    def on_eval_step_end(self, train_ctx, eval_loss) -> None:
        pass
