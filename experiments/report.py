"""Evaluation reports: report.md (AULC table, mean ranks, win/tie/loss) and PNG plots.

Numbers come from `metaal.metrics`; this module only lays them out.
Plots use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from metaal import atomic, metrics  # noqa: E402


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of `frame` (index included as the first column)."""
    frame = frame.reset_index()
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def aulc_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Datasets x strategies of `mean ± std` AULC, the best mean per data set in bold."""
    cells = summary.assign(
        cell=[
            f"**{m:.4f}** ± {s:.4f}" if r == 1 or r == r_min else f"{m:.4f} ± {s:.4f}"
            for m, s, r, r_min in zip(
                summary["aulc_mean"],
                summary["aulc_std"],
                summary["rank"],
                summary.groupby("dataset")["rank"].transform("min"),
                strict=True,
            )
        ]
    )
    order = list(metrics.mean_ranks(summary).index)
    return cells.pivot(index="dataset", columns="strategy", values="cell")[order]


def mean_rank_table(summary: pd.DataFrame) -> str:
    """Markdown table of each strategy's mean rank and mean AULC over data sets, best first."""
    ranks = metrics.mean_ranks(summary)
    table = pd.DataFrame(
        {
            "mean_rank": ranks.round(2),
            "mean_aulc": summary.groupby("strategy")["aulc_mean"].mean()[ranks.index].round(4),
        }
    )
    table.index.name = "strategy"
    return markdown_table(table)


def win_tie_loss_matrix(wtl: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Strategy (row) against opponent (column) as `wins/ties/losses` over data sets."""
    counts = wtl[["wins", "ties", "losses"]].to_numpy()
    cells = wtl.assign(cell=[f"{win}/{tie}/{loss}" for win, tie, loss in counts])
    matrix = cells.pivot(index="strategy", columns="opponent", values="cell")
    matrix = matrix.reindex(index=order, columns=order).fillna("-")
    matrix.index.name = "strategy \\ opponent"
    return matrix


#: What the band around each learning curve is (the legend's title says it).
BAND = "band: ± 1 standard error of the mean over seeds"


def curves_title(results: pd.DataFrame) -> str:
    """The learning-curve plot's title: seeds, budget, initial labels, and what the band is."""
    seeds = results["seed"].nunique()
    budget = int(results["step"].max())
    start = results.loc[results["step"] == 0, "n_labeled"]
    initial = f" after {int(start.iloc[0])} initial labels" if len(start) else ""
    return f"Test accuracy over {budget} queries{initial}, mean of {seeds} paired seeds"


def learning_curves_figure(results: pd.DataFrame) -> plt.Figure:
    """One panel per data set: mean test accuracy per strategy over queries, ± 1 standard error.

    Each strategy keeps its colour and dash pattern in every panel. The
    legend (every strategy, in one column per 16 names) sits right of the
    panels and the figure grows with it, so no name is cut off.
    """
    datasets = list(dict.fromkeys(results["dataset"]))
    strategies = list(dict.fromkeys(results["strategy"]))
    cols = min(4, len(datasets))
    rows = math.ceil(len(datasets) / cols)
    legend_cols = math.ceil(len(strategies) / 16)
    panel_height = max(3.0, 0.22 * min(len(strategies), 16) / rows + 1.0)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(4.5 * cols + 2.2 * legend_cols, panel_height * rows + 0.8),
        squeeze=False,
    )
    stats = (
        results.groupby(["dataset", "strategy", "step"])["test_accuracy"]
        .agg(["mean", "std", "count"])
        .reset_index()
    )
    stats["sem"] = stats["std"].fillna(0.0) / np.sqrt(stats["count"])
    # One fixed colour and dash pattern per strategy, distinct for up to 20 strategies.
    palette = plt.get_cmap("tab20").colors
    style = {
        s: (palette[(2 * i) % 20 + (2 * i) // 20], "-" if i < 10 else "--")
        for i, s in enumerate(strategies)
    }
    for ax, dataset in zip(axes.flat, datasets, strict=False):
        for strategy, curve in stats[stats["dataset"] == dataset].groupby("strategy", sort=False):
            colour, dash = style[strategy]
            ax.plot(curve["step"], curve["mean"], dash, color=colour, label=strategy, lw=1.2)
            low, high = curve["mean"] - curve["sem"], curve["mean"] + curve["sem"]
            ax.fill_between(curve["step"], low, high, color=colour, alpha=0.15)
        ax.set_title(dataset, fontsize=9)
        ax.set_xlabel("queries")
        ax.set_ylabel("test accuracy")
    for ax in list(axes.flat)[len(datasets) :]:
        ax.axis("off")
    # every strategy, from all panels (a strategy may be missing from the first)
    handles = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.suptitle(curves_title(results), fontsize=10)
    fig.tight_layout()
    order = [s for s in strategies if s in handles]  # the results' order, not the sorted one
    fig.legend(
        [handles[s] for s in order],
        order,
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        ncol=legend_cols,
        fontsize=8,
        title=BAND,
        title_fontsize=8,
    )
    return fig


def plot_learning_curves(results: pd.DataFrame, path: Path) -> Path:
    """Write `learning_curves_figure(results)` as a PNG (atomically); returns its path."""
    fig = learning_curves_figure(results)
    with atomic.replacing(path) as tmp:
        # "tight" grows the saved image to hold the legend outside the panels whole
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_mean_ranks(summary: pd.DataFrame, path: Path) -> Path:
    """Horizontal bars of each strategy's mean rank over data sets (lower is better)."""
    ranks = metrics.mean_ranks(summary)
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(ranks) + 1.2))
    ax.barh(ranks.index[::-1], ranks.values[::-1], color="tab:blue")
    ax.set_xlabel(f"mean rank over {summary['dataset'].nunique()} data sets (1 = best AULC)")
    fig.tight_layout()
    with atomic.replacing(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def round_window_lines(results: pd.DataFrame, config: dict) -> list[str]:
    """Report lines ranking the strategies over the first and the last 3 rounds (batch runs)."""
    budget = config.get("budget")
    b = config.get("env", {}).get("query_batch", 1)
    if b <= 1 or not budget or budget // b < 6:
        return []
    columns = {}
    for name, (first, last) in metrics.round_windows(budget, b).items():
        window = metrics.window_summary(results, first, last)
        ranks = metrics.mean_ranks(window)
        aulc = window.groupby("strategy")["aulc_mean"].mean()
        columns[f"rank, {name} (steps {first}..{last})"] = ranks
        columns[f"AULC, {name}"] = aulc
    table = pd.DataFrame(columns).sort_values(next(iter(columns)), kind="stable")
    table.index.name = "strategy"
    return [
        f"## Early against late rounds (rounds of {b})",
        "",
        "Mean rank and mean AULC over the learning curve's first and last 3 rounds only.",
        "",
        markdown_table(table.round(4)),
        "",
    ]


def write_report(
    results: pd.DataFrame, summary: pd.DataFrame, out: Path, config: dict
) -> dict[str, Path]:
    """Write report.md and the plots into `out`; returns their paths by name."""
    wtl = metrics.win_tie_loss(results)
    order = list(metrics.mean_ranks(summary).index)
    learners = config.get("learners", {})
    other = {s: lr for s, lr in learners.items() if lr != config.get("env", {}).get("learner")}
    budget, seeds = config.get("budget"), config.get("seeds", [])
    lines = [
        f"# Evaluation: {config.get('suite', '')}",
        "",
        f"{len(summary['dataset'].unique())} data sets, {len(order)} strategies, "
        f"{len(seeds)} paired seeds, budget {budget} queries after an initial set of "
        f"{config.get('n_initial')}; candidates: "
        f"{config.get('n_candidates') or 'the whole unlabelled pool'}.",
        "",
        "AULC is the mean test accuracy over steps 0..B (step 0 = the initial set). "
        "Rank 1 = highest mean AULC on a data set, ties averaged.",
    ]
    if other:
        lines += [
            "",
            "Learners: every strategy uses "
            f"`{config.get('env', {}).get('learner')}` except "
            + ", ".join(f"{s} (`{lr}`)" for s, lr in other.items())
            + "; their accuracies are those learners' (BALD needs an ensemble's disagreement).",
        ]
    if config.get("references"):
        lines += [
            "",
            "References, not deployable (they read validation labels): "
            + ", ".join(config["references"])
            + ". The oracle looks one step ahead over a random subset of candidates.",
        ]
    lines += [
        "",
        "## Mean rank over data sets",
        "",
        mean_rank_table(summary),
        "",
    ]
    lines += round_window_lines(results, config)
    lines += [
        "## AULC per data set (mean ± std over seeds)",
        "",
        markdown_table(aulc_table(summary)),
        "",
        f"## Win / tie / loss (paired Wilcoxon signed-rank over seeds, alpha {metrics.ALPHA})",
        "",
        "Each cell counts the data sets on which the row strategy's AULC is significantly "
        "higher / not different / significantly lower than the column strategy's.",
        "",
        markdown_table(win_tie_loss_matrix(wtl, order)),
        "",
        "![learning curves](learning_curves.png)",
        "",
        "![mean ranks](mean_ranks.png)",
        "",
    ]
    paths = {
        "report": out / "report.md",
        "learning_curves": plot_learning_curves(results, out / "learning_curves.png"),
        "mean_ranks": plot_mean_ranks(summary, out / "mean_ranks.png"),
    }
    atomic.write_text(paths["report"], "\n".join(lines))
    return paths
