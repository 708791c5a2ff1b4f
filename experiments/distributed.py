"""Many hosts: JAX's multi-controller runtime (`jax.distributed`) under `metaal train`.

    # on each of N machines (or N processes of one), the same command but the id:
    metaal train ... --coordinator-address HOST:PORT --num-processes N --process-id I

Nothing here is home-made: `jax.distributed.initialize` connects the
processes, and every process runs the same jitted program over its share of
the global batch (the env slots are split over every process's devices, see
`experiments.train.train_mesh`); XLA's collectives (gloo on CPU, NCCL on GPU)
do the all-reduces. Only process 0 writes (checkpoints, metrics, the policy,
W&B); the others compute. The run folder must be shared (a network file
system), so that `--resume` finds the last checkpoint from every process.

How the processes find each other:
- `--coordinator-address`, `--num-processes` and `--process-id`, or the
  environment variables `METAAL_COORDINATOR_ADDRESS`, `METAAL_NUM_PROCESSES`
  and `METAAL_PROCESS_ID`;
- on Slurm (`SLURM_NTASKS` > 1) or Open MPI (`OMPI_COMM_WORLD_SIZE` > 1)
  with none of those, JAX detects the cluster itself.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

ENV_VARS = {
    "coordinator_address": "METAAL_COORDINATOR_ADDRESS",
    "num_processes": "METAAL_NUM_PROCESSES",
    "process_id": "METAAL_PROCESS_ID",
}


def settings_from(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> dict[str, Any] | None:
    """The `jax.distributed.initialize` arguments the flags and environment ask for.

    None: a single process. {}: a Slurm or Open MPI job that JAX detects. A
    partial or inconsistent set is a ValueError that names the missing flag.
    """
    given = {
        "coordinator_address": coordinator_address,
        "num_processes": num_processes,
        "process_id": process_id,
    }
    for name, var in ENV_VARS.items():
        if given[name] is None and os.environ.get(var):
            value = os.environ[var]
            given[name] = value if name == "coordinator_address" else _integer(var, value)
    if all(v is None for v in given.values()):
        cluster = max(_env_int("SLURM_NTASKS"), _env_int("OMPI_COMM_WORLD_SIZE"))
        return {} if cluster > 1 else None
    missing = [f"--{n.replace('_', '-')}" for n, v in given.items() if v is None]
    if missing:
        raise ValueError(
            f"many processes need all three of --coordinator-address, --num-processes and "
            f"--process-id (or {', '.join(ENV_VARS.values())}); missing {', '.join(missing)}"
        )
    n, i = given["num_processes"], given["process_id"]
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--process-id must be in 0..{n - 1} for --num-processes {n}, got {i}")
    if ":" not in given["coordinator_address"]:
        raise ValueError(
            f"--coordinator-address {given['coordinator_address']!r}: give HOST:PORT, "
            "e.g. 10.0.0.1:1234"
        )
    return given


def _integer(var: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{var}={value!r}: not an integer") from None


def _env_int(var: str) -> int:
    try:
        return int(os.environ.get(var, "1"))
    except ValueError:
        return 1


def initialize(settings: dict[str, Any] | None) -> None:
    """Join the processes `settings` describes (`settings_from`); nothing for a single process.

    Call before any JAX computation. On CPU the collectives are gloo's.
    """
    if settings is None:
        return
    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**settings)


def is_writer() -> bool:
    """Whether this process writes files and logs: process 0 (every single-process run)."""
    return jax.process_index() == 0


def to_host(tree: Any) -> Any:
    """`tree` as numpy arrays on every process, whatever devices and processes hold its parts.

    Arrays split over several processes are gathered (a collective: every
    process must call it at the same point).
    """

    def one(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return np.asarray(jax.device_get(x))
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(one, tree)


def put(tree: Any, shardings: Any) -> Any:
    """`tree` (the same value on every process) placed with `shardings`, also across processes.

    One process: `jax.device_put`. Several: each process builds its own
    shards from its copy (`jax.make_array_from_callback`); PRNG keys travel
    as their raw data.
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)

    def one(x, sharding):
        if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
            data = one(jax.random.key_data(x), sharding)
            return jax.jit(jax.random.wrap_key_data, out_shardings=sharding)(data)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(one, tree, shardings)


def barrier(name: str) -> None:
    """Wait until every process reaches this point (nothing for a single process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
