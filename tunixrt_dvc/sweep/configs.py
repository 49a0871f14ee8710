"""Runs grouped by config: the same commit and every param the same but the seed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from tunixrt_dvc.errors import InvalidInput, Problem
from tunixrt_dvc.sweep.runs import Run
from tunixrt_dvc.sweep.stats import Summary, summarize

SEED = "seed"
COMMIT = "commit"  # a selector key and a label: the commit a run's code comes from
# What the README reports: the eval stage's after-training scores and the train stage's losses.
HEADLINE = (
    "after.accuracy",
    "after.format_compliance",
    "after.step_accuracy",
    "after.answer_follows_rate",
    "after.accuracy_by_category.add",
    "after.accuracy_by_category.sub",
    "after.accuracy_by_category.mul",
    "after.accuracy_by_category.two_step",
    "eval.loss",
    # With the RL stage on (grpo.steps > 0): the model after RL.
    "rl.accuracy",
    "rl.format_compliance",
    "rl.step_accuracy",
)


@dataclass(frozen=True)
class Config:
    label: str  # the params that set it apart from the other configs, or "all runs"
    runs: tuple[Run, ...]  # ordered by seed

    def values(self, metric: str) -> list[float]:
        return [v for r in self.runs if (v := r.metric(metric)) is not None]

    def summary(self, metric: str) -> Summary | None:
        values = self.values(metric)
        return summarize(values) if values else None


def _key(run: Run) -> str:
    params = {k: v for k, v in run.params.items() if k != SEED}
    return json.dumps([run.commit, params], sort_keys=True, default=str)


def _seed_order(run: Run) -> tuple[int, str]:
    seed = run.params.get(SEED)
    return (0, f"{seed:020d}") if isinstance(seed, int) else (1, str(seed))


def group_by_config(runs: Sequence[Run]) -> list[Config]:
    """One `Config` per commit and distinct set of params but the seed, in the order first seen;
    labelled by what sets it apart (the commit, where runs come from more than one)."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(_key(run), []).append(run)
    firsts = [g[0].params for g in groups.values()]
    keys = sorted({k for p in firsts for k in p if k != SEED})
    varying = [k for k in keys if len({json.dumps(p.get(k), default=str) for p in firsts}) > 1]
    commits = len({g[0].commit for g in groups.values()}) > 1
    out = []
    for members in groups.values():
        first = members[0].params
        parts = [f"{COMMIT}={(members[0].commit or '?')[:7]}"] if commits else []
        parts += [f"{k}={first.get(k)}" for k in varying]
        out.append(Config(", ".join(parts) or "all runs", tuple(sorted(members, key=_seed_order))))
    return out


def parse_selector(text: str) -> dict[str, Any]:
    """`train.steps=2000,format.recipe=answer_only` -> {key: value}, values read as YAML."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key:
            msg = f"expected KEY=VALUE[,KEY=VALUE...], got {part!r}"
            raise InvalidInput([Problem("<selector>", None, text, msg)])
        # A commit is text: YAML would read 0123456 as a number.
        key = key.strip()
        out[key] = value.strip() if key == COMMIT else yaml.safe_load(value)
    return out


def select(runs: Sequence[Run], selector: dict[str, Any]) -> list[Run]:
    """The runs whose params have every value of `selector`; `commit` matches a prefix of the
    run's commit (`commit=1e998f8`)."""

    def matches(run: Run, key: str, value: Any) -> bool:
        if key == COMMIT:
            return bool(run.commit) and run.commit.startswith(str(value))
        return run.params.get(key) == value

    return [r for r in runs if all(matches(r, k, v) for k, v in selector.items())]
