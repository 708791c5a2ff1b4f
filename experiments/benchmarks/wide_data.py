"""Benchmark: `metaal evaluate` on wide data (750 features) against narrow data (20 features).

    python -m metaal.experiments.benchmarks.wide_data [--seeds 20] [--budget 100]

Two synthetic tasks (1,500 rows, 3 classes) that differ only in width are
evaluated with margin and BADGE, 20 paired seeds, budget 100, the whole pool
as candidates: what `metaal evaluate --data FILE --strategies margin,badge`
runs. Each is evaluated twice in one process: the first call compiles and
runs, the second reuses the compiled runners, so their difference is the
compile time. Prints one line per width and the wide / narrow ratios.
Compare commits by running this script in each checkout in one session.
"""

from __future__ import annotations

import argparse
import time

from metaal.data.synthetic import make_synthetic_task
from metaal.experiments.evaluate import evaluate

WIDTHS = (20, 750)


def timed(task, seeds: int, budget: int) -> tuple[float, float, float]:
    """(first call s, second call s, mean AULC of margin) of one evaluation."""
    times = []
    for _ in range(2):
        started = time.perf_counter()
        results = evaluate(
            [task],
            strategies=["margin", "badge"],
            seeds=seeds,
            budget=budget,
            out_dir=None,
            progress=False,
        )
        times.append(time.perf_counter() - started)
    margin = results[results.strategy == "margin"]
    aulc = float(margin.groupby("seed")["test_accuracy"].mean().mean())
    return times[0], times[1], aulc


def main() -> None:
    """Print the timings."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budget", type=int, default=100)
    args = parser.parse_args()
    rows = {}
    for width in WIDTHS:
        task = make_synthetic_task(
            0, n_samples=1500, n_features=width, n_classes=3, name=f"synthetic_d{width}"
        )
        first, second, aulc = timed(task, args.seeds, args.budget)
        rows[width] = (first, second)
        print(
            f"d={width:>4}: first call {first:7.1f} s, second (compiled) {second:7.1f} s, "
            f"compile ~{first - second:6.1f} s; margin AULC {aulc:.4f}",
            flush=True,
        )
    (f_n, s_n), (f_w, s_w) = rows[WIDTHS[0]], rows[WIDTHS[1]]
    print(f"wide / narrow: first call {f_w / f_n:.2f}x, compiled run {s_w / s_n:.2f}x")


if __name__ == "__main__":
    main()
