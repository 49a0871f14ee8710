"""GRPO with Tunix's `GRPOLearner` on an `RLCluster`: sample groups, reward them, update.

Read top to bottom: the resume guard, the cluster (actor, reference, rollout on one mesh), the
reward and the per-step metrics (both from the eval's scorer), the seeded prompt stream from the
step a checkpoint left off, the run, and what it measured.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import AxisType, Mesh
from tunix.rl import rl_cluster as rl_cluster_lib
from tunix.rl.grpo import grpo_learner
from tunix.rl.rollout import base_rollout

from tunixrt_dvc.distributed import AXES
from tunixrt_dvc.loop.hooks import Hooks
from tunixrt_dvc.loop.progress import Progress, silence_tunix_bar
from tunixrt_dvc.loop.resume import guard_resume
from tunixrt_dvc.loop.steplog import StepLog
from tunixrt_dvc.params import GrpoParams
from tunixrt_dvc.rl.prompts import RLPrompt, prompt_batches
from tunixrt_dvc.rl.rollout import StopTokenRollout
from tunixrt_dvc.task.reward import COMPONENTS, reward_components, weighted_reward
from tunixrt_dvc.task.scoring import score_item
from tunixrt_dvc.text.chat import END_OF_TURN
from tunixrt_dvc.text.recipes import get_recipe
from tunixrt_dvc.text.tokenizer import Tokenizer

if TYPE_CHECKING:
    from dvclive import Live

# DVCLive metric name -> the per-step row key it is read from.
METRICS = {
    "grpo/reward": "reward",
    **{f"grpo/reward_{c}": f"reward_{c}" for c in COMPONENTS},
    "grpo/kl": "kl",
    "grpo/sampled_accuracy": "sampled_accuracy",
    "grpo/identical_groups": "identical_groups",
    "grpo/completion_tokens": "completion_tokens",
}


@dataclass
class GrpoResult:
    model: nnx.Module  # the trained policy (Tunix trains its own copy of the actor)
    steps: int
    resumed_from: int
    rows: list[dict[str, Any]]
    wall_s: float
    timings: dict[str, float] = field(default_factory=dict)  # mean seconds per step, by part
    # Tokens of the samples (prompt + completion) per second, after the first step (None if
    # it was the only one): padding left out, or (computed) each sample's full padded length.
    real_tokens_per_s: float | None = None
    computed_tokens_per_s: float | None = None


def _bucket(n: int) -> int:
    return max(16, math.ceil(n / 16) * 16)


class _Scorer:
    """Scores every sample once per step; the reward and the metrics both read it."""

    def __init__(self, recipe: str, weights: dict[str, float], group: int):
        self.parse, self.weights, self.group = get_recipe(recipe).parse, weights, group
        self.last: list[dict[str, float]] = []

    def components(self, completions: Sequence[str], expected: Sequence[str]) -> list[dict]:
        out = []
        for text, answer in zip(completions, expected, strict=True):
            item = RLPrompt(id="", prompt="", expected_answer=answer)
            scored = score_item(item=item, generation=text, parsed=self.parse(text), gen_tokens=0)
            out.append(reward_components(scored, stopped=text.endswith(END_OF_TURN)))
        return out

    def reward(self, prompts, completions, expected_answer, **_) -> list[float]:
        self.last = self.components(completions, expected_answer)
        return [weighted_reward(c, self.weights) for c in self.last]

    def metrics(self, prompts, completions, rewards, advantages, **_) -> dict:
        groups = np.asarray(rewards, np.float64).reshape(-1, self.group)
        row = {f"reward_{c}": float(np.mean([x[c] for x in self.last])) for c in COMPONENTS}
        row["sampled_accuracy"] = row["reward_correct"]
        row["identical_groups"] = float(np.mean(groups.max(1) == groups.min(1)))
        return {f"tunixrt/{k}": (v, np.mean) for k, v in row.items()}


class _StepRows:
    """One `grpo` row per step in the step log, put together from two events that Tunix raises in
    either order: its metrics buffer (rewards, lengths, ours) and the end of the policy update
    (the KL, the clock). Each row also advances `progress`, with the step's sample tokens:
    `prompt_tokens(prompt)` (BOS included) plus the completions', of `row_tokens` computed each.
    """

    def __init__(
        self,
        log: StepLog,
        *,
        resumed_from: int,
        progress: Progress | None = None,
        prompt_tokens: Callable[[str], int] = lambda _: 0,
        row_tokens: int = 0,
    ):
        self.log = log
        self.next = self.first = resumed_from + 1
        self.parts: dict[int, dict[str, Any]] = {}
        self.step_seconds: list[float] = []
        self._clock = time.perf_counter()
        self.progress = progress or Progress("grpo", 0, enabled=False)
        self.prompt_tokens, self.row_tokens = prompt_tokens, row_tokens
        self.tokens: dict[int, tuple[int, int]] = {}  # step -> (real, computed): not in the log

    def _add(self, step: int, part: dict[str, Any]) -> None:
        self.parts.setdefault(step, {}).update(part)
        while {"reward", "kl"} <= self.parts.get(self.next, {}).keys():
            row = {"step": self.next, **self.parts.pop(self.next)}
            self.log.log("grpo", row)
            real, computed = self.tokens.pop(self.next, (0, 0))
            self.progress.update(1, real=real, computed=computed, reward=row["reward"])
            self.next += 1

    def from_buffer(self, buffer: rl_cluster_lib.MetricsBuffer) -> None:
        """Tunix's metrics buffer of a step (train mode): its reward mean and lengths, ours."""
        if str(buffer.mode) != str(rl_cluster_lib.Mode.TRAIN):
            return
        m = {k: float(np.mean(v)) for k, v in _scalars(buffer)}
        if "rewards/score/mean" not in m:
            return
        part = {"reward": m["rewards/score/mean"]}
        part |= {k.split("/", 1)[1]: v for k, v in m.items() if k.startswith("tunixrt/")}
        part["completion_tokens"] = m["completions/mean_length"]
        step = int(buffer.global_steps) + 1
        calls = buffer.metrics.get("prompts", ([], None))[0]  # a list of prompts per rollout
        prompts = [p for c in calls for p in ([c] if isinstance(c, str) else c)]
        completions = round(m["completions/mean_length"] * len(prompts))
        real = sum(self.prompt_tokens(str(p)) for p in prompts) + completions
        self.tokens[step] = (real, len(prompts) * self.row_tokens)
        self._add(step, part)

    def step_end(self, kls: Sequence[float]) -> None:
        """After a policy update: `kls` is the KL of every update this process made, in order
        (Tunix reports an update late, so step numbers come from the count, not the event)."""
        now = time.perf_counter()
        self.step_seconds.append(now - self._clock)
        self._clock = now
        for i, kl in enumerate(kls):
            step = self.first + i
            if step >= self.next and "kl" not in self.parts.get(step, {}):
                self._add(step, {"kl": float(kl)})


class _Cluster(rl_cluster_lib.RLCluster):
    """Tunix's RL cluster, timing the reference model's log-probs (results made ready)."""

    reference_seconds: list[float]

    def get_ref_per_token_logps(self, *args, **kwargs) -> jax.Array:
        t0 = time.perf_counter()
        out = jax.block_until_ready(super().get_ref_per_token_logps(*args, **kwargs))
        self.reference_seconds.append(time.perf_counter() - t0)
        return out


class _AfterStep(Hooks):
    def __init__(self, fn):
        self.fn = fn

    def on_train_step_end(self, train_ctx, train_step, train_loss) -> None:
        self.fn()


def _scalars(buffer) -> Iterator[tuple[str, float]]:
    for k, (v, _) in buffer.metrics.items():
        arr = np.asarray(v)
        if arr.dtype.kind in "fiub" and arr.size:
            yield k, float(np.mean(arr))


def single_device_mesh() -> Mesh:
    return jax.make_mesh((1, 1), AXES, axis_types=(AxisType.Auto,) * 2)


def grpo(
    actor: nnx.Module,
    *,
    reference: nnx.Module,
    tokenizer: Tokenizer,
    prompts: Sequence[RLPrompt],
    recipe: str,
    params: GrpoParams,
    seed: int,
    work_dir: Path,
    fingerprint: dict,
    live: Live | None = None,
    mesh: Mesh | None = None,
) -> GrpoResult:
    """Train a copy of `actor` with GRPO for `params.steps` steps (the result's `model`); resumes
    from `work_dir` when it holds this run's checkpoint. `reference` is the frozen SFT model the
    KL is measured to (with LoRA, the base the actor's adapters sit on)."""
    guard_resume(work_dir, fingerprint, name="grpo")
    mesh = mesh or single_device_mesh()
    max_prompt = _bucket(max(len(tokenizer.encode(p.prompt)) + 1 for p in prompts))
    rollout = base_rollout.RolloutConfig(
        max_tokens_to_generate=params.max_new_tokens,
        max_prompt_length=max_prompt,
        kv_cache_size=max_prompt + params.max_new_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
    )
    optimizer = optax.chain(
        optax.clip_by_global_norm(params.grad_clip), optax.adamw(params.learning_rate)
    )
    training = rl_cluster_lib.RLTrainingConfig(
        actor_optimizer=optimizer,
        eval_every_n_steps=params.steps + 1,
        max_steps=params.steps,
        checkpoint_root_directory=str((work_dir / "checkpoints").resolve()),
        checkpointing_options=ocp.CheckpointManagerOptions(
            save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(
                params.checkpoint_every
            ),
            max_to_keep=2,
        ),
        metrics_logging_options=None,
        pbar_description="grpo",
    )
    rollout_seconds: list[float] = []
    engine = functools.partial(
        StopTokenRollout, seed=seed, stop_id=tokenizer.end_of_turn_id, seconds=rollout_seconds
    )
    roles = rl_cluster_lib.Role
    cluster = _Cluster(
        actor=actor,
        reference=reference,
        tokenizer=tokenizer.sp,
        cluster_config=rl_cluster_lib.ClusterConfig(
            role_to_mesh={roles.ACTOR: mesh, roles.REFERENCE: mesh, roles.ROLLOUT: mesh},
            rollout_engine=engine,
            training_config=training,
            rollout_config=rollout,
        ),
    )
    scorer = _Scorer(recipe, params.rewards.model_dump(), params.num_generations)
    learner = grpo_learner.GRPOLearner(
        rl_cluster=cluster,
        algo_config=grpo_learner.GRPOConfig(
            num_generations=params.num_generations, beta=params.beta, epsilon=params.epsilon
        ),
        reward_fns=[scorer.reward],
        metric_fns=[scorer.metrics],
    )
    cluster.reference_seconds = []
    resumed_from = int(cluster.actor_trainer.train_steps)
    cluster.rollout.step = resumed_from
    log = StepLog(
        work_dir / "steps.jsonl" if jax.process_index() == 0 else None,
        resumed_from=resumed_from,
        live=live,
        metrics={"grpo": METRICS},
    )
    progress = Progress(
        "grpo", params.steps, initial=resumed_from, enabled=jax.process_index() == 0
    )
    steps = _StepRows(
        log,
        resumed_from=resumed_from,
        progress=progress,
        prompt_tokens=functools.cache(lambda p: len(tokenizer.encode(p)) + 1),  # + BOS
        row_tokens=max_prompt + params.max_new_tokens,
    )
    cluster.with_external_metrics_logger(steps.from_buffer)

    def after_step() -> None:
        hist = cluster.actor_trainer.metrics_logger
        if hist.metric_exists("actor", "kl", "train"):
            steps.step_end(hist.get_metric_history("actor", "kl", "train"))
        else:  # beta 0: Tunix computes no KL
            steps.step_end([0.0] * (int(cluster.actor_trainer.train_steps) - resumed_from))

    cluster.actor_trainer.with_training_hooks(_AfterStep(after_step))
    silence_tunix_bar(cluster.actor_trainer)  # ours shows reward, real tokens/s, compilation
    batches = prompt_batches(prompts, per_step=params.prompts_per_step, seed=seed)
    t0 = time.perf_counter()
    try:
        with mesh:
            if resumed_from < params.steps:
                progress.compiling()  # the first step compiles the rollout, reference, update
                learner.train(batches)
        after_step()  # Tunix reports the last update only at the end
    finally:
        log.close()
        progress.close()
    wall = time.perf_counter() - t0
    seconds = {
        "step_s": steps.step_seconds,
        "rollout_s": rollout_seconds,
        "reference_s": cluster.reference_seconds,
    }
    # The first step compiles: leave it out; the update is the rest of a step.
    timings = {k: float(np.mean(v[1:])) for k, v in seconds.items() if len(v) > 1}
    if {"step_s", "rollout_s"} <= timings.keys():
        timings["update_s"] = (
            timings["step_s"] - timings["rollout_s"] - timings.get("reference_s", 0.0)
        )
    return GrpoResult(
        model=cluster.actor_trainer.model,
        steps=int(cluster.actor_trainer.train_steps),
        resumed_from=resumed_from,
        rows=log.rows("grpo"),
        wall_s=wall,
        timings=timings,
        real_tokens_per_s=rates[0] if (rates := progress.rates()) else None,
        computed_tokens_per_s=rates[1] if rates else None,
    )
