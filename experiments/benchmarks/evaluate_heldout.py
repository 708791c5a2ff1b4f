"""Time `evaluate` on the held-out suite: every deployable heuristic, 20 seeds, budget 100.

    python -m metaal.experiments.benchmarks.evaluate_heldout [--out runs/bench_heldout] [--seeds 20]

Target: 12 data sets x 12 strategies x 20 seeds x 100 queries (whole pool
as candidates) in at most 10 minutes on 2 CPU cores, compilation included.
The last line printed is `heldout_eval_seconds=<float>`; the mean-rank table
of the heuristics is printed above it and written with the full report to
`--out`.
"""

from __future__ import annotations

import argparse
import time

from metaal import metrics
from metaal.data import load_suite
from metaal.experiments import report
from metaal.experiments.evaluate import evaluate
from metaal.strategies import HEURISTICS


def main() -> None:
    """Run the benchmark and print the elapsed seconds last."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/bench_heldout")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--strategies", default=",".join(HEURISTICS))
    parser.add_argument("--wandb-mode", default="disabled")
    args = parser.parse_args()
    tasks = load_suite("heldout")  # data loading is not part of the timed evaluation
    started = time.perf_counter()
    results = evaluate(
        tasks,
        strategies=args.strategies.split(","),
        seeds=args.seeds,
        budget=args.budget,
        out_dir=args.out,
        wandb_mode=args.wandb_mode,
        suite="heldout",
        overwrite=True,  # a benchmark is rerun on purpose: it replaces its own last results
    )
    elapsed = time.perf_counter() - started
    print(report.mean_rank_table(metrics.summarise(results)))
    print(f"heldout_eval_seconds={elapsed:.1f}")


if __name__ == "__main__":
    main()
