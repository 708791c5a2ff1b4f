"""Policies against the heuristics: one table row per policy, each ranked alone with them.

    python -m metaal.experiments.policy_table --heuristics runs/val_heuristics
        --policy runs/val_sel_big_s0 --policy runs/val_sl16_big_s0 [--oracle runs/oracle]

Every folder is a finished `metaal evaluate` run of the same env (`--merge`'s rule: its
`results.csv`). A policy is compared on its own data sets and seeds, which the heuristics'
run must hold; it may hold more (all of `train` against a policy validated on
`train-val:K`). For each policy the table gives its mean rank among the heuristics plus
itself, margin's rank in the same ranking, its mean AULC and the difference to margin's
and to each other opponent's (`AULC - badge`, ...), W/T/L against margin and BADGE, or the
`--opponents` given (paired Wilcoxon over seeds,
alpha 0.05; the same test as every report) and the data sets where its mean AULC is above
margin's. With `--oracle`, the share of the margin-to-oracle gap it closes: (policy -
margin) / (oracle - margin) in mean AULC. This is the table of issue 16's validation
protocol and of its held-out evaluations.

`--bar margin,eer,emoc` reads the table as the protocol's gate B: a policy passes if its
mean AULC is above each of those heuristics'; with one `--parent` folder per `--policy`
(in the same order: the draw of the same seed of the recipe it changes) it must also be
above its parent's, paired on its own data sets and seeds (`AULC - parent`). The verdict
is printed last, and the exit status is 1 when a policy fails the bar.

    python -m metaal.experiments.policy_table --heuristics runs/syn_heuristics \
        --policy runs/syn_R_s0 --parent runs/syn_P_s0 ... --bar margin,eer,emoc
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from metaal import metrics
from metaal.experiments.report import markdown_table

#: The heuristics a policy's row gives W/T/L and `AULC - X` against, by default.
OPPONENTS = ("margin", "badge")


def add_opponents_flag(parser: argparse.ArgumentParser) -> None:
    """The `--opponents` flag, shared with `fold_validation`; read it with `opponents_of`."""
    parser.add_argument(
        "--opponents",
        default=",".join(OPPONENTS),
        help="comma-separated heuristics of the run to give W/T/L and AULC - X against "
        f"(default: {','.join(OPPONENTS)})",
    )


def opponents_of(text: str) -> list[str]:
    """The heuristic names of an `--opponents` value (empty items dropped)."""
    return [o for o in text.split(",") if o]


def read_results(folder: str | Path) -> pd.DataFrame:
    """The `results.csv` of a finished evaluation folder (a clear error if it has none)."""
    path = Path(folder) / "results.csv"
    if not path.is_file():
        raise ValueError(f"{folder}: no results.csv; give the folder of a finished evaluation")
    return pd.read_csv(path)


def policy_rows(
    heuristics: pd.DataFrame,
    policies: Sequence[pd.DataFrame],
    oracle: pd.DataFrame | None = None,
    opponents: Sequence[str] = OPPONENTS,
) -> pd.DataFrame:
    """One row per policy frame (each holding one strategy) against the `heuristics` frame."""
    base = heuristics[heuristics["strategy"] != "oracle"]
    rows = []
    for frame in policies:
        names = list(dict.fromkeys(frame["strategy"]))
        if len(names) != 1:
            raise ValueError(f"a policy's evaluation must hold one strategy, got {names}")
        name = names[0]
        # paired on the policy's data sets and seeds: a heuristics run of more data sets
        # (all of `train` against a policy validated on `train-val:K`) or more seeds counts
        # on those only
        datasets, seeds = set(frame["dataset"]), set(frame["seed"])
        mine = base["dataset"].isin(datasets) & base["seed"].isin(seeds)
        missing = datasets - set(base["dataset"])
        if missing:
            raise ValueError(
                f"policy {name!r} ran on data sets the heuristics' run lacks: "
                f"{', '.join(sorted(missing))}; evaluate the heuristics on them too"
            )
        joint = pd.concat([base[mine], frame], ignore_index=True)
        summary = metrics.summarise(joint)
        ranks = metrics.mean_ranks(summary)
        aulc = summary.pivot(index="dataset", columns="strategy", values="aulc_mean")
        wtl = metrics.win_tie_loss(joint[joint["strategy"].isin([name, *opponents])])
        row = {
            "policy": name,
            "mean rank": ranks[name],
            "margin's rank": ranks["margin"],
            "best heuristic": ranks.drop(name).index[0],
            "mean AULC": aulc[name].mean(),
            "AULC - margin": aulc[name].mean() - aulc["margin"].mean(),
        }
        for opponent in opponents:
            if opponent != "margin":
                row[f"AULC - {opponent}"] = aulc[name].mean() - aulc[opponent].mean()
        for opponent in opponents:
            w = wtl[(wtl["strategy"] == name) & (wtl["opponent"] == opponent)].iloc[0]
            row[f"W/T/L vs {opponent}"] = f"{w['wins']}/{w['ties']}/{w['losses']}"
        row["above margin"] = f"{int((aulc[name] > aulc['margin']).sum())}/{len(aulc)}"
        if oracle is not None:
            ref = oracle[
                (oracle["strategy"] == "oracle")
                & oracle["seed"].isin(seeds)
                & oracle["dataset"].isin(datasets)
            ]
            o = metrics.summarise(ref)["aulc_mean"].mean()
            row["gap closed"] = (aulc[name].mean() - aulc["margin"].mean()) / (
                o - aulc["margin"].mean()
            )
        rows.append(row)
    return pd.DataFrame(rows)


def paired_mean_aulc(runs: pd.DataFrame, policy: pd.DataFrame, strategy: str = "") -> float:
    """Mean over data sets of `strategy`'s mean AULC, on `policy`'s data sets and seeds.

    `strategy` empty: every row of `runs` (a parent policy's run). A ValueError if `runs`
    lacks one of those data sets and seeds.
    """
    mine = runs[
        runs["dataset"].isin(set(policy["dataset"])) & runs["seed"].isin(set(policy["seed"]))
    ]
    if strategy:
        mine = mine[mine["strategy"] == strategy]
    pairs = set(zip(mine["dataset"], mine["seed"], strict=True))
    if pairs != set(zip(policy["dataset"], policy["seed"], strict=True)):
        raise ValueError(
            f"{strategy or 'the parent'} was not run on every data set and seed of the policy; "
            "evaluate it on them too"
        )
    return float(metrics.summarise(mine)["aulc_mean"].mean())


def bar_verdicts(
    table: pd.DataFrame,
    policies: Sequence[pd.DataFrame],
    bar: Sequence[str],
    parents: Sequence[pd.DataFrame] = (),
) -> pd.DataFrame:
    """`table` (`policy_rows`' rows, in `policies`' order) with the gate's columns.

    Every heuristic of `bar` must be among the table's opponents. Adds `AULC - parent`
    where `parents` are given (one per policy, paired on its data sets and seeds) and
    `passes`: the policy's `AULC - X` for each X of `bar`, and against its parent, all
    above 0.
    """
    if parents and len(parents) != len(policies):
        raise ValueError(
            f"--parent: give one per --policy, in the same order ({len(parents)} for "
            f"{len(policies)})"
        )
    missing = [x for x in bar if f"AULC - {x}" not in table]
    if missing:
        raise ValueError(f"the table has no AULC - X column for {missing}: add them to opponents")
    out = table.copy()
    if parents:
        out["AULC - parent"] = [
            row["mean AULC"] - paired_mean_aulc(parent, frame)
            for (_, row), frame, parent in zip(out.iterrows(), policies, parents, strict=True)
        ]
    gaps = [f"AULC - {x}" for x in bar] + (["AULC - parent"] if parents else [])
    out["passes"] = (out[gaps] > 0).all(axis=1)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table (markdown) of `--policy` folders against `--heuristics`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heuristics", required=True, help="evaluation folder of the heuristics")
    parser.add_argument(
        "--policy", action="append", required=True, help="evaluation folder of one policy"
    )
    parser.add_argument("--oracle", help="evaluation folder holding the oracle (same seeds)")
    add_opponents_flag(parser)
    parser.add_argument(
        "--bar",
        default="",
        help="comma-separated heuristics each policy's mean AULC must be above (gate B); "
        "the exit status is 1 if one is not (default: no bar)",
    )
    parser.add_argument(
        "--parent",
        action="append",
        default=[],
        help="with --bar: evaluation folder of the parent recipe's draw, one per --policy in "
        "the same order; each policy must also be above its parent",
    )
    args = parser.parse_args(argv)
    heuristics = read_results(args.heuristics)
    opponents = opponents_of(args.opponents)
    unknown = sorted(set(opponents) - set(heuristics["strategy"]))
    if unknown:
        raise SystemExit(
            f"policy_table: error: --opponents {unknown} are not in {args.heuristics}; it holds "
            f"{', '.join(sorted(set(heuristics['strategy'])))}"
        )
    bar = opponents_of(args.bar)
    unknown = sorted(set(bar) - set(heuristics["strategy"]))
    if unknown:
        raise SystemExit(f"policy_table: error: --bar {unknown} are not in {args.heuristics}")
    if args.parent and (not bar or len(args.parent) != len(args.policy)):
        raise SystemExit(
            "policy_table: error: --parent needs --bar and one --parent per --policy, in the "
            f"same order (got {len(args.parent)} for {len(args.policy)})"
        )
    oracle = read_results(args.oracle) if args.oracle else None
    policies = [read_results(p) for p in args.policy]
    parents = [read_results(p) for p in args.parent]
    # the bar's heuristics are opponents too: their `AULC - X` columns are the gate
    opponents += [x for x in bar if x not in opponents]
    table = policy_rows(heuristics, policies, oracle, opponents)
    if not bar:
        print(markdown_table(table.set_index("policy").round(4)))
        return 0
    table = bar_verdicts(table, policies, bar, parents)
    table.insert(0, "run", args.policy)
    print(markdown_table(table.set_index("run").round(4)))
    verdict = bool(table["passes"].all())
    print(
        f"bar ({', '.join(bar)}{', parent' if parents else ''}): "
        f"{'every policy passes' if verdict else 'FAILS'}"
    )
    return 0 if verdict else 1


if __name__ == "__main__":
    raise SystemExit(main())
