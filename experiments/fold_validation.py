r"""Leave-tasks-out validation of a training recipe, in one command (issue 16's protocol).

    python -m metaal.experiments.fold_validation --heuristics runs/val_heuristics \
        --out runs/folds_sel_big_a1 -- --agent imitation --preset sel_big_a1

For each fold K (0, 1, 2 by default) it runs

    metaal train ARGS --suite train-fit:K --seed K --out OUT/fK
    metaal evaluate --suite train-val:K --seeds 20 --first-seed 10000 --budget 100 \
        --strategies none --policy OUT/fK/policy --out OUT/val_fK

(the seed is FIRST + K with `--first-train-seed FIRST`: another draw of the recipe),
where ARGS are the words after `--`, with `{fold}` replaced by K (so a PPO fine-tuning can
start from another recipe's fold: `--init-policy runs/folds_a1/f{fold}/policy`). Then it
prints `policy_table`'s row of every fold against the heuristics run (paired on each fold's
data sets and seeds), a row of the folds pooled (each fold's policy on its own data sets,
ranked as one) and the verdict: the recipe counts only if its mean AULC is above
margin's on every fold. Each fold trains on data sets its validation never sees, which
fresh splits of the training data sets do not give.

The heuristics run is a finished `metaal evaluate` of at least the validation folds' data
sets and seeds (`--suite train --first-seed 10000`, margin and BADGE among its strategies);
it is checked before any compute. A finished fold is not run again: a rerun with the same
arguments resumes (a fold's training from its last checkpoint), and one with other
arguments into the same `--out` is refused.
`--fit-suite` and `--val-suite` change the fold templates (any suites, `{fold}` for K).
`--opponents margin,badge,eer,emoc` adds W/T/L and `AULC - X` columns against more
heuristics of the run (checked before any compute; the verdict stays against margin).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from metaal import tracking
from metaal.agents import checkpoint
from metaal.data import suite_names
from metaal.experiments import cli
from metaal.experiments.policy_table import (
    OPPONENTS,
    add_opponents_flag,
    opponents_of,
    policy_rows,
    read_results,
)
from metaal.experiments.report import markdown_table
from metaal.experiments.train import finished_policy

#: Flags the protocol sets itself for every fold; a recipe's ARGS must not give them.
PROTOCOL_FLAGS = ("--suite", "--seed", "--out", "--resume")
#: The file in `--out` that records the arguments, so a rerun resumes only the same protocol.
PROTOCOL_FILE = "protocol.json"


def at_fold(template: str, fold: int) -> str:
    """A suite or argument template with `{fold}` replaced by `fold`."""
    return template.replace("{fold}", str(fold))


def train_argv(
    recipe: Sequence[str], fold: int, fit_suite: str, out: Path, first_seed: int = 0
) -> list[str]:
    """`metaal train` arguments of one fold: the recipe's, its suite, seed and folder.

    `{fold}` in the recipe's words becomes `fold`; the training seed is `first_seed +
    fold`. Raises ValueError if the recipe sets a flag the protocol sets (`PROTOCOL_FLAGS`).
    """
    given = [a for a in recipe if a.split("=")[0] in PROTOCOL_FLAGS]
    if given:
        raise ValueError(
            f"recipe arguments {given} are set by the protocol for each fold (suite "
            f"{fit_suite!r}, seed = --first-train-seed + fold, out = OUT/f<fold>): remove them"
        )
    filled = [at_fold(a, fold) for a in recipe]
    seed = str(first_seed + fold)
    return [
        "train",
        *filled,
        "--suite",
        at_fold(fit_suite, fold),
        "--seed",
        seed,
        "--out",
        str(out),
    ]


def evaluate_argv(
    fold: int,
    val_suite: str,
    policy: Path,
    out: Path,
    seeds: int,
    first_seed: int,
    budget: int,
    wandb_mode: str = "offline",
) -> list[str]:
    """`metaal evaluate` arguments that validate one fold's policy alone on its held-out fold.

    The policy's strategy is named after the run: `<run folder>_f<fold>`; the folds of one
    validation share a W&B group, the name of the protocol's folder.
    """
    return [
        "evaluate",
        "--suite",
        at_fold(val_suite, fold),
        "--seeds",
        str(seeds),
        "--first-seed",
        str(first_seed),
        "--budget",
        str(budget),
        "--strategies",
        "none",
        "--policy",
        str(policy),
        "--name",
        f"{policy.parent.parent.name}_f{fold}",
        "--wandb-mode",
        wandb_mode,
        "--wandb-group",
        policy.parent.parent.name,
        "--out",
        str(out),
    ]


def check_heuristics(
    heuristics: pd.DataFrame,
    val_suite: str,
    folds: Sequence[int],
    seeds: Sequence[int],
    opponents: Sequence[str] = OPPONENTS,
) -> None:
    """Raise ValueError unless the heuristics run covers every validation fold.

    It must hold margin, BADGE and the `opponents` on every fold's data sets and seeds, so
    that nothing is trained that could not be ranked.
    """
    missing = ({"margin", "badge"} | set(opponents)) - set(heuristics["strategy"])
    if missing:
        raise ValueError(
            f"the heuristics run lacks {sorted(missing)}: evaluate them too, or leave them "
            "out of --opponents"
        )
    seeds_of = heuristics.groupby("dataset")["seed"].unique()
    for fold in folds:
        suite = at_fold(val_suite, fold)
        for name in suite_names(suite):
            lacking = sorted(set(seeds) - set(seeds_of.get(name, ())))
            if lacking:
                raise ValueError(
                    f"the heuristics run lacks data set {name} (of {suite}) at seeds "
                    f"{lacking[:5]}{' ...' if len(lacking) > 5 else ''}: evaluate the "
                    "heuristics on those data sets and seeds"
                )


def verdict(table: pd.DataFrame) -> bool:
    """A recipe counts only if its mean AULC is above margin's on every fold."""
    return bool((table["AULC - margin"] > 0).all())


def claim(out: Path, protocol: dict[str, Any]) -> None:
    """Create `out` for this protocol, or accept it if it holds the same one (a resume).

    A folder holding only the record of another protocol (its first training refused its
    arguments, nothing ran) takes the new one.
    """
    record = out / PROTOCOL_FILE
    if record.is_file():
        before = json.loads(record.read_text())
        ran = any(p.name != PROTOCOL_FILE for p in out.iterdir())
        if before != protocol and not ran:
            record.write_text(json.dumps(protocol, indent=1))
        elif before != protocol:
            raise ValueError(
                f"{out} holds a fold validation with other arguments ({record}): give "
                "another --out, or the same arguments to resume it"
            )
        return
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not a fold validation: give another --out")
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(protocol, indent=1))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's flags (the recipe's `metaal train` arguments come after `--`)."""
    parser.add_argument("--heuristics", required=True, help="finished evaluation of heuristics")
    parser.add_argument("--out", required=True, help="folder of the folds' runs and the table")
    parser.add_argument("--folds", default="0,1,2", help="folds K to run, comma-separated")
    parser.add_argument("--fit-suite", default="train-fit:{fold}", help="training suite of K")
    parser.add_argument("--val-suite", default="train-val:{fold}", help="validation suite of K")
    parser.add_argument(
        "--first-train-seed",
        type=int,
        default=0,
        help="fold K trains with seed FIRST + K (another draw of the recipe: 3, 6, ...)",
    )
    parser.add_argument("--seeds", type=int, default=20, help="validation seeds per fold")
    parser.add_argument("--first-seed", type=int, default=10000, help="first validation seed")
    parser.add_argument("--budget", type=int, default=100, help="validation budget")
    add_opponents_flag(parser)  # shown only: the verdict is against margin
    parser.add_argument(
        "--wandb-mode",
        choices=tracking.MODES,
        default="offline",
        help="W&B mode of the validation runs (the recipe's train arguments set their own)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Train and validate every fold, print the table and the verdict; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv[:split])
    recipe = argv[split + 1 :]
    out = Path(args.out)
    try:
        folds = [int(k) for k in args.folds.split(",")]
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        heuristics = read_results(args.heuristics)
        opponents = opponents_of(args.opponents)
        check_heuristics(heuristics, args.val_suite, folds, seeds, opponents)
        for fold in folds:  # every suite name and every protocol flag, before any compute
            train_argv(recipe, fold, args.fit_suite, out / f"f{fold}", args.first_train_seed)
            suite_names(at_fold(args.fit_suite, fold))
        # where the results are logged, and which opponents are shown, are not part of it
        shown_only = ("out", "folds", "wandb_mode", "opponents")
        protocol = {k: v for k, v in vars(args).items() if k not in shown_only}
        claim(out, {**protocol, "recipe": recipe})
    except (ValueError, OSError) as err:
        parser.error(str(err))
    frames = []
    for fold in folds:
        run, val = out / f"f{fold}", out / f"val_f{fold}"
        if finished_policy(run) is None:
            # a fold stopped after a checkpoint continues from it (its config is in there)
            resume = run.is_dir() and checkpoint.list_checkpoints(run)
            code = cli.main(
                ["train", "--resume", str(run)]
                if resume
                else train_argv(recipe, fold, args.fit_suite, run, args.first_train_seed)
            )
            if code:
                return code
        if not (val / "results.csv").is_file():
            code = cli.main(
                evaluate_argv(
                    fold, args.val_suite, run / "policy", val, args.seeds, args.first_seed,
                    args.budget, args.wandb_mode,
                )
            )  # fmt: skip
            if code:
                return code
        frames.append(read_results(val))
    table = policy_rows(heuristics, frames, opponents=opponents)
    counts = verdict(table)
    # every fold's policy on its own fold, ranked as one: more data sets, less noise
    pooled = pd.concat(frames).assign(strategy=f"{out.name}_pooled")
    shown = pd.concat(
        [table, policy_rows(heuristics, [pooled], opponents=opponents)], ignore_index=True
    )
    text = markdown_table(shown.set_index("policy").round(4)) + (
        f"\n\nverdict: {'counts' if counts else 'does not count'} (AULC - margin "
        f"{' / '.join(f'{d:+.4f}' for d in table['AULC - margin'])}, "
        f"mean {table['AULC - margin'].mean():+.4f})\n"
    )
    (out / "folds.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
