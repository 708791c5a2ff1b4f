"""`metaal demo`: the main job, end to end, on the embedded defaults.

1. meta-trains one seed of the default policy's recipe (PPO on the `train`
   suite, 2M env steps, about 6 minutes, exported behind margin's shortlist
   of 16; the shipped default is the vote of five such seeds, about 30
   minutes, `configs.DEFAULT_POLICY_COMMAND`);
2. evaluates it on the `heldout` suite, never seen in training, against
   every deployable heuristic, with the (non-deployable) oracle as a
   reference shown apart;
3. writes the run folder (policy, report, plots, CSVs), logs to W&B
   (offline by default; the training and evaluation runs share one group,
   `--wandb-group` or the run folder's name) and prints the summary table.

`metaal demo --quick` skips training and evaluates the shipped policy.
Every input is checked, and the run folder claimed and locked
(`metaal.experiments.outputs.claim`), before anything is computed.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

from metaal import metrics, tracking
from metaal.experiments import outputs
from metaal.learners import LEARNERS

DEFAULT_SEEDS = 20
DEFAULT_BUDGET = 100


def add_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> None:
    """Options of `metaal demo`."""
    parser.add_argument(
        "--quick", action="store_true", help="use the shipped policy, no training (default: off)"
    )
    parser.add_argument("--out", help="run folder (default: a fresh runs/demo__<unix time>)")
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="paired seeds")
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGET, help="queries per run")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument(
        "--no-oracle", action="store_true", help="skip the oracle reference (default: off)"
    )
    parser.add_argument(
        "--query-batch",
        type=int,
        default=1,
        help="picks per round in the evaluation (the learner refits once a round) (default: 1)",
    )
    parser.add_argument(
        "--init",
        choices=("stratified", "random", "centroids"),
        default="stratified",
        help="the evaluation's initial labelled set (centroids: a cold start, no labels) "
        "(default: stratified)",
    )
    parser.add_argument(
        "--learner",
        default="logreg",
        help=f"the env's learner in training and evaluation: a name ({', '.join(LEARNERS)}) "
        "with optional settings, name:key=value,... (default: logreg)",
    )
    parser.add_argument(
        "--wandb-mode", choices=tracking.MODES, default="offline", help="W&B logging mode"
    )
    parser.add_argument(
        "--wandb-group",
        help="W&B group of the demo's training and evaluation runs (default: the run folder's "
        "name)",
    )
    parser.add_argument(
        "--devices",
        type=int,
        help="local devices that share training's env slots and the evaluation's episodes "
        "(default: all)",
    )


def summary_table(results_csv: Path, learned: str = "learned") -> str:
    """Mean rank and AULC per strategy (deployable ones ranked; the oracle apart), W/T/L."""
    import pandas as pd

    results = pd.read_csv(results_csv)
    deployable = results[results.strategy != "oracle"]
    summary = metrics.summarise(deployable)
    ranks = metrics.mean_ranks(summary)
    aulc = summary.groupby("strategy").aulc_mean.mean()
    wtl = metrics.win_tie_loss(deployable)
    wtl = wtl[wtl.strategy == learned].set_index("opponent")
    lines = [f"{'strategy':<18} {'mean rank':>9} {'mean AULC':>9}  W/T/L of {learned}"]
    for name in ranks.sort_values().index:
        row = wtl.loc[name] if name in wtl.index else None
        versus = f"{row.wins}/{row.ties}/{row.losses}" if row is not None else ""
        lines.append(f"{name:<18} {ranks[name]:>9.2f} {aulc[name]:>9.4f}  {versus}")
    if (results.strategy == "oracle").any():
        oracle = metrics.summarise(results[results.strategy == "oracle"]).aulc_mean.mean()
        lines.append(f"{'oracle (reference)':<18} {'-':>9} {oracle:>9.4f}  (not deployable)")
    return "\n".join(lines)


#: The parts of a demo's folder: a folder holding either already holds a demo's results.
PARTS = ("train", "eval")


@outputs.command("demo")
def main(args: argparse.Namespace) -> int:
    """Train (unless --quick), evaluate on `heldout`, print the summary."""
    from metaal.envs.core import EnvConfig
    from metaal.experiments import flags

    if args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
    with flags.in_flag_terms({"budget": "--budget", "learner": "--learner"}):
        EnvConfig(budget=args.budget, learner=args.learner)  # bad values fail before any compute
    from metaal.experiments.evaluate import episode_mesh

    episode_mesh(args.devices)  # a device count this process cannot give: an error now
    out = Path(args.out) if args.out else outputs.fresh_folder("runs", "demo")
    with outputs.claim(out, holds=PARTS, fix="choose another --out"):
        print(f"run folder: {out}", flush=True)
        return _run(args, out)


def _run(args: argparse.Namespace, out: Path) -> int:
    """The demo inside its claimed folder `out`."""
    from metaal.data import suite_names
    from metaal.experiments import configs
    from metaal.experiments.evaluate import evaluate
    from metaal.experiments.train import train
    from metaal.strategies import HEURISTICS

    started = time.perf_counter()
    group = args.wandb_group or out.resolve().name  # training and evaluation: one W&B group
    if args.quick:
        policy = "default"
        print("demo --quick: evaluating the shipped default policy", flush=True)
    else:
        print(
            f"demo 1/2: meta-training seed {args.seed} of the default policy's recipe (PPO on "
            f"the train suite, 2M env steps, margin shortlist {configs.DEFAULT_POLICY_SHORTLIST}); "
            f"the shipped policy is the vote of {configs.DEFAULT_POLICY_MEMBERS} such seeds: "
            f"{configs.DEFAULT_POLICY_COMMAND}",
            flush=True,
        )
        settings = configs.default_policy_settings(args.seed)
        env = dataclasses.replace(settings.config.env, learner=args.learner)
        policy = train(
            dataclasses.replace(settings, config=settings.config.replace(env=env)),
            out / "train",
            wandb_mode=args.wandb_mode,
            command="metaal demo (training step)",
            wandb_group=group,
            devices=args.devices,
        )
    print(
        f"demo 2/2: evaluating on the held-out suite ({args.seeds} seeds, budget {args.budget})",
        flush=True,
    )
    strategies = [*HEURISTICS] + ([] if args.no_oracle else ["oracle"])
    evaluate(
        suite_names("heldout"),
        strategies=strategies,
        seeds=args.seeds,
        budget=args.budget,
        learner=args.learner,
        query_batch=args.query_batch,
        init=args.init,
        out_dir=out / "eval",
        wandb_mode=args.wandb_mode,
        policy=policy,
        suite="heldout",
        wandb_group=group,
        devices=args.devices,
    )
    print()
    print(summary_table(out / "eval" / "results.csv"))
    print(f"\nrun folder: {out} (report: {out / 'eval' / 'report.md'})")
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    return 0
