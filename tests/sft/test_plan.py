"""The memory plan: its weight and optimizer figures are what a mesh really holds per device, its
analytic bounds are above XLA's figures, and its peak host memory is what `tunixrt train`
processes reach (measured from their parent: `resource.getrusage`)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from support import stages
from support.checkpoints import pad_tokenizer
from support.data import small_formatted
from support.params import model_params, params, write_params, write_small_params

from tunixrt_dvc.errors import ResourceError
from tunixrt_dvc.model.config import model_config
from tunixrt_dvc.params import LoraParams, MeshParams, load_params
from tunixrt_dvc.sft.cli import plan_command
from tunixrt_dvc.sft.host_memory import HostMemory, available_memory, check_fits, predict
from tunixrt_dvc.sft.plan import GIB, memory_plan, shard_shape
from tunixrt_dvc.text.tokenizer import Tokenizer

# Run on 4 fake devices: the tiny model and its AdamW state placed on a 2x2 mesh the way the
# trainer places them; prints the bytes device 0 holds.
_MEASURE = """
import json, sys
import jax, optax
from flax import nnx
from support.params import model_params
from tunixrt_dvc.distributed import make_mesh, shard_model
from tunixrt_dvc.model.build import build_model
from tunixrt_dvc.params import MeshParams
mesh = make_mesh(MeshParams(fsdp=2, tp=2))
model, _ = build_model(model_params(), vocab_size=512, max_len=256, seed=0)
shard_model(model, mesh)
with jax.set_mesh(mesh):  # as Tunix's trainer shards its optimizer (_shard_optimizer)
    opt = nnx.Optimizer(model, optax.adamw(1e-3), wrt=nnx.Param)
    state = nnx.state(opt, nnx.optimizer.OptState)
    state = jax.device_put(state, nnx.get_named_sharding(state, mesh))
dev = jax.devices()[0]
def held(tree):
    return sum(s.data.nbytes for x in jax.tree.leaves(tree) if hasattr(x, "addressable_shards")
               for s in x.addressable_shards if s.device == dev and x.ndim > 0)
print(json.dumps({"weights": held(nnx.state(model, nnx.Param)), "optimizer": held(state)}))
"""


def test_shard_shape():
    from jax.sharding import PartitionSpec as P

    axes = {"fsdp": 4, "tp": 2}
    assert shard_shape((512, 128), P("tp", "fsdp"), axes) == (256, 32)
    assert shard_shape((4, 128, 32), P("tp", "fsdp", None), axes) == (2, 32, 32)
    assert shard_shape((128,), P(("fsdp", "tp")), axes) == (16,)
    assert shard_shape((7, 3), P(), axes) == (7, 3)


def test_the_plan_matches_what_a_2x2_mesh_holds_per_device():
    config = model_config(model_params(), vocab_size=512, max_len=256)
    plan = memory_plan(config, MeshParams(fsdp=2, tp=2), batch_size=4, seq_len=256)
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE],
        capture_output=True,
        text=True,
        env=stages.env(4, PYTHONPATH=f"{stages.REPO}:{stages.REPO / 'tests'}"),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    held = json.loads(proc.stdout.splitlines()[-1])
    assert plan.weights_bytes == held["weights"]
    assert plan.optimizer_bytes == held["optimizer"]
    assert plan.gradient_bytes == plan.weights_bytes  # full fine-tuning: one per parameter
    assert plan.activation_bytes > 0 and plan.total_bytes > plan.weights_bytes


@pytest.mark.slow
def test_lora_plans_train_only_the_adapters():
    config = model_config(model_params(), vocab_size=512, max_len=256)
    lora = LoraParams(rank=4, alpha=8.0, targets=["q_einsum", "up_proj"], quantize=None)
    full = memory_plan(config, None, batch_size=4, seq_len=256)
    adapted = memory_plan(config, None, batch_size=4, seq_len=256, lora=lora)
    assert adapted.trainable < full.trainable / 10
    assert adapted.optimizer_bytes < full.optimizer_bytes / 10
    assert adapted.params == full.params + adapted.trainable


def test_the_analytic_bounds_are_above_xlas_figures():
    config = model_config(model_params(), vocab_size=512, max_len=256)
    compiled = memory_plan(config, None, batch_size=4, seq_len=256)
    bound = memory_plan(config, None, batch_size=4, seq_len=256, compile=False)
    assert compiled.compiled and not bound.compiled
    assert compiled.activation_bytes <= bound.activation_bytes <= 4 * compiled.activation_bytes
    assert compiled.eval_activation_bytes <= bound.eval_activation_bytes
    assert compiled.eval_activation_bytes < compiled.activation_bytes


# The parent of one `tunixrt train` process: its RUSAGE_CHILDREN maximum is that process's peak
# RSS (KiB on Linux), whatever else the test session ran before.
_PEAK_RSS = """
import resource, subprocess, sys
rc = subprocess.call(sys.argv[1:])
print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""
TOLERANCE = 0.25  # the most |predicted / measured - 1| may be


def _train_peak_rss(root: Path, data: Path) -> float:
    cmd = [sys.executable, "-m", "tunixrt_dvc.cli", "train", "--params", root / "params.yaml"]
    cmd += ["--data", data, "--out", root / "train"]
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, *map(str, cmd)],
        capture_output=True,
        text=True,
        env=stages.env(1),
        timeout=900,
    )
    rc, kib = proc.stdout.split()[-2:]
    assert rc == "0", proc.stderr[-3000:]
    return int(kib) * 1024.0


def _check_prediction(root: Path, data: Path) -> float:
    """predicted / measured peak RSS of `tunixrt train` on root/params.yaml."""
    p = load_params(root / "params.yaml")
    predicted = predict(p, vocab_size=Tokenizer.load(data / "tokenizer.model").vocab_size)
    measured = _train_peak_rss(root, data)
    ratio = predicted.peak_bytes / measured
    assert abs(ratio - 1) <= TOLERANCE, (predicted.as_dict(), measured)
    return ratio


def test_the_predicted_peak_rss_is_what_a_small_train_run_reaches(tmp_path):
    train = {"steps": 6, "eval_every": 3, "checkpoint_every": 3}
    data = small_formatted(tmp_path, n_traces=120, overrides={"train": train})
    _check_prediction(tmp_path, data)


@pytest.mark.slow
def test_the_predicted_peak_rss_is_what_a_mid_size_train_run_reaches(tmp_path):
    # 4 layers 256 wide, a 32k vocabulary: weights, copies and step temporaries are about half
    # of the prediction (the runtime the rest).
    dims = {"num_layers": 4, "embed_dim": 256, "hidden_dim": 1024, "num_heads": 4}
    dims |= {"head_dim": 64, "num_kv_heads": 1}
    train = {"steps": 12, "eval_every": 4, "checkpoint_every": 6, "batch_size": 4}
    data = small_formatted(tmp_path, n_traces=300, overrides={"model": dims, "train": train})
    pad_tokenizer(data / "tokenizer.model", data / "tokenizer.model", 32768)
    p = load_params(tmp_path / "params.yaml")
    assert predict(p, vocab_size=32768).train_bytes > 1.5 * GIB
    _check_prediction(tmp_path, data)


def test_check_fits_refuses_with_the_figures():
    p = params()
    # Plenty of memory: the analytic bounds decide, nothing is compiled.
    fine = check_fits(p, 64 * GIB)
    assert not fine.compiled and fine.peak_bytes < 2 * GIB
    # Too little: XLA's figures decide (below the bounds), and the message carries both figures.
    with pytest.raises(ResourceError) as err:
        check_fits(p, 0.5 * GIB)
    predicted = float(re.search(r"predicted: ([0-9.]+) GiB", str(err.value))[1])
    assert 0.5 < predicted < fine.peak_bytes / GIB
    assert "available: 0.50 GiB (given)" in str(err.value)
    parts = dict.fromkeys(("runtime", "lora", "state", "copy", "step", "held"), GIB)
    memory = HostMemory(
        devices=1, **{f"{k}_bytes": v for k, v in parts.items()}, load_bytes=0.0, compiled=True
    )
    assert check_fits(memory, 6 * GIB) is memory
    with pytest.raises(ResourceError, match=r"predicted: 6\.00 GiB .* available: 5\.99 GiB"):
        check_fits(memory, 5.99 * GIB)
    available, source = available_memory()
    assert available > 0 and ("/proc/meminfo" in source or "cgroup" in source)


def test_plan_prints_the_peak_host_memory(tmp_path):
    args = ["--params", str(write_params(tmp_path / "params.yaml"))]
    result = CliRunner().invoke(plan_command, [*args, "--json", str(tmp_path / "plan.json")])
    assert result.exit_code == 0, result.output
    host = json.loads((tmp_path / "plan.json").read_text())["host"]
    line = f"peak host memory (RSS), predicted: {host['peak_bytes'] / GIB:.2f} GiB"
    assert line in result.output


def test_the_train_stage_refuses_a_run_that_will_not_fit_before_anything_loads(tmp_path):
    # 4,096 rows of 2,048 tokens: the logits alone are tens of GiB, more than any CI machine has.
    data = small_formatted(tmp_path, n_traces=60)
    huge = {"train": {"batch_size": 4096, "seq_len": 2048, "steps": 3}}
    params = write_small_params(tmp_path / "huge.yaml", huge)
    proc = stages.train(params, data, tmp_path / "run")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode != 0, out
    assert "training needs more memory than this machine has" in err
    predicted = float(re.search(r"predicted: ([0-9.]+) GiB", err)[1])
    available = float(re.search(r"available: ([0-9.]+) GiB", err)[1])
    assert predicted > available
    assert not (tmp_path / "run").exists()  # refused before anything was written
