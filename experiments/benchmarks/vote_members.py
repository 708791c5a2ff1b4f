"""Wall time of a vote of N members trained as one vmapped program against one after another.

Both votes are `metaal train --members N` runs of the same settings (the
`demo` PPO preset with `--total-steps` env steps per member and no periodic
evaluation, so that the figure is training): `--member-group 0` (all members
in one vmapped program) and `--member-group 1` (each member its own
program, one after another). Each pays its own compile (one program each);
data loading is included, as in the command. The vmapped vote runs first.

    python -m metaal.experiments.benchmarks.vote_members [--members 5] [--total-steps 102400]

The last line is `vmapped_s=<float> sequential_s=<float> speedup=<float>`.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from metaal.experiments import configs, train
from metaal.strategies.learned import LearnedStrategy


def vote_settings(total_steps: int) -> configs.TrainSettings:
    """The `demo` PPO preset with `total_steps` env steps per member and no evaluation."""
    settings = configs.preset("demo", "ppo")
    config = dataclasses.replace(settings.config, total_steps=total_steps)
    run = dataclasses.replace(settings.run, eval_tasks=0)
    return dataclasses.replace(settings, config=config, run=run)


def timed_vote(settings: configs.TrainSettings, out: Path, members: int, group: int):
    """(seconds, vote) of `train_members` into `out`."""
    started = time.perf_counter()
    policy = train.train_members(
        settings, out, members, wandb_mode="disabled", progress=False, member_group=group
    )
    return time.perf_counter() - started, LearnedStrategy.load(policy)


def main() -> None:
    """Train both votes and print their times, the speedup and how far their members differ."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--total-steps", type=int, default=102400)
    args = parser.parse_args()
    settings = vote_settings(args.total_steps)
    with tempfile.TemporaryDirectory() as tmp:
        vmapped_s, vmapped = timed_vote(settings, Path(tmp) / "vmapped", args.members, 0)
        print(f"vmapped vote ({args.members} members, one program): {vmapped_s:.1f} s", flush=True)
        sequential_s, sequential = timed_vote(settings, Path(tmp) / "sequential", args.members, 1)
        print(f"sequential vote (one member after another): {sequential_s:.1f} s", flush=True)
    pairs = zip(jax.tree.leaves(vmapped.params), jax.tree.leaves(sequential.params), strict=True)
    gap = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in pairs)
    print(f"largest parameter difference between the two votes: {gap:.2e} (float32 rounding)")
    print(
        f"vmapped_s={vmapped_s:.1f} sequential_s={sequential_s:.1f} "
        f"speedup={sequential_s / vmapped_s:.2f}"
    )


if __name__ == "__main__":
    main()
