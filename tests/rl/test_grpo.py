"""The grpo stage: Tunix's GRPO on real samples of a trained model, rewarded by the scorer;
the stop token is trained on; reruns are bit-identical; a killed run resumes to the same model."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from support import stages
from support.data import small_formatted
from support.params import write_small_params

from tunixrt_dvc.io import sha256_tree
from tunixrt_dvc.model.weights import load_model
from tunixrt_dvc.params import load_params
from tunixrt_dvc.rl.grpo import single_device_mesh
from tunixrt_dvc.rl.prompts import load_prompts, prompt_batches
from tunixrt_dvc.rl.rollout import StopTokenRollout
from tunixrt_dvc.task.reward import COMPONENTS
from tunixrt_dvc.text.chat import END_OF_TURN
from tunixrt_dvc.text.tokenizer import Tokenizer

GRPO = {
    "steps": 6,
    "prompts_per_step": 2,
    "num_generations": 4,
    "max_new_tokens": 96,
    "checkpoint_every": 2,
    "learning_rate": 1e-4,
    "temperature": 0.5,
}
PLOTS = [f"grpo/{n}" for n in ("reward", "kl", "sampled_accuracy", "identical_groups")]


@pytest.fixture(scope="module")
def sft(tmp_path_factory) -> dict[str, Path]:
    """A small data set and a model trained on it long enough to write the work's form."""
    root = tmp_path_factory.mktemp("grpo")
    data = small_formatted(root, n_traces=400)
    train = {"steps": 300, "eval_every": 300, "checkpoint_every": 300}
    params = write_small_params(root / "sft.yaml", {"train": train})
    stages.finish(stages.train(params, data, root / "sft"))
    return {"root": root, "data": data, "model": root / "sft" / "model"}


def _grpo(sft: dict[str, Path], out: Path, **grpo) -> stages.subprocess.Popen:
    params = write_small_params(sft["root"] / f"{out.name}.yaml", {"grpo": {**GRPO, **grpo}})
    return stages.tunixrt(
        "grpo",
        "--params",
        params,
        "--model",
        sft["model"],
        "--data",
        sft["data"],
        "--out",
        out,
        env=stages.env(),
    )


def test_samples_keep_their_stop_token(sft):
    """Tunix's sampler drops the stop token; the rollout puts it back on every sample that
    stopped, so `<end_of_turn>` is in the tokens the policy loss is computed on."""
    from tunix.rl.rollout import base_rollout

    model, _ = load_model(sft["model"])
    tokenizer = Tokenizer.load(sft["data"] / "tokenizer.model")
    prompts = load_prompts(sft["data"] / "train.jsonl", recipe="reasoning_tags")
    batch = next(prompt_batches(prompts, per_step=8, seed=0))
    config = base_rollout.RolloutConfig(
        max_tokens_to_generate=96, max_prompt_length=64, kv_cache_size=160, top_p=1.0
    )
    with single_device_mesh():
        rollout = StopTokenRollout(
            model, tokenizer.sp, None, config, seed=0, stop_id=tokenizer.end_of_turn_id
        )
        out = rollout.generate(list(batch["prompts"]), config)
        again = StopTokenRollout(
            model, tokenizer.sp, None, config, seed=0, stop_id=tokenizer.end_of_turn_id
        ).generate(list(batch["prompts"]), config)
    stopped = [len(t) <= 96 and int(t[-1]) == tokenizer.end_of_turn_id for t in out.tokens]
    assert any(stopped), out.text  # the trained model ends its turns
    for text, tokens, stop in zip(out.text, out.tokens, stopped, strict=True):
        assert text.endswith(END_OF_TURN) == stop
        assert stop or len(tokens) == 96  # a sample without it ran to the length limit
    assert out.text == again.text  # (seed, step) fixes the sampling noise
    assert rollout.step == 1


@pytest.mark.slow
def test_rewards_on_real_samples_reruns_bit_identical_and_resume_after_sigkill(sft):
    root = sft["root"]
    a, b = _grpo(sft, root / "a"), _grpo(sft, root / "b")
    out = stages.finish(a)
    stages.finish(b)
    assert "grpo 6 steps" in out, out
    assert sha256_tree(root / "a" / "model") == sha256_tree(root / "b" / "model")
    assert sha256_tree(root / "a" / "model") != sha256_tree(sft["model"])  # it learnt something
    assert json.loads((root / "a" / "model" / "config.json").read_text())["rl_steps"] == 6
    for name in ["metrics.json", *(f"plots/metrics/{p}.tsv" for p in PLOTS)]:
        assert (root / "a" / name).read_bytes() == (root / "b" / name).read_bytes(), name

    # Rewards of real samples: each step's mean reward is the weighted mean of its parts, and
    # each part is a share in [0, 1].
    weights = load_params(root / "a.yaml").grpo.rewards.model_dump()
    log = (root / "a" / ".resume" / "steps.jsonl").read_text()
    rows = [json.loads(x) for x in log.splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for r in rows:
        parts = {c: r[f"reward_{c}"] for c in COMPONENTS}
        assert all(0.0 <= v <= 1.0 for v in parts.values()), r
        assert r["reward"] == pytest.approx(sum(weights[c] * parts[c] for c in COMPONENTS))
        assert 0.0 <= r["identical_groups"] <= 1.0 and np.isfinite(r["kl"])
    # Some samples are rewarded, not all alike: the policy gets a signal.
    assert any(r["reward"] > 0 for r in rows) and any(r["identical_groups"] < 1 for r in rows)

    # Killed after a checkpoint, rerun: resumes and ends with the uninterrupted run's bytes.
    c = _grpo(sft, root / "c", **{"steps": 6})
    checkpoints = root / "c" / ".resume" / "checkpoints" / "actor"
    deadline = time.monotonic() + 600
    while not (checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())):
        assert c.poll() is None, c.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(c.pid, signal.SIGKILL)
    c.communicate()
    assert not (root / "c" / "model").exists()
    stages.finish(_grpo(sft, root / "c"))
    manifest = json.loads((root / "c" / "run_manifest.json").read_text())
    assert manifest["timings"]["resumed_from_step"] >= 2
    assert sha256_tree(root / "c" / "model") == sha256_tree(root / "a" / "model")
    for name in ["metrics.json", *(f"plots/metrics/{p}.tsv" for p in PLOTS)]:
        assert (root / "c" / name).read_bytes() == (root / "a" / name).read_bytes(), name


def test_zero_steps_passes_the_sft_model_through(sft):
    out = stages.finish(_grpo(sft, sft["root"] / "off", steps=0))
    assert "RL is off" in out
    off = sft["root"] / "off"
    # Nothing is copied: the SFT model's card alone, saying it is that model with no RL.
    assert sorted(p.name for p in (off / "model").iterdir()) == ["config.json"]
    card = json.loads((off / "model" / "config.json").read_text())
    sft_card = json.loads((sft["model"] / "config.json").read_text())
    assert card == {**sft_card, "stored": "base"}  # rl_steps 0 is the default, left out
    assert json.loads((off / "fingerprint.json").read_text())["sft_model_sha256"] == sha256_tree(
        sft["model"]
    )
    assert json.loads((off / "metrics.json").read_text()) == {"step": 0}


@pytest.mark.slow
def test_lora_trains_only_adapters_and_merges(sft):
    lora = {"rank": 4, "alpha": 8.0, "targets": ["q_einsum", "gate_proj"], "quantize": None}
    stages.finish(_grpo(sft, sft["root"] / "lora", steps=3, lora=lora))
    log = (sft["root"] / "lora" / ".resume" / "steps.jsonl").read_text().splitlines()
    # The KL is to the SFT model under the adapters: it moves once the adapters have trained.
    assert any(json.loads(r)["kl"] != 0.0 for r in log[1:]), log
    out = sft["root"] / "lora" / "model"
    # RL's base is the SFT model, no file of its own: its weights are written merged.
    assert (out / "weights").is_dir() and not (out / "adapter").exists()
    card = json.loads((out / "config.json").read_text())
    assert card["adapter"]["rank"] == 4
    merged, _ = load_model(out)
    base, _ = load_model(sft["model"])
    # Only the targeted weights moved (the adapters merged into them).
    changed = {name for name, x, y in _named(merged, base) if not bool(jnp.array_equal(x, y))}
    assert changed and all("q_einsum" in n or "gate_proj" in n for n in changed), changed


def _named(a, b):
    from flax import nnx

    fa = dict(nnx.to_flat_state(nnx.state(a, nnx.Param)))
    fb = dict(nnx.to_flat_state(nnx.state(b, nnx.Param)))
    for k in fa:
        yield "/".join(map(str, k)), fa[k].value, fb[k].value
