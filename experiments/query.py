"""`metaal query`: pick the rows of your own data to annotate next with a trained policy.

    metaal query --policy default --data pool.csv --target label --batch-size 10 --out picks.csv

Rows whose target is empty are the unlabelled pool, the rest are labelled.
The learner is fitted on the labelled rows, the policy scores every
unlabelled row, and a batch is picked greedily: after each pick the row joins
the labelled set, so distances to the labelled set move and the batch spreads
out instead of taking the top-k scores. Output (printed, and with `--out` as
a CSV with the same columns in the same order): `order` (0 = picked first),
`row` (0-based, counting data rows of the file), with `--id COLUMN` the
row's id, and `score`. A pick's score is the policy's score *at the moment
of that pick*, after the earlier picks joined the labelled set; so scores
need not decrease with `order`. `--drop COLUMN` leaves a column out. The
`--out` path is checked before anything is computed and written atomically.
"""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Sequence

import numpy as np

from metaal import atomic
from metaal.experiments import outputs

#: Help of --out and the printed table's note: what a greedy batch's score is.
SCORE_NOTE = (
    "score: the policy's score at the moment of the pick, after the earlier picks joined the "
    "labelled set, so scores need not decrease with order"
)


def add_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> None:
    """Options of `metaal query`."""
    parser.add_argument(
        "--policy",
        default="default",
        help="policy file, 'default' for the shipped policy, the folder of a finished "
        "`metaal train` run, or a heuristic name (e.g. margin)",
    )
    parser.add_argument(
        "--data", required=True, help="CSV or NPZ file; empty target = unlabelled (required)"
    )
    parser.add_argument("--target", help="name of the label column (CSV) (default: none)")
    parser.add_argument(
        "--drop",
        action="append",
        default=[],
        metavar="COLUMN",
        help="a column to leave out of the features (repeatable)",
    )
    parser.add_argument(
        "--id",
        metavar="COLUMN",
        help="a column naming the rows: not a feature, shown per pick (default: none)",
    )
    parser.add_argument("--batch-size", type=int, default=10, help="rows to pick")
    parser.add_argument(
        "--out",
        help="also write the picks to this CSV, columns order,row,[id,]score as printed; "
        f"{SCORE_NOTE} (default: print only)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed for tie-breaking")
    from metaal.learners import LEARNERS  # here: `metaal --help` need not import jax

    parser.add_argument(
        "--learner",
        help=f"the learner fitted on the labelled rows: a name ({', '.join(LEARNERS)}) with "
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


def check_request(y: np.ndarray, batch_size: int) -> None:
    """The adapter's label check, and --batch-size within the pool, before anything is loaded."""
    from metaal.strategies.adapter import check_labelled

    check_labelled(y)
    n_pool = int(np.isnan(y).sum())
    if not 1 <= batch_size <= n_pool:
        raise ValueError(
            f"--batch-size {batch_size} must be between 1 and the {n_pool} unlabelled rows"
        )


def picks_table(idx: np.ndarray, scores: np.ndarray, ids: list | None, id_name: str | None):
    """The picks as (header, rows): order, row, [id,] score, the same for screen and CSV."""
    header = ["order", "row", *([id_name] if id_name else []), "score"]
    rows = [
        [order, int(row), *([ids[row]] if id_name else []), float(score)]
        for order, (row, score) in enumerate(zip(idx, scores, strict=True))
    ]
    return header, rows


def pick(
    X: np.ndarray,
    y: np.ndarray,
    policy: str,
    batch_size: int,
    seed: int = 0,
    learner: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows to annotate next and their scores; `y` holds class indices, NaN = unlabelled."""
    check_request(y, batch_size)
    return picks_of(load_query_strategy(policy, seed, learner), X, y, batch_size)


def picks_of(qs, X: np.ndarray, y: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows query strategy `qs` picks and each pick's score at the moment it was picked."""
    idx, utilities = qs.query(X, y, batch_size=batch_size, return_utilities=True)
    idx = np.asarray(idx)
    scores = np.asarray(utilities)[np.arange(len(idx)), idx]
    return idx, scores


@outputs.command("query")
def main(args: argparse.Namespace) -> int:
    """Print (and optionally write) the picked rows."""
    from metaal.data import load_labelled_and_unlabelled

    data = load_labelled_and_unlabelled(args.data, args.target, drop=args.drop, id_column=args.id)
    X, y, _ = data
    check_request(y, args.batch_size)
    qs = load_query_strategy(args.policy, args.seed, args.learner)  # a bad policy fails here
    if args.out:
        outputs.check_output_file(args.out)
    idx, scores = picks_of(qs, X, y, args.batch_size)
    header, rows = picks_table(idx, scores, data.ids, args.id)
    print(
        f"{len(idx)} rows to annotate next (of {int(np.isnan(y).sum())} unlabelled); {SCORE_NOTE}:"
    )
    shown = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in shown)) for i, h in enumerate(header)]
    print("  ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True)))
    for row in shown:
        print("  ".join(f"{v:>{w}}" for v, w in zip(row, widths, strict=True)))
    if args.out:
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        writer.writerow(header)
        writer.writerows(rows)
        atomic.write_text(args.out, text.getvalue())
        print(f"written to {args.out}")
    return 0
