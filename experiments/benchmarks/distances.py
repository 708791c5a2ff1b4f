"""Benchmark: the env's distance update on wide data, three formulations in one process.

    python -m metaal.experiments.benchmarks.distances [--features 750] [--rows 1000] [--envs 64]

Each env step computes the distance of every pool row to the row just
labelled. Printed per formulation: compile + first call, and the mean of 20
compiled calls, over a batch of envs:

- `unrolled`: one fused expression per feature (what `features.squared_distances`
  does up to `UNROLL_MAX_FEATURES`);
- `fori_loop`: the same sum in a `lax.fori_loop` (what it does above);
- `reduction`: `sum((X - x)**2)` in one reduction (fastest, not bit-exact under padding).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np


def unrolled(XT: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
    """The sum over features, unrolled."""
    sq = jnp.zeros(XT.shape[1], XT.dtype)
    for d in range(XT.shape[0]):
        sq = sq + (XT[d] - x[d]) ** 2
    return sq


def fori_loop(XT: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
    """The same sum, one loop iteration per feature."""
    zeros = jnp.zeros(XT.shape[1], XT.dtype)
    return jax.lax.fori_loop(0, XT.shape[0], lambda d, sq: sq + (XT[d] - x[d]) ** 2, zeros)


def reduction(XT: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
    """One fused reduction over the feature axis."""
    return jnp.sum((XT - x[:, None]) ** 2, axis=0)


def main() -> None:
    """Print the timings."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", type=int, default=750)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--envs", type=int, default=64)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    XT = jnp.asarray(rng.normal(size=(args.envs, args.features, args.rows)).astype(np.float32))
    rows = jnp.arange(args.envs) % args.rows
    for name, form in (("fori_loop", fori_loop), ("reduction", reduction), ("unrolled", unrolled)):
        step = jax.jit(jax.vmap(lambda XT, i, form=form: form(XT, XT[:, i])))
        started = time.perf_counter()
        step(XT, rows).block_until_ready()
        first = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(20):
            step(XT, rows).block_until_ready()
        per_call = (time.perf_counter() - started) / 20
        ms = per_call * 1e3
        print(f"{name:10s} compile + first call {first:6.2f} s, compiled call {ms:7.2f} ms")


if __name__ == "__main__":
    main()
