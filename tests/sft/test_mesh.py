"""Device meshes and several hosts, on fake CPU devices and processes on 127.0.0.1.

A 2x2 (fsdp, tp) mesh must train what one device trains (float32: equal losses to 1e-5 over
the steps compared), its model must restore and evaluate on one device, LoRA must train on it,
and two processes of two devices each must train exactly what one process of four does.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from support import stages
from support.data import small_formatted
from support.params import write_small_params

from tunixrt_dvc.io import sha256_tree
from tunixrt_dvc.model.weights import load_model

pytestmark = pytest.mark.slow

STEPS = 10
FLOAT32 = {"steps": STEPS, "compute_dtype": "float32", "eval_every": 5, "checkpoint_every": 5}
MESH = {"fsdp": 2, "tp": 2}
LORA = {
    "rank": 4,
    "alpha": 8.0,
    "targets": ["q_einsum", "kv_einsum", "attn_vec_einsum", "gate_proj", "up_proj", "down_proj"],
    "quantize": None,
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One data set; a one-device run and a 2x2 mesh run of it (4 fake devices each)."""
    root = tmp_path_factory.mktemp("mesh")
    data = small_formatted(root, n_traces=400)
    params = {
        name: write_small_params(root / f"{name}.yaml", {"mesh": mesh, "train": FLOAT32})
        for name, mesh in (("one", None), ("mesh", MESH))
    }
    for name in params:  # one after the other: the machine has 2 cores
        stages.finish(stages.train(params[name], data, root / name, devices=4))
    return {"root": root, "data": data, **{n: root / n for n in params}, "params": params}


def test_a_mesh_trains_what_one_device_trains(runs):
    one = stages.metric(runs["one"], "train/loss", "loss")
    mesh = stages.metric(runs["mesh"], "train/loss", "loss")
    assert len(one) == len(mesh) == STEPS
    np.testing.assert_allclose(mesh, one, rtol=0, atol=1e-5)
    card = json.loads((runs["mesh"] / "model" / "config.json").read_text())
    assert (
        card["architecture"]
        == json.loads((runs["one"] / "model/config.json").read_text())["architecture"]
    )


def test_the_mesh_model_restores_and_evaluates_on_one_device(runs):
    model, _ = load_model(runs["mesh"] / "model")  # this process: one device
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert leaves and all(len(x.devices()) == 1 and np.isfinite(x).all() for x in leaves)
    evalset = Path(__file__).resolve().parents[2] / "evalsets" / "eval_v1.jsonl"
    small_eval = {"evalset": str(evalset), "limit": 4, "max_new_tokens": 16, "batch_size": 4}
    outs = {}
    for name, mesh, devices in (("eval-one", None, 1), ("eval-mesh", MESH, 4)):
        params = write_small_params(
            runs["root"] / f"{name}.yaml", {"mesh": mesh, "eval": small_eval}
        )
        out = runs["root"] / name
        args = ["eval", "--params", params, "--model", runs["mesh"] / "model"]
        args += ["--tokenizer", runs["data"] / "tokenizer.model"]
        args += ["--format-stats", runs["data"] / "stats.json", "--out", out]
        args += ["--metrics", out / "metrics.json"]
        stages.finish(stages.tunixrt(*args, env=stages.env(devices)))
        outs[name] = (out / "after.jsonl").read_text()
    # The sampler on the mesh generates what it generates on one device.
    assert outs["eval-one"] == outs["eval-mesh"] and outs["eval-one"]


def test_lora_trains_on_a_mesh_as_on_one_device(runs):
    root, base = runs["root"], runs["one"] / "model"
    losses = {}
    for name, mesh in (("lora-one", None), ("lora-mesh", MESH)):
        overrides = {
            "mesh": mesh,
            "model": {"checkpoint": str(base)},
            "format": {"tokenizer": str(runs["data"] / "tokenizer.model")},
            "train": {**FLOAT32, "steps": 6, "lora": LORA},
        }
        params = write_small_params(root / f"{name}.yaml", overrides)
        stages.finish(stages.train(params, runs["data"], root / name, devices=4))
        losses[name] = stages.metric(root / name, "train/loss", "loss")
    np.testing.assert_allclose(losses["lora-mesh"], losses["lora-one"], rtol=0, atol=1e-5)
    assert (root / "lora-mesh" / "model" / "adapter" / "weights").is_dir()


def test_two_processes_train_exactly_what_one_process_of_the_same_mesh_trains(runs):
    out = runs["root"] / "two-hosts"
    procs = stages.train_processes(
        runs["params"]["mesh"], runs["data"], out, processes=2, devices=2
    )
    for proc in procs:
        stages.finish(proc)
    assert sha256_tree(out / "model") == sha256_tree(runs["mesh"] / "model")
    for name in ("metrics.json", "plots/metrics/train/loss.tsv", "plots/metrics/eval/loss.tsv"):
        assert (out / name).read_bytes() == (runs["mesh"] / name).read_bytes(), name
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["processes"] == {"count": 2, "index": 0}


def test_a_killed_process_stops_the_other_in_bounded_time_and_a_rerun_resumes(runs):
    root = runs["root"]
    params = write_small_params(
        root / "kill.yaml",
        {"mesh": MESH, "train": {**FLOAT32, "steps": 16, "checkpoint_every": 4}},
    )
    out, timeout = root / "killed", "10"
    procs = stages.train_processes(
        params, runs["data"], out, processes=2, devices=2, TUNIXRT_DISTRIBUTED_TIMEOUT_S=timeout
    )
    checkpoints = out / ".resume" / "checkpoints"
    deadline = time.monotonic() + 600
    while not (checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())):
        assert all(p.poll() is None for p in procs), "a process ended before the kill"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.2)
    os.killpg(procs[1].pid, signal.SIGKILL)
    killed_at = time.monotonic()
    _, err = procs[0].communicate(timeout=120)  # no hang: the survivor stops on its own
    assert procs[0].returncode != 0
    assert time.monotonic() - killed_at < 90
    assert "stopped sending heartbeats" in err or "unhealthy" in err, err[-3000:]
    procs[1].communicate()
    assert not (out / "model").exists()

    for proc in stages.train_processes(
        params, runs["data"], out, processes=2, devices=2, TUNIXRT_DISTRIBUTED_TIMEOUT_S=timeout
    ):
        stages.finish(proc)
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["timings"]["resumed_from_step"] >= 4
    assert json.loads((out / "metrics.json").read_text())["step"] == 16
