"""Evaluating 13 CSV files: one `metaal evaluate` per file against one for all files (same run).

The 13 files are synthetic stand-ins for a user's collection with the shapes
of the project's unseen tabular collection (3 to 750 features, 200 to 3,000
rows, 2 to 10 classes; scikit-learn's `make_classification`, seeded). Both
sides are fresh processes with the compilation cache off, 7 strategies, 20
seeds and budget 100:

- before: 13 commands `metaal evaluate --data FILE`, each compiling every
  strategy for its own shapes;
- after: one command `metaal evaluate --data FILE1 ... FILE13`, which pads
  the files into one batch (as a suite is) and compiles each strategy once.

The check: the largest difference between the two sides' mean AULC of a
(file, strategy) pair. Padding leaves the arithmetic of a file's episodes
alone, but XLA's code for other shapes can round differently and flip a
near-tie between candidates (README, `--devices`).

    python -m metaal.experiments.benchmarks.csv_batch [--seeds 20] [--budget 100]

The last line is `per_file_s=<s> one_batch_s=<s> speedup=<x> max_aulc_gap=<x>`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import make_classification

from metaal import metrics

STRATEGIES = "margin,entropy,random,coreset,badge,typiclust,probcover"
#: (rows, features, classes) of the 13 files.
SHAPES = (
    (200, 3, 2), (300, 5, 3), (450, 8, 2), (600, 10, 4), (800, 12, 2), (1000, 16, 5),
    (1200, 20, 2), (1500, 32, 3), (1800, 64, 10), (2000, 100, 2), (2500, 200, 4),
    (2800, 400, 2), (3000, 750, 3),
)  # fmt: skip


def write_files(folder: Path) -> list[Path]:
    """The 13 CSV files (features f0.., label column `label`)."""
    paths = []
    for i, (rows, d, k) in enumerate(SHAPES):
        informative = max(2, min(d, 8))
        X, y = make_classification(
            n_samples=rows, n_features=d, n_informative=informative, n_redundant=0,
            n_repeated=0, n_classes=k, n_clusters_per_class=1, flip_y=0.05, random_state=i,
        )  # fmt: skip
        frame = pd.DataFrame(X, columns=[f"f{j}" for j in range(d)])
        frame["label"] = y
        path = folder / f"set{i:02d}_{d}d.csv"
        frame.to_csv(path, index=False)
        paths.append(path)
    return paths


def evaluate(files: list[Path], out: Path, args: argparse.Namespace) -> float:
    """Seconds of one `metaal evaluate` over `files` (a fresh process)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", WANDB_MODE="disabled")
    command = [sys.executable, "-m", "metaal.experiments.cli", "evaluate"]
    for f in files:
        command += ["--data", str(f)]
    command += ["--target", "label", "--strategies", STRATEGIES, "--seeds", str(args.seeds)]
    command += ["--budget", str(args.budget), "--out", str(out), "--compile-cache", "off"]
    command += ["--wandb-mode", "disabled"]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def mean_aulc(results_csv: Path) -> pd.Series:
    """Mean AULC per (data set, strategy)."""
    summary = metrics.summarise(pd.read_csv(results_csv))
    return summary.set_index(["dataset", "strategy"])["aulc_mean"]


def main(argv: list[str] | None = None) -> None:
    """Both ways, back to back; print the times, the ratio and the check."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budget", type=int, default=100)
    args = parser.parse_args(argv)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        files = write_files(Path(tmp))
        per_file_s, parts = 0.0, []
        for i, f in enumerate(files):
            seconds = evaluate([f], Path(tmp) / f"alone{i}", args)
            per_file_s += seconds
            parts.append(mean_aulc(Path(tmp) / f"alone{i}" / "results.csv"))
            print(f"{f.name}: {seconds:.1f} s", flush=True)
        print(f"13 commands, one per file: {per_file_s:.1f} s", flush=True)
        one_batch_s = evaluate(files, Path(tmp) / "together", args)
        print(f"one command for all 13 files: {one_batch_s:.1f} s", flush=True)
        together = mean_aulc(Path(tmp) / "together" / "results.csv")
    alone = pd.concat(parts)
    gap = float(np.max(np.abs(together.loc[alone.index].to_numpy() - alone.to_numpy())))
    print(f"load average after the run {os.getloadavg()}")
    print(
        f"per_file_s={per_file_s:.1f} one_batch_s={one_batch_s:.1f} "
        f"speedup={per_file_s / one_batch_s:.2f} max_aulc_gap={gap:.4f}"
    )


if __name__ == "__main__":
    main()
