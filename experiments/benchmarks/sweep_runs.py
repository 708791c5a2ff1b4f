"""`metaal sweep` over 8 learning rates x 2 seeds against 16 sequential `metaal train` runs.

Both sides are the commands a user runs, as fresh processes with the
compilation cache off: one `metaal sweep --grid lr=...` and sixteen `metaal
train --lr ... --seed ...`, each with the `demo` PPO preset shortened to
`--total-steps` env steps and one evaluation task (the sweep's score). Each
sequential run pays its own start-up, data loading and compile; the sweep pays
them once. The printed check is the largest difference between a sweep run's
policy and the same run trained alone (float32 rounding of the vmapped sums).

    python -m metaal.experiments.benchmarks.sweep_runs [--total-steps 20480]

The last line is `sweep_s=<s> sequential_s=<s> speedup=<x>`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from metaal.experiments import sweep
from metaal.strategies.learned import LearnedStrategy

RATES = (1e-4, 2e-4, 3e-4, 5e-4, 1e-3, 2e-3, 3e-3, 5e-3)


def metaal(args: list[str]) -> float:
    """Seconds one `metaal` command takes (a fresh process, compilation cache off)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", WANDB_MODE="disabled")
    command = [sys.executable, "-m", "metaal.experiments.cli", *args, "--compile-cache", "off"]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    """Run the sweep, then the sixteen runs; print both times and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total-steps", type=int, default=20480)
    args = parser.parse_args(argv)
    common = ["--agent", "ppo", "--preset", "demo", "--total-steps", str(args.total_steps)]
    common += ["--eval-tasks", "1", "--wandb-mode", "disabled", "--quiet"]
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        grid = "lr=" + ",".join(f"{r:g}" for r in RATES)
        out = Path(tmp) / "sweep"
        sweep_s = metaal(["sweep", *common, "--grid", grid, "--seeds", "2", "--out", str(out)])
        print(f"metaal sweep, {len(RATES)} rates x 2 seeds: {sweep_s:.1f} s", flush=True)
        sequential_s = 0.0
        for lr in RATES:
            for seed in (0, 1):
                folder = Path(tmp) / f"lr{lr:g}_seed{seed}"
                sequential_s += metaal(
                    ["train", *common, "--lr", f"{lr:g}", "--seed", str(seed), "--out", str(folder)]
                )
        print(f"16 sequential metaal train runs: {sequential_s:.1f} s", flush=True)
        swept = LearnedStrategy.load(out / sweep.run_name({"lr": RATES[-1]}, 1) / "policy")
        alone = LearnedStrategy.load(Path(tmp) / f"lr{RATES[-1]:g}_seed1" / "policy")
        pairs = zip(jax.tree.leaves(swept.params), jax.tree.leaves(alone.params), strict=True)
        gap = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in pairs)
    print(f"largest weight difference, sweep run against the same run alone: {gap:.2e}")
    print(f"load average after the run {os.getloadavg()}")
    print(
        f"sweep_s={sweep_s:.1f} sequential_s={sequential_s:.1f} "
        f"speedup={sequential_s / sweep_s:.2f}"
    )


if __name__ == "__main__":
    main()
