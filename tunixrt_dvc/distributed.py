"""Devices, meshes and processes: one device by default, a mesh of many, several hosts.

A job of several processes (hosts) is joined from the environment before JAX computes anything:
`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` say where the coordinator is
and who this process is; `TUNIXRT_DISTRIBUTED=1` instead lets JAX read them from the cluster (Slurm,
Cloud TPU pods, Kubernetes, Open MPI). Every process then runs the same program on the same
deterministic batch stream and feeds only the rows its own devices hold; files are written by
process 0 only, between barriers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from tunixrt_dvc.errors import InvalidInput, Problem, ResourceError
from tunixrt_dvc.params import MeshParams

AXES = ("fsdp", "tp")
# Seconds without a heartbeat after which the coordinator declares a process dead, and that the
# others wait for each other at exit: a job whose process died stops with an error within about
# this long instead of waiting for it (JAX's defaults are 100 s and 300 s).
TIMEOUT_S = int(os.environ.get("TUNIXRT_DISTRIBUTED_TIMEOUT_S", "30"))


@dataclass(frozen=True)
class Processes:
    count: int
    index: int

    @property
    def is_main(self) -> bool:
        return self.index == 0


def initialize() -> Processes:
    """Join the job's other processes, if the environment names any (see the module docs)."""
    env = os.environ
    explicit = all(k in env for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES"))
    if explicit or env.get("TUNIXRT_DISTRIBUTED") == "1":
        kwargs = {"heartbeat_timeout_seconds": TIMEOUT_S, "shutdown_timeout_seconds": TIMEOUT_S}
        if explicit:
            kwargs |= {
                "coordinator_address": env["JAX_COORDINATOR_ADDRESS"],
                "num_processes": int(env["JAX_NUM_PROCESSES"]),
                "process_id": int(env.get("JAX_PROCESS_ID", "0")),
            }
        try:
            jax.distributed.initialize(**kwargs)
        except (RuntimeError, ValueError) as e:
            raise ResourceError(f"cannot join the job's other processes: {e}") from None
    return Processes(jax.process_count(), jax.process_index())


def barrier(name: str) -> None:
    """Wait until every process gets here (nothing to wait for with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def make_mesh(params: MeshParams | None, *, where: str = "params.yaml") -> Mesh | None:
    """The (fsdp, tp) mesh over every device of the job; None for one device (1 x 1)."""
    if params is None or params.fsdp * params.tp == 1:
        return None
    n = jax.device_count()
    if params.fsdp * params.tp != n:
        msg = f"fsdp x tp = {params.fsdp * params.tp}, but the job has {n} device(s)"
        raise InvalidInput([Problem(where, None, "mesh", msg)])
    # Auto axes: Tunix's trainer constrains shardings by name, which explicit axes refuse.
    return jax.make_mesh((params.fsdp, params.tp), AXES, axis_types=(AxisType.Auto,) * 2)


def shard_model(model: nnx.Module, mesh: Mesh) -> None:
    """Place the model's state on the mesh by Gemma3's own sharding annotations."""
    with mesh:
        state = nnx.state(model)
        nnx.update(model, jax.device_put(state, nnx.get_named_sharding(state, mesh)))


def local_rows(mesh: Mesh | None, batch_size: int) -> slice:
    """The rows of a global batch that this process's devices hold (batches split over fsdp)."""
    if mesh is None or jax.process_count() == 1:
        return slice(0, batch_size)
    sharding = NamedSharding(mesh, PartitionSpec("fsdp"))
    rows = sorted(
        {
            i
            for index in sharding.addressable_devices_indices_map((batch_size,)).values()
            for i in range(*index[0].indices(batch_size))
        }
    )
    if rows != list(range(rows[0], rows[-1] + 1)):
        raise ValueError(f"this process's rows are not contiguous: {rows}")
    return slice(rows[0], rows[-1] + 1)


def local_batch(batch: dict[str, np.ndarray], rows: slice) -> dict[str, np.ndarray]:
    return {k: v[rows] for k, v in batch.items()}


def to_host(x: jax.Array) -> np.ndarray:
    """The whole of `x` in this process's memory, gathered from every process if the array spans
    several (a collective: every process must call it)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def to_local(x: jax.Array) -> jax.Array:
    """The whole of `x` on this process's first device (see `to_host`)."""
    if isinstance(x, jax.Array) and len(x.devices()) == 1 and x.is_fully_addressable:
        return x
    return jax.device_put(to_host(x), jax.local_devices()[0])
