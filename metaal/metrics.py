"""Evaluation metrics: learning curves, normalised AULC, ranks, and paired win/tie/loss.

Definitions (used by every report):

- learning curve of a run: test accuracy after `t` queries, t = 0..B
  (t = 0 is the initial labelled set);
- normalised AULC of a run: the mean of its learning curve over t = 0..B,
  `(1 / (B + 1)) * sum_t acc_t`: the area under the curve (one unit per
  query) divided by its length, so it is in [0, 1] like accuracy;
- rank on a data set: strategies ordered by mean AULC over seeds, highest =
  rank 1, tied means (equal to 12 decimals) share the average of their
  ranks; mean rank: the mean over data sets;
- win/tie/loss of A against B: per data set, a two-sided paired Wilcoxon
  signed-rank test on the seeds' AULCs at level `alpha`; significant with A's
  mean AULC above B's is a win, below a loss; otherwise (or when every paired
  difference is zero) a tie.

`results` frames hold one row per (dataset, strategy, seed, step) with
columns `dataset, strategy, seed, step, n_labeled, test_accuracy`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

RESULT_COLUMNS = ("dataset", "strategy", "seed", "step", "n_labeled", "test_accuracy")
SUMMARY_COLUMNS = (
    "dataset",
    "strategy",
    "aulc_mean",
    "aulc_std",
    "final_accuracy_mean",
    "rank",
)
ALPHA = 0.05
TIE_DECIMALS = 12


def aulc(curve: np.ndarray) -> np.ndarray:
    """Normalised AULC of learning curves along the last axis: their mean over steps 0..B."""
    return np.mean(np.asarray(curve, dtype=np.float64), axis=-1)


def run_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per run (dataset, strategy, seed) with its `aulc` and `final_accuracy`."""
    ordered = results.sort_values(["dataset", "strategy", "seed", "step"])
    runs = ordered.groupby(["dataset", "strategy", "seed"], sort=False)["test_accuracy"]
    return pd.DataFrame({"aulc": runs.mean(), "final_accuracy": runs.last()}).reset_index()


def rank_within(values: pd.Series, groups: pd.Series) -> pd.Series:
    """Rank of each value within its group, highest = 1, ties averaged.

    Values equal to `TIE_DECIMALS` decimals tie, so summation-order rounding
    cannot split strategies with the same curves.
    """
    return (
        values.round(TIE_DECIMALS)
        .groupby(groups)
        .transform(
            lambda v: pd.Series(stats.rankdata(-v.to_numpy(), method="average"), index=v.index)
        )
    )


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, strategy): AULC mean and sample std over seeds, final accuracy, rank.

    The std is 0 for a single seed.
    """
    runs = run_table(results)
    grouped = runs.groupby(["dataset", "strategy"], sort=False)
    summary = pd.DataFrame(
        {
            "aulc_mean": grouped["aulc"].mean(),
            "aulc_std": grouped["aulc"].std(ddof=1).fillna(0.0),
            "final_accuracy_mean": grouped["final_accuracy"].mean(),
        }
    ).reset_index()
    summary["rank"] = rank_within(summary["aulc_mean"], summary["dataset"])
    return summary[list(SUMMARY_COLUMNS)]


def mean_ranks(summary: pd.DataFrame) -> pd.Series:
    """Mean rank over data sets of each strategy, best (lowest) first."""
    return summary.groupby("strategy")["rank"].mean().sort_values(kind="stable")


def paired_outcome(a: np.ndarray, b: np.ndarray, alpha: float = ALPHA) -> int:
    """+1 if `a` beats `b`, -1 if it loses, 0 for a tie (two-sided paired Wilcoxon at `alpha`)."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if not np.any(diff != 0):
        return 0
    p = stats.wilcoxon(diff).pvalue
    if not p < alpha:
        return 0
    return int(np.sign(np.mean(diff)))


def win_tie_loss(results: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Counts over data sets of each strategy's wins, ties and losses against each other one.

    Columns `strategy, opponent, wins, ties, losses`; seeds are paired by
    their seed number, so only seeds every strategy ran are compared.
    """
    runs = run_table(results)
    strategies = list(dict.fromkeys(runs["strategy"]))
    counts = {(s, o): [0, 0, 0] for s in strategies for o in strategies if s != o}
    for _, per_dataset in runs.groupby("dataset", sort=False):
        table = per_dataset.pivot(index="seed", columns="strategy", values="aulc").dropna()
        for s, o in counts:
            if s in table and o in table:
                outcome = paired_outcome(table[s].to_numpy(), table[o].to_numpy(), alpha)
                counts[s, o][1 - outcome] += 1
    return pd.DataFrame(
        [(s, o, *c) for (s, o), c in counts.items()],
        columns=["strategy", "opponent", "wins", "ties", "losses"],
    )


def round_windows(budget: int, query_batch: int, rounds: int = 3) -> dict[str, tuple[int, int]]:
    """Step windows (first, last) of the first and the last `rounds` rounds of batch size b.

    A window includes its ends, so the first one starts at the initial set (step 0) and
    the last one ends at the budget; a last short round counts as a round.
    """
    ends = list(range(query_batch, budget, query_batch)) + [budget]
    if len(ends) < 2 * rounds:
        raise ValueError(
            f"{len(ends)} round(s) of {query_batch} in a budget of {budget}: fewer than the "
            f"{2 * rounds} that a first and a last {rounds} need"
        )
    return {
        f"first {rounds} rounds": (0, ends[rounds - 1]),
        f"last {rounds} rounds": (
            ends[-rounds - 1],
            budget,
        ),
    }


def window_summary(results: pd.DataFrame, first: int, last: int) -> pd.DataFrame:
    """`summarise` of the learning curves restricted to steps first..last (AULC over them)."""
    return summarise(results[(results["step"] >= first) & (results["step"] <= last)])
