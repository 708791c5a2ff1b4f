"""Tests for metaal.metrics against closed forms and constructed data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from metaal import metrics


def results_frame(curves: dict[tuple[str, str, int], list[float]]) -> pd.DataFrame:
    rows = [
        (d, s, seed, t, 5 + t, acc)
        for (d, s, seed), curve in curves.items()
        for t, acc in enumerate(curve)
    ]
    return pd.DataFrame(rows, columns=list(metrics.RESULT_COLUMNS))


def test_aulc_of_constant_and_linear_curves():
    assert metrics.aulc(np.full(101, 0.8)) == pytest.approx(0.8)
    # mean of 0, 0.01, ..., 1.0 over steps 0..100
    assert metrics.aulc(np.linspace(0.0, 1.0, 101)) == pytest.approx(0.5)
    np.testing.assert_allclose(metrics.aulc(np.array([[0.2, 0.4], [1.0, 0.0]])), [0.3, 0.5])


def test_summary_columns_values_and_ranks_with_ties():
    curves = {
        ("d1", "a", 0): [0.5, 0.7, 0.9],  # aulc 0.7
        ("d1", "a", 1): [0.5, 0.5, 0.5],  # aulc 0.5
        ("d1", "b", 0): [0.6, 0.6, 0.6],
        ("d1", "b", 1): [0.6, 0.6, 0.6],  # mean 0.6 = a's mean: tie
        ("d1", "c", 0): [0.1, 0.1, 0.1],
        ("d1", "c", 1): [0.1, 0.1, 0.1],
        ("d2", "a", 0): [0.9, 0.9, 0.9],
        ("d2", "b", 0): [0.8, 0.8, 0.8],
        ("d2", "c", 0): [0.7, 0.7, 0.7],
    }
    summary = metrics.summarise(results_frame(curves))
    assert tuple(summary.columns) == metrics.SUMMARY_COLUMNS
    row = summary.set_index(["dataset", "strategy"])
    assert row.loc[("d1", "a"), "aulc_mean"] == pytest.approx(0.6)
    assert row.loc[("d1", "a"), "aulc_std"] == pytest.approx(np.std([0.7, 0.5], ddof=1))
    assert row.loc[("d1", "a"), "final_accuracy_mean"] == pytest.approx(0.7)
    assert row.loc[("d2", "a"), "aulc_std"] == 0.0  # single seed
    # a and b tie for ranks 1 and 2 on d1: both get 1.5
    assert row.loc[("d1", "a"), "rank"] == 1.5
    assert row.loc[("d1", "b"), "rank"] == 1.5
    assert row.loc[("d1", "c"), "rank"] == 3.0
    assert list(row.xs("d2")["rank"]) == [1.0, 2.0, 3.0]
    ranks = metrics.mean_ranks(summary)
    assert list(ranks.index) == ["a", "b", "c"]
    np.testing.assert_allclose(ranks.values, [1.25, 1.75, 3.0])


def test_paired_outcome_wilcoxon():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.6, 0.8, size=20)
    assert metrics.paired_outcome(base + 0.01, base) == 1  # every seed better: p ~ 2e-6
    assert metrics.paired_outcome(base - 0.01, base) == -1
    assert metrics.paired_outcome(base, base) == 0  # all differences zero: a tie, no error
    symmetric = np.array([0.01, -0.01] * 10)
    assert metrics.paired_outcome(base + symmetric, base) == 0
    # 5 seeds can never reach p < 0.05 two-sided (min p = 2 / 2^5)
    assert metrics.paired_outcome(base[:5] + 0.01, base[:5]) == 0


def test_win_tie_loss_counts_over_datasets():
    rng = np.random.default_rng(1)
    curves = {}
    for d in ("d1", "d2", "d3"):
        base = rng.uniform(0.5, 0.7, size=10)
        for seed in range(10):
            better = 0.05 if d != "d3" else 0.0  # a beats b on d1, d2; equal on d3
            curves[(d, "a", seed)] = [base[seed] + better] * 3
            curves[(d, "b", seed)] = [base[seed]] * 3
    wtl = metrics.win_tie_loss(results_frame(curves)).set_index(["strategy", "opponent"])
    assert tuple(wtl.loc[("a", "b")]) == (2, 1, 0)
    assert tuple(wtl.loc[("b", "a")]) == (0, 1, 2)
