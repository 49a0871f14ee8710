"""AdamW with linear warmup, cosine decay and global-norm clipping; the lr visible to Tunix."""

from __future__ import annotations

import optax

from tunixrt_dvc.params import TrainParams


def make_optimizer(p: TrainParams) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=p.learning_rate,
        warmup_steps=min(p.warmup_steps, p.steps),
        decay_steps=max(p.steps, p.warmup_steps + 1),
        end_value=p.learning_rate * 0.05,
    )

    def adamw_clipped(learning_rate, weight_decay, max_norm):
        return optax.chain(
            optax.clip_by_global_norm(max_norm),
            optax.adamw(learning_rate, b1=0.9, b2=0.98, weight_decay=weight_decay),
        )

    # inject_hyperparams makes the learning rate part of the state, where Tunix logs it from.
    return optax.inject_hyperparams(adamw_clipped, static_args=("max_norm",))(
        learning_rate=schedule, weight_decay=p.weight_decay, max_norm=p.grad_clip
    )
