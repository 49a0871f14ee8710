"""The memory plan: its weight and optimizer figures are what a mesh really holds per device."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support import stages
from support.params import model_params

from tunixrt_dvc.model.config import model_config
from tunixrt_dvc.params import LoraParams, MeshParams
from tunixrt_dvc.sft.plan import memory_plan, shard_shape

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
