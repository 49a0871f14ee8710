"""GRPO says how far it is: step, reward, the samples' real tokens per second and their padding,
from the same two Tunix events its step rows come from, without changing the rows."""

from __future__ import annotations

import io

import numpy as np
import pytest
from tunix.rl import rl_cluster as rl_cluster_lib

from tunixrt_dvc.loop import progress
from tunixrt_dvc.loop.steplog import StepLog
from tunixrt_dvc.rl.grpo import METRICS, _StepRows


def buffer(step: int, prompts: list[str], reward: float, mean_length: float):
    """Tunix's metrics buffer of a step, as GRPO fills it (one rollout of G samples a prompt)."""
    out = rl_cluster_lib.MetricsBuffer(global_steps=step, mode=str(rl_cluster_lib.Mode.TRAIN))
    out.metrics = {
        "prompts": ([prompts], None),
        "completions": (["x"] * len(prompts), None),
        "rewards/score/mean": ([reward], np.mean),
        "completions/mean_length": ([mean_length], np.mean),
    }
    return out


def test_each_step_row_advances_progress_with_its_sample_tokens(monkeypatch):
    monkeypatch.setattr(progress, "INTERVAL_S", 1e-3)
    log = StepLog(None, resumed_from=0, live=None, metrics={"grpo": METRICS})
    out = io.StringIO()
    shown = progress.Progress("grpo", 2, stream=out)
    rows = _StepRows(log, resumed_from=0, progress=shown, prompt_tokens=len, row_tokens=32)

    rows.from_buffer(buffer(0, ["ab", "ab", "cde", "cde"], 0.5, 10.0))  # 10 + 40 tokens
    rows.step_end([0.01])
    rows.from_buffer(buffer(1, ["f", "f", "gh", "gh"], 0.25, 6.0))  # 6 + 24 tokens
    rows.step_end([0.01, 0.02])
    shown.close()

    assert log.rows("grpo") == [
        {"step": 1, "reward": 0.5, "completion_tokens": 10.0, "kl": 0.01},
        {"step": 2, "reward": 0.25, "completion_tokens": 6.0, "kl": 0.02},
    ]
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("grpo: step 1/2 (50%) | reward 0.5 | pad 60.9% | ETA ?"), lines
    assert lines[-1].startswith("grpo: step 2/2 (100%) | reward 0.25 | "), lines
    assert f"real tok/s | pad {1 - 80 / 256:.1%} | ETA 0s | elapsed" in lines[-1]
    real, computed = shown.rates()  # the second step: the first compiles
    assert real / computed == pytest.approx(30 / 128)
