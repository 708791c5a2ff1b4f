"""`metaal query`: pick the rows of your own data to annotate next with a trained policy.

    metaal query --policy default --data pool.csv --target label --batch-size 10 --out picks.csv

Rows whose target is empty are the unlabelled pool, the rest are labelled.
The learner is fitted on the labelled rows, the policy scores every
unlabelled row, and a batch is picked greedily: after each pick the row joins
the labelled set, so distances to the labelled set move and the batch spreads
out instead of taking the top-k scores. Output: one line per pick with the
row number (0-based, counting data rows of the file), the policy's score and,
with `--id COLUMN`, the row's id. `--drop COLUMN` leaves a column out.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence

import numpy as np


def add_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> None:
    """Options of `metaal query`."""
    parser.add_argument(
        "--policy",
        default="default",
        help="policy file, or 'default' for the shipped policy, or a heuristic name (e.g. margin)",
    )
    parser.add_argument("--data", required=True, help="CSV or NPZ file; empty target = unlabelled")
    parser.add_argument("--target", help="name of the label column (CSV)")
    parser.add_argument(
        "--drop",
        action="append",
        default=[],
        metavar="COLUMN",
        help="a column to leave out of the features (repeatable)",
    )
    parser.add_argument(
        "--id", metavar="COLUMN", help="a column naming the rows: not a feature, shown per pick"
    )
    parser.add_argument("--batch-size", type=int, default=10, help="rows to pick")
    parser.add_argument("--out", help="write the picks to this CSV (columns row,[id,]score,order)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for tie-breaking")
    parser.add_argument(
        "--learner",
        help="the learner fitted on the labelled rows: a name (logreg, mlp, ensemble) with "
        "optional settings, name:key=value,... (default: the policy's training learner, "
        "logreg for heuristics)",
    )


def load_query_strategy(policy: str, seed: int, learner: str | None = None):
    """A scikit-activeml-style query object for a policy file, 'default' or a heuristic name.

    `learner` is a learner spec (`metaal.learners.parse_learner`); by default a
    policy's own training learner, `logreg` for heuristics.
    """
    from metaal.learners import parse_learner
    from metaal.strategies import STRATEGIES
    from metaal.strategies.adapter import QueryStrategy
    from metaal.strategies.learned import LearnedStrategy

    if learner is not None:
        parse_learner(learner)  # a bad spec fails before any compute
    if policy in STRATEGIES:
        return QueryStrategy(policy, random_state=seed, learner=learner or "logreg")
    learned = LearnedStrategy.load(policy)
    return QueryStrategy(
        learned.to_strategy(),
        random_state=seed,
        probe_size=learned.probe_size or 32,
        learner=learner or learned.learner,
    )


def pick(
    X: np.ndarray,
    y: np.ndarray,
    policy: str,
    batch_size: int,
    seed: int = 0,
    learner: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows to annotate next and their scores; `y` holds class indices, NaN = unlabelled."""
    labelled = ~np.isnan(y)
    n_classes = len(np.unique(y[labelled]))
    if n_classes < 2:
        raise ValueError(
            f"only {int(labelled.sum())} labelled row(s) covering {n_classes} class(es): the "
            "learner needs labelled rows of at least two classes; label a few more rows first"
        )
    n_pool = int((~labelled).sum())
    if not 1 <= batch_size <= n_pool:
        raise ValueError(
            f"--batch-size {batch_size} must be between 1 and the {n_pool} unlabelled rows"
        )
    qs = load_query_strategy(policy, seed, learner)
    idx, utilities = qs.query(X, y, batch_size=batch_size, return_utilities=True)
    idx = np.asarray(idx)
    scores = np.asarray(utilities)[np.arange(len(idx)), idx]
    return idx, scores


def main(args: argparse.Namespace) -> int:
    """Print (and optionally write) the picked rows."""
    from metaal.data import DataError, load_labelled_and_unlabelled

    try:
        data = load_labelled_and_unlabelled(
            args.data, args.target, drop=args.drop, id_column=args.id
        )
        X, y, class_names = data
        idx, scores = pick(X, y, args.policy, args.batch_size, args.seed, args.learner)
    except (DataError, ValueError) as err:
        print(f"metaal query: {err}", file=sys.stderr)
        return 2
    print(f"{len(idx)} rows to annotate next (of {int(np.isnan(y).sum())} unlabelled):")
    ids = [[data.ids[row]] if args.id else [] for row in idx]
    print("order  row  score" + (f"  {args.id}" if args.id else ""))
    for order, (row, score) in enumerate(zip(idx, scores, strict=True)):
        print(f"{order:>5} {row:>4} {score:.4f}", *ids[order])
    if args.out:
        with open(args.out, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["row", *([args.id] if args.id else []), "score", "order"])
            for order, (row, score) in enumerate(zip(idx, scores, strict=True)):
                writer.writerow([int(row), *ids[order], float(score), order])
        print(f"written to {args.out}")
    return 0
