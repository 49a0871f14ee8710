"""A real checkpoint (here: a small model exported as a Hugging Face directory, as real Gemma
weights come) through the stages: LoRA outputs are the adapter and the base's hash, a moved clone
with a moved checkpoint evaluates, a different checkpoint is refused, 0 steps scores the base,
and a stage DVC runs refuses a checkpoint that is not among its deps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support import stages
from support.checkpoints import write_hf_checkpoint
from support.data import small_formatted
from support.params import REPO, write_small_params

from tunixrt_dvc.io import sha256_tree

EVAL = {"limit": 6, "max_new_tokens": 24, "batch_size": 6}
LORA = {
    "rank": 4,
    "alpha": 8.0,
    "targets": ["q_einsum", "kv_einsum", "attn_vec_einsum", "gate_proj", "up_proj", "down_proj"],
    "quantize": None,
}


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("real")
    data = small_formatted(root, n_traces=400)
    hf = write_hf_checkpoint(
        root / "hf", tokenizer=data / "tokenizer.model", params=root / "params.yaml"
    )
    return {"root": root, "data": data, "hf": hf}


def _params(path: Path, checkpoint: Path, **train) -> Path:
    return write_small_params(
        path,
        {
            "model": {"checkpoint": str(checkpoint)},
            "format": {"tokenizer": str(checkpoint / "tokenizer.model")},
            "train": {"steps": 6, "eval_every": 3, **train},
            "eval": EVAL,
        },
    )


def _eval(params: Path, data: Path, model: Path, out: Path, **popen) -> stages.subprocess.Popen:
    return stages.tunixrt(
        "eval", "--params", params, "--model", model, "--rl-model", out / "no-rl",
        "--tokenizer", data / "tokenizer.model", "--format-stats", data / "stats.json",
        "--out", out / "eval", "--metrics", out / "metrics.json", env=stages.env(), **popen,
    )  # fmt: skip


def test_lora_output_is_the_adapter_and_the_bases_hash_and_a_moved_clone_evaluates(real, tmp_path):
    params = _params(tmp_path / "p.yaml", real["hf"], lora=LORA)
    stages.finish(stages.train(params, real["data"], tmp_path / "run"))
    model = tmp_path / "run" / "model"
    card = json.loads((model / "config.json").read_text())
    # The base by its content and the key that points at it; no path of this machine.
    assert card["base"] == {
        "init": "checkpoint",
        "sha256": sha256_tree(real["hf"]),
        "params_key": "model.checkpoint",
        "dtype": "float32",
    }
    assert card["stored"] == "adapter" and card["adapter"]["rank"] == 4
    assert str(tmp_path) not in (model / "config.json").read_text()
    assert sorted(p.name for p in model.iterdir()) == ["adapter", "config.json"]
    assert _size(model) < _size(real["hf"]) / 4  # the adapter, not a copy of the model
    stages.finish(_eval(params, real["data"], model, tmp_path / "a"))

    # A teammate's clone: the outputs and the checkpoint both elsewhere.
    moved = tmp_path / "elsewhere"
    shutil.copytree(model, moved / "train" / "model")
    shutil.copytree(real["hf"], moved / "weights" / "gemma")
    shutil.copytree(real["data"], moved / "data")
    moved_params = _params(moved / "params.yaml", moved / "weights" / "gemma", lora=LORA)
    stages.finish(_eval(moved_params, moved / "data", moved / "train" / "model", moved / "b"))
    for phase in ("before", "after"):
        a = (tmp_path / "a" / "eval" / f"{phase}.jsonl").read_bytes()
        assert a == (moved / "b" / "eval" / f"{phase}.jsonl").read_bytes(), phase

    # Another checkpoint at that path: refused, naming both hashes; nothing written.
    with open(moved / "weights" / "gemma" / "model.safetensors", "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    proc = _eval(moved_params, moved / "data", moved / "train" / "model", moved / "c")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode != 0
    assert "model.checkpoint" in err and sha256_tree(real["hf"]) in err
    assert sha256_tree(moved / "weights" / "gemma") in err
    assert not (moved / "c").exists()


def test_zero_steps_scores_the_checkpoint_as_it_is(real, tmp_path):
    params = _params(tmp_path / "p.yaml", real["hf"], steps=0)
    out = stages.finish(stages.train(params, real["data"], tmp_path / "run"))
    assert "train.steps is 0" in out
    model = tmp_path / "run" / "model"
    assert sorted(p.name for p in model.iterdir()) == ["config.json"]
    assert json.loads((model / "config.json").read_text())["stored"] == "base"
    stages.finish(_eval(params, real["data"], model, tmp_path / "e"))
    before = (tmp_path / "e" / "eval" / "before.jsonl").read_bytes()
    assert before and before == (tmp_path / "e" / "eval" / "after.jsonl").read_bytes()
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["delta"]["accuracy"] == 0


def test_a_stage_dvc_runs_refuses_a_checkpoint_it_does_not_depend_on(real, tmp_path):
    params = _params(tmp_path / "p.yaml", real["hf"])
    # The root dvc.yaml's train stage does not list ${model.checkpoint} (its default is null).
    proc = stages.tunixrt(
        "train", "--params", params, "--data", real["data"], "--out", tmp_path / "run",
        env=stages.env(DVC_ROOT=str(REPO), DVC_STAGE="train"),
    )  # fmt: skip
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert "dvc.yaml" in err and "stages.train.deps" in err and "${model.checkpoint}" in err
    assert not (tmp_path / "run").exists()
    # The real-checkpoint pipeline's does.
    from tunixrt_dvc.pipeline import check_deps_hash

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DVC_ROOT", str(REPO))
        mp.setenv("DVC_STAGE", "gemma/dvc.yaml:train")
        check_deps_hash({"model.checkpoint": str(real["hf"])})
