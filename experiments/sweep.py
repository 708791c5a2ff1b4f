"""`metaal sweep`: a grid of hyper-parameters times seeds, trained as one vmapped program.

    metaal sweep --agent ppo --grid lr=1e-4,3e-4,1e-3 --grid ent_coef=0,0.01 --out runs/sweep
    metaal sweep --agent ppo --grid hidden=32,32:64,64 --wandb-yaml sweep.yaml   # W&B's grid

The grid's axes are float fields of the agent's config (`lr`, `ent_coef`,
`gamma`, `gae_lambda`, `clip_eps`, `vf_coef`, `max_grad_norm` for PPO; `lr`,
`gamma`, `tau`, `eps_*` for DQN; `learning_rate`, `temperature`,
`beta_decay` for imitation): pytree leaves of the config, so every
combination is one member of a `vmap` (purejaxrl's `jit(vmap(train))`), and
the whole sweep compiles once. Each combination and seed is an ordinary run
folder, OUT/<axis>=<value>,...,seed<k> (checkpoints, metrics, policy; one
more chunk of any of them resumes with `metaal train --resume` on its folder).

Scores come from the validation protocol: each run's last periodic evaluation
(`--eval-tasks` training tasks, on fresh splits never trained on: never a
held-out data set). OUT/sweep.csv holds every run's score, OUT/sweep.md the
table by combination (mean and spread over seeds), OUT/sweep.png the plot and
OUT/best.json the best combination with the `metaal train` flags that
reproduce it. Every run logs to W&B in one group (OUT's name), job type
`train`.

Axes that cannot be vmapped (network width, candidate count, reward
normalisation: static fields that set shapes or code paths) go to W&B's own
sweeps: `--wandb-yaml FILE` writes a grid sweep file whose agent runs
`metaal train` with flat flags (`wandb sweep FILE`, then `wandb agent ID`),
and trains nothing here.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import shlex
import sys
import typing
from pathlib import Path
from typing import Any

import pandas as pd

from metaal import atomic, tracking
from metaal.experiments import configs, flags, outputs
from metaal.experiments import train as train_mod
from metaal.experiments.configs import TrainSettings

SWEEP_FILE = "sweep.csv"
SCORE = "eval/learned/aulc"


def sweepable(config: Any) -> list[str]:
    """The float fields of an agent config: the axes one compiled sweep can vmap over."""
    hints = typing.get_type_hints(type(config))
    return [
        f.name
        for f in dataclasses.fields(config)
        if hints[f.name] is float and f.metadata.get("pytree_node", True)
    ]


def parse_grid(items: list[str], config: Any, vmapped: bool = True) -> dict[str, list[Any]]:
    """`["lr=1e-4,3e-4", ...]` -> {field: values}, checked against the agent's config.

    With `vmapped`, only `sweepable` fields; otherwise any flag field, values
    separated by `,` (or by `:` when a value itself holds commas, e.g.
    `hidden=32,32:64,64`).
    """
    grid: dict[str, list[Any]] = {}
    axes = sweepable(config)
    for item in items:
        name, eq, values = item.partition("=")
        name = name.strip().lstrip("-").replace("-", "_")
        if not eq or not values.strip():
            raise ValueError(f"--grid {item!r}: give FIELD=V1,V2,..., e.g. --grid lr=1e-4,3e-4")
        if name in grid:
            raise ValueError(f"--grid {name} given twice; list all its values in one --grid")
        if vmapped:
            if name not in axes:
                raise ValueError(
                    f"--grid {name}: not a float field of the {type(config).__name__}, so it "
                    f"cannot be vmapped; sweepable: {', '.join(axes)}. Sweep other flags with "
                    "--wandb-yaml FILE (a W&B sweep that runs metaal train)"
                )
            try:
                grid[name] = [float(v) for v in values.split(",") if v.strip()]
            except ValueError:
                raise ValueError(f"--grid {item!r}: values must be numbers") from None
        else:
            sep = ":" if ":" in values else ","
            grid[name] = [v.strip() for v in values.split(sep) if v.strip()]
    if not grid:
        raise ValueError("no --grid axis given; add e.g. --grid lr=1e-4,3e-4,1e-3")
    return grid


def combinations(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in the grid's order."""
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*grid.values())]


def run_name(combo: dict[str, Any], seed: int) -> str:
    """The folder of one combination and seed: `lr=0.001,ent_coef=0.0,seed0`."""
    return ",".join(f"{k}={v:g}" for k, v in combo.items()) + f",seed{seed}"


def sweep(
    settings: TrainSettings,
    grid: dict[str, list[float]],
    seeds: int,
    out: str | Path,
    wandb_mode: str = "offline",
    progress: bool = True,
    command: str = "",
    program: str = "vmap",
) -> pd.DataFrame:
    """Train every combination of `grid` with `seeds` seeds as one program; the score table.

    `out` is checked and locked before anything is computed; it must not
    hold a sweep. Needs `settings.run.eval_tasks` > 0 (the validation score).
    `program`: `vmap` (vectorised) or `map` (a loop inside the one program,
    each run bit for bit itself trained alone; `train.MEMBER_PROGRAMS`).
    """
    out = Path(out)
    if settings.run.eval_tasks < 1:
        raise ValueError(
            "a sweep scores its runs on their training tasks' fresh splits: give --eval-tasks >= 1"
        )
    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}")
    train_mod.check_program(program, "--program")
    for name in grid:
        if name not in sweepable(settings.config):
            raise ValueError(f"{name}: not a sweepable field of {type(settings.config).__name__}")
    combos = combinations(grid)
    first = settings.run.seed
    with outputs.claim(out, holds=(SWEEP_FILE,), fix="choose another --out"):
        runs = []
        for combo in combos:
            for seed in range(first, first + seeds):
                member = dataclasses.replace(
                    settings,
                    config=settings.config.replace(**combo),
                    run=dataclasses.replace(settings.run, seed=seed),
                )
                folder = out / run_name(combo, seed)
                runs.append(train_mod.prepare_run(member, folder, False, command, progress))
        for r in runs:
            r.out.mkdir(parents=True, exist_ok=True)
        if progress:
            print(f"{len(combos)} combinations x {seeds} seed(s) in one program: {out}", flush=True)
        group = out.resolve().name
        train_mod.train_runs(runs, wandb_mode, progress, None, group, program=program)
        rows = []
        for combo in combos:
            for seed in range(first, first + seeds):
                metrics_file = out / run_name(combo, seed) / train_mod.METRICS_FILE
                lines = metrics_file.read_text().splitlines()
                final = json.loads(lines[-1])
                rows.append(
                    {
                        **combo,
                        "seed": seed,
                        "val_aulc": final[SCORE],
                        "margin_val_aulc": final.get("eval/margin/aulc"),
                        "random_val_aulc": final.get("eval/random/aulc"),
                    }
                )
        table = pd.DataFrame(rows)
        atomic.write_text(out / SWEEP_FILE, table.to_csv(index=False))
        write_summary(table, list(grid), settings, out)
    return table


def summary_table(table: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """Mean, spread and count of the validation score per combination, best first."""
    grouped = table.groupby(axes, sort=False)["val_aulc"]
    summary = grouped.agg(["mean", "std", "min", "max", "count"]).reset_index()
    return summary.sort_values("mean", ascending=False, kind="stable").reset_index(drop=True)


def write_summary(table: pd.DataFrame, axes: list[str], settings: TrainSettings, out: Path):
    """OUT/sweep.md, OUT/sweep.png and OUT/best.json from the score table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summary_table(table, axes)
    best = {a: float(summary.iloc[0][a]) for a in axes}
    flags_line = " ".join(f"{flags.flag_name(a)} {v:g}" for a, v in best.items())
    margin = table["margin_val_aulc"].mean()
    lines = [
        f"# Sweep: {settings.agent} on {settings.data.suite}",
        "",
        f"{len(summary)} combinations x {table['seed'].nunique()} seed(s). Score: the last "
        f"periodic evaluation's AULC of the learned policy on {settings.run.eval_tasks} "
        "training task(s), fresh splits (the validation protocol; never held-out data). "
        f"Margin scores {margin:.4f} there.",
        "",
        "| " + " | ".join([*axes, "mean AULC", "std", "min", "max", "seeds"]) + " |",
        "|" + "---|" * (len(axes) + 5),
    ]
    for _, row in summary.iterrows():
        std = "-" if pd.isna(row["std"]) else f"{row['std']:.4f}"
        cells = [f"{row[a]:g}" for a in axes]
        cells += [f"{row['mean']:.4f}", std, f"{row['min']:.4f}", f"{row['max']:.4f}"]
        lines.append("| " + " | ".join([*cells, str(int(row["count"]))]) + " |")
    lines += ["", f"Best: `metaal train --agent {settings.agent} {flags_line}`", ""]
    atomic.write_text(out / "sweep.md", "\n".join(lines))
    atomic.write_text(
        out / "best.json",
        json.dumps({"agent": settings.agent, "values": best, "flags": flags_line}, indent=2),
    )
    fig, ax = plt.subplots(figsize=(max(4, 0.7 * len(summary) + 2), 3.5))
    labels = [",".join(f"{a}={row[a]:g}" for a in axes) for _, row in summary.iterrows()]
    for i, (_, row) in enumerate(summary.iterrows()):
        mask = (table[axes] == row[axes].values).all(axis=1)
        ax.scatter([i] * int(mask.sum()), table.loc[mask, "val_aulc"], color="grey", s=12)
        ax.scatter([i], [row["mean"]], color="C0", marker="_", s=300)
    ax.axhline(margin, color="C1", linestyle="--", label="margin")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("validation AULC")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "sweep.png", dpi=120)
    plt.close(fig)


def wandb_yaml(settings: TrainSettings, grid: dict[str, list[str]], preset: str) -> str:
    """A W&B grid-sweep file (JSON, which is YAML) whose agent runs `metaal train` by flags."""
    document = {
        "program": "metaal",
        "method": "grid",
        "metric": {"name": SCORE, "goal": "maximize"},
        "parameters": {k.replace("_", "-"): {"values": v} for k, v in grid.items()},
        "command": ["metaal", "train", "--agent", settings.agent, "--preset", preset, "${args}"],
    }
    return json.dumps(document, indent=2) + "\n"


def add_arguments(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> None:
    """Add the `metaal sweep` options: the grid, seeds, and every `metaal train` config flag."""
    chosen = train_mod.chosen_preset(argv or [])
    parser.add_argument("--agent", choices=sorted(configs.AGENTS), help="(default: ppo)")
    parser.add_argument(
        "--preset",
        choices=sorted({p for a in configs.AGENTS for p in configs.preset_names(a)}),
        metavar="PRESET",
        help="settings to start from, as for metaal train (default: demo)",
    )
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="FIELD=V1,V2",
        help="one axis of the grid (repeatable); float fields of the agent config "
        f"({', '.join(sweepable(chosen.config))})",
    )
    parser.add_argument("--seeds", type=int, default=2, help="seeds --seed, --seed + 1, ...")
    parser.add_argument(
        "--program",
        choices=train_mod.MEMBER_PROGRAMS,
        default="vmap",
        help="vmap: the runs vectorised (equal to each run alone up to float32 rounding); "
        "map: a loop inside the one program (bit for bit each run alone)",
    )
    parser.add_argument("--out", help="sweep folder (default: runs/sweep_<agent>__<time>)")
    parser.add_argument(
        "--wandb-yaml",
        metavar="FILE",
        help="write a W&B grid sweep over any flags (network width, candidates) to FILE and "
        "train nothing (default: off)",
    )
    parser.add_argument(
        "--wandb-mode",
        choices=tracking.MODES,
        default="offline",
        help="W&B logging mode of every run",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    if chosen.agent != "imitation":
        parser.add_argument("--shortlist", type=int, help="as for metaal train (default: 0)")
    flags.add_config_flags(parser, chosen.sections())


@outputs.command("sweep")
def main(args: argparse.Namespace) -> int:
    """Run `metaal sweep` from parsed arguments; returns the exit code (2 on bad input)."""
    argv = sys.argv[1:]
    command = "metaal " + shlex.join(argv[argv.index("sweep") :]) if "sweep" in argv else ""
    if not hasattr(args, "shortlist"):
        args.shortlist = None
    settings = train_mod.settings_from_args(args)
    preset = args.preset or "demo"
    if args.wandb_yaml:
        grid = parse_grid(args.grid, settings.config, vmapped=False)
        path = Path(args.wandb_yaml)
        if path.exists():
            raise ValueError(f"--wandb-yaml {path}: exists already; choose another file")
        atomic.write_text(path, wandb_yaml(settings, grid, preset))
        print(f"W&B sweep written to {path}: `wandb sweep {path}`, then `wandb agent <id>`")
        return 0
    grid = parse_grid(args.grid, settings.config)
    out = Path(args.out) if args.out else outputs.fresh_folder("runs", f"sweep_{settings.agent}")
    print(f"sweep folder: {out}", flush=True)
    table = sweep(
        settings, grid, args.seeds, out, args.wandb_mode, not args.quiet, command, args.program
    )
    print((out / "sweep.md").read_text())
    print(f"{len(table)} runs; table {out / SWEEP_FILE}, plot {out / 'sweep.png'}")
    return 0
