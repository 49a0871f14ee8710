"""Tunix's vanilla rollout, with the two things GRPO here needs that it does not do.

- The stop token stays in the sample. Tunix's Sampler cuts every completion before its stop
  token, so `<end_of_turn>` never enters the policy loss and RL could unlearn stopping; here it
  is put back on every completion that stopped (text and tokens).
- A fresh, seeded key per step. With `RolloutConfig.seed` fixed, every step reuses the same
  sampling noise; here the key is (seed, step), and a resumed run goes on from its step.

It also records how long each rollout took (results made ready), for the step's breakdown.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from tunix.rl.rollout import base_rollout, vanilla_rollout

from tunixrt_dvc.text.chat import END_OF_TURN


class StopTokenRollout(vanilla_rollout.VanillaRollout):
    """Pass as `ClusterConfig.rollout_engine` via `functools.partial(StopTokenRollout, seed=...,
    stop_id=..., seconds=[])`; Tunix calls it with the model, tokenizer, mesh and config. Each
    call's wall time is appended to `seconds`."""

    def __init__(
        self,
        rollout_actor: nnx.Module,
        tokenizer: Any,
        mesh: Mesh,
        rollout_config: base_rollout.RolloutConfig,
        *,
        seed: int,
        stop_id: int,
        seconds: list[float] | None = None,
    ):
        config = rollout_actor.config
        super().__init__(
            rollout_actor,
            tokenizer,
            base_rollout.CacheConfig(
                cache_size=rollout_config.kv_cache_size,
                num_layers=config.num_layers,
                num_kv_heads=config.num_kv_heads,
                head_dim=config.head_dim,
            ),
        )
        self.seed, self.stop_id, self.step = seed, stop_id, 0
        self.seconds = [] if seconds is None else seconds

    def generate(
        self, prompts: list[str], rollout_config: base_rollout.RolloutConfig, **kwargs
    ) -> base_rollout.RolloutOutput:
        # Only the stop token ends a sample, so a shortened one is known to have stopped on it.
        config = dataclasses.replace(
            rollout_config,
            seed=int(np.random.default_rng([self.seed, self.step]).integers(2**31)),
            eos_tokens=[self.stop_id],
        )
        self.step += 1
        t0 = time.perf_counter()
        out = jax.block_until_ready(super().generate(prompts, config, **kwargs))
        self.seconds.append(time.perf_counter() - t0)
        limit = config.max_tokens_to_generate
        stopped = [len(t) < limit for t in out.tokens]
        return dataclasses.replace(
            out,
            text=[t + END_OF_TURN if s else t for t, s in zip(out.text, stopped, strict=True)],
            tokens=[
                np.append(np.asarray(t), self.stop_id).astype(np.asarray(t).dtype) if s else t
                for t, s in zip(out.tokens, stopped, strict=True)
            ],
        )
