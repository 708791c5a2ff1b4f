"""Time to first result of the metaal jobs without, with a cold and with a warm compilation cache.

Each job runs as a fresh process (as a user would run it), three times in a row:

- `off`: `--compile-cache off` (every program compiles);
- `cold`: a new, empty cache folder (every program compiles and is written);
- `warm`: the same folder again (programs are read back).

Jobs: `metaal train --preset tiny`, `metaal evaluate` of margin and random on
one data set, `metaal query` with the shipped policy, and `gym.make` + `reset` +
one `step` (through `metaal.compile_cache.enable`). The figure is the wall time
of the whole process, imports included.

    python -m metaal.experiments.benchmarks.first_result

The last line is `warm_over_off=<ratio> ...` per job (lower is better).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GYM_SNIPPET = """
import sys
from metaal import compile_cache
compile_cache.enable(sys.argv[1])
import gymnasium as gym
import metaal.envs
env = gym.make("metaal/ActiveLearning-v0", task="keel/wine", budget=20)
obs, info = env.reset(seed=0)
env.step(0)
"""


def jobs(folder: Path) -> dict[str, list[str]]:
    """The command lines (without the cache flag) of each job, writing under `folder`."""
    metaal = [sys.executable, "-m", "metaal.experiments.cli"]
    data = folder / "wine.csv"
    if not data.exists():
        from sklearn.datasets import load_wine

        bunch = load_wine(as_frame=True)
        frame = bunch.frame.rename(columns={"target": "label"})
        # every 8th row labelled (all three classes), the rest unlabelled
        frame["label"] = frame["label"].where(frame.index % 8 == 0)
        frame.to_csv(data, index=False)
    return {
        "train": metaal + ["train", "--preset", "tiny", "--quiet", "--wandb-mode", "disabled"],
        "evaluate": metaal
        + ["evaluate", "--suite", "keel/wine", "--strategies", "margin,random", "--seeds", "4"]
        + ["--budget", "20", "--wandb-mode", "disabled"],
        "query": metaal + ["query", "--data", str(data), "--target", "label"],
        "gym": [sys.executable, "-c", GYM_SNIPPET],
    }


def run(command: list[str], cache: str, out: Path) -> float:
    """Wall seconds of `command` with compilation cache `cache` ('off' or a folder)."""
    if command[1] == "-c":
        command = command + [cache]
    else:
        command = command + ["--compile-cache", cache]
        if "train" in command or "evaluate" in command:
            command += ["--out", str(out)]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return elapsed


def main() -> None:
    """Run every job off, cold and warm; print the times and the warm / off ratios."""
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()}")
    ratios = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, command in jobs(root).items():
            cache = root / f"cache-{name}"
            times = {}
            for i, mode in enumerate(("off", "cold", "warm")):
                setting = "off" if mode == "off" else str(cache)
                times[mode] = run(command, setting, root / f"out-{name}-{i}")
            entries = sum(1 for _ in cache.iterdir()) if cache.exists() else 0
            print(
                f"{name}: off {times['off']:.1f}s, cold {times['cold']:.1f}s, warm "
                f"{times['warm']:.1f}s ({entries} cache entries)",
                flush=True,
            )
            ratios[name] = times["warm"] / times["off"]
    print(f"load average after the run {os.getloadavg()}")
    print(" ".join(f"warm_over_off_{k}={v:.2f}" for k, v in ratios.items()))


if __name__ == "__main__":
    main()
