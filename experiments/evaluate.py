"""Evaluate query strategies on data sets: paired runs, learning curves, AULC, ranks, plots, W&B.

    metaal evaluate --suite heldout --seeds 20 --budget 100 --out runs/heldout
    metaal evaluate --data mine.csv --target label --strategies margin,random,coreset
    metaal evaluate --suite heldout --policy runs/dqn/policy --name dqn

Protocol (see `metaal.metrics` for the numbers):
- paired runs: for seed s every strategy gets the same split
  (`make_split(task, s)`), the same initial labelled set and the same env
  randomness (keys derived from s only, never from the strategy);
- every unlabelled pool sample is a candidate at every step (by default);
- one `jit(vmap(...))` per strategy runs every data set and seed at once:
  the data sets are padded to common shapes (`stack_splits`), so each
  strategy compiles once whatever the number of data sets;
- strategies share one learner (`logreg` by default) except those that
  declare another (`Strategy.learner`): BALD runs with the `ensemble`
  learner, because ensemble disagreement is what it measures. Its curve is
  therefore the ensemble's test accuracy; the report says so.

Outputs in `--out` (default: a fresh folder `runs/evaluate/<suite>__<unix time>`):
results.csv (dataset, strategy, seed, step, n_labeled, test_accuracy),
summary.csv (dataset, strategy, aulc_mean, aulc_std, final_accuracy_mean,
rank), config.json (what was run), report.md, learning_curves.png,
mean_ranks.png, and a W&B run (offline by default) with the config, the
`eval/<dataset>/<strategy>/test_accuracy` curves, the summary table and the
plots. The folder is checked and locked before anything is computed
(`metaal.experiments.outputs.claim`); one that already holds results is
refused unless `--overwrite`. Every file is written atomically
(`metaal.atomic`): a killed run leaves no half-written file.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from metaal import atomic, metrics, tracking
from metaal.data import Task, load_file, load_task, make_split, stack_splits, suite_names
from metaal.data.batch import TaskBatch
from metaal.envs.core import INITS, ActiveLearningEnv, EnvConfig, check_fits, make_params
from metaal.experiments import flags, outputs, report
from metaal.learners import LEARNERS
from metaal.strategies import (
    HEURISTICS,
    STRATEGIES,
    Strategy,
    get_strategy,
    initial_memory,
    select,
)
from metaal.strategies.learned import LearnedStrategy

DEFAULT_SEEDS = 20
#: First split seed of the validation protocol: training runs never train on split seeds
#: this high (they use 0..splits_per_task-1), so the training tasks' splits from here are fresh.
VALIDATION_SEED = 10_000
DEFAULT_BUDGET = 100
DEFAULT_INITIAL = 5
#: The default output: a fresh folder `DEFAULT_OUT/<suite>__<unix time>` per run (compared by
#: identity, so passing the string "runs/evaluate" writes exactly there).
DEFAULT_OUT = Path("runs/evaluate")
#: The file whose presence means a folder holds an evaluation's results: written last, so a
#: folder without it holds at most the partial files of a killed run, which a rerun replaces.
RESULT_FILES = ("results.csv",)
DEFAULT_LEARNER = "logreg"
#: Episodes run by one call of a compiled runner (bounds memory on large suites).
DEFAULT_MAX_ENVS = 256
WANDB_PROJECT = "metaal"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One strategy to evaluate and the env settings it runs with."""

    strategy: Strategy
    config: EnvConfig

    def with_params(self, params: Any) -> Entry:
        """The same entry scoring with other learned `params` (same compiled runner)."""
        return dataclasses.replace(self, strategy=self.strategy._replace(params=params))


# --- inputs ---------------------------------------------------------------------------


def load_tasks(
    tasks_or_names: Sequence[Task | str],
    targets: Sequence[str | None] = (),
    drop: Sequence[str] = (),
    id_column: str | None = None,
) -> list[Task]:
    """Tasks from `Task`s, data set names or file paths (`targets[i]`: label column of file i).

    `drop` and `id_column` name columns of every file that are not features
    (see `load_file`). A file's task is named by its file name (`mine.csv`),
    or by its full path when two files share a name.
    """
    tasks = []
    targets = list(targets)
    for i, item in enumerate(tasks_or_names):
        target = targets[i] if i < len(targets) else None
        if isinstance(item, Task):
            tasks.append(item)
        elif Path(item).is_file():
            tasks.append(load_file(item, target, drop=drop, id_column=id_column))
        else:
            tasks.append(load_task(str(item), target))
    short = [Path(t.name).name if Path(t.name).is_file() else t.name for t in tasks]
    tasks = [
        dataclasses.replace(t, name=s) if short.count(s) == 1 else t
        for t, s in zip(tasks, short, strict=True)
    ]
    names = [t.name for t in tasks]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"data set(s) {repeated} given more than once; list each once")
    if not tasks:
        raise ValueError("no data sets to evaluate on; pass --suite NAME or --data FILE")
    return tasks


def resolve_strategies(
    strategies: Sequence[Strategy | str] | None,
    policy: LearnedStrategy | str | Path | None = None,
    policy_name: str = "learned",
) -> list[tuple[Strategy, int | None]]:
    """Strategies by name (None: the deployable heuristics) plus the policy, with probe sizes."""
    if strategies is not None and not strategies and policy is None:
        raise ValueError(
            "the list of strategies is empty; name some, e.g. ['margin', 'random'], or pass "
            "None to run every heuristic"
        )
    chosen = [
        get_strategy(s) if isinstance(s, str) else s
        for s in (HEURISTICS if strategies is None else strategies)
    ]
    out: list[tuple[Strategy, int | None]] = [(s, None) for s in chosen]
    if policy is not None:
        learned = policy if isinstance(policy, LearnedStrategy) else LearnedStrategy.load(policy)
        out.append((learned.to_strategy(policy_name), learned.probe_size))
    names = [s.name for s, _ in out]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(
            f"strategy name(s) {repeated} appear more than once; a learned policy needs a "
            "name of its own (--name)"
        )
    return out


def make_entries(strategies: list[tuple[Strategy, int | None]], base: EnvConfig) -> list[Entry]:
    """Each strategy with its `EnvConfig`: `base` but for the learner, probe size and columns.

    A policy's env computes exactly the candidate columns it was trained on.
    """
    return [
        Entry(
            strategy,
            dataclasses.replace(
                base,
                learner=strategy.learner or base.learner,
                probe_size=probe or base.probe_size,
                features=strategy.features or base.features,
            ),
        )
        for strategy, probe in strategies
    ]


def make_batch(tasks: Sequence[Task], seeds: Sequence[int], **split: Any) -> TaskBatch:
    """Every (task, seed) split padded to common shapes, task-major: row t * S + s.

    `split` goes to `make_split` (`max_pool`, `max_val`, `max_test`, `max_features`).
    """
    return stack_splits([make_split(task, int(seed), **split) for task in tasks for seed in seeds])


def check_budget(tasks: Sequence[Task], batch: TaskBatch, n_seeds: int, config: EnvConfig) -> None:
    """A clear error naming the data set when its pool cannot hold initial set + budget."""
    for t, task in enumerate(tasks):
        rows = slice(t * n_seeds, (t + 1) * n_seeds)
        check_fits(jax.tree.map(lambda a, rows=rows: a[rows], batch), config, task.name)
    if n_candidates := config.n_candidates:
        if n_candidates > batch.pool_X.shape[-2]:
            raise ValueError(
                f"--n-candidates {n_candidates} exceeds the largest pool "
                f"({batch.pool_X.shape[-2]}); leave it out to offer the whole pool"
            )


# --- the vmapped episode --------------------------------------------------------------


def seed_keys(seeds: Sequence[int]) -> jax.Array:
    """One key per seed: the root of its env and strategy randomness (never the strategy's name)."""
    return jnp.stack([jax.random.key(int(s)) for s in seeds])


def episode_runner(strategy: Strategy, config: EnvConfig):
    """`runner(keys (E,), params (E, ...), strategy_params)` -> accuracy, n_labeled (E, B+1).

    One `jit(vmap(episode))` per params-free strategy and config, cached, so
    repeated evaluations (every evaluation during training, too) reuse the
    compiled code; a learned policy's parameters are an argument
    (`strategy.params`), never constants of the program.
    """
    return _compiled_runner(strategy.without_params(), config)


@functools.lru_cache(maxsize=64)
def _compiled_runner(strategy: Strategy, config: EnvConfig):
    env = ActiveLearningEnv(config)

    def episode(key, params, strategy_params):
        env_key, strategy_key = jax.random.split(key)
        reset_key, steps_key = jax.random.split(env_key)
        init_key, score_key, select_key = jax.random.split(strategy_key, 3)
        _, state = env.reset_env(reset_key, params)
        memory = initial_memory(strategy, init_key, env.context(state, params), strategy_params)

        def step(carry, keys):
            state, memory = carry
            k_env, k_score, k_select = keys
            obs = env.observe(state, params)
            scores, memory = strategy.score(k_score, obs, env.context(state, params), memory)
            action = select(scores, obs.action_mask, k_select)
            _, state, _, _, _, info = env.step_env(k_env, state, action, params)
            return (state, memory), (info["test_score"], info["n_labeled"])

        keys = tuple(jax.random.split(k, config.budget) for k in (steps_key, score_key, select_key))
        _, (acc, n_labeled) = jax.lax.scan(step, (state, memory), keys)
        acc0 = env.test_accuracy(state.learner, params.task)
        return (
            jnp.concatenate([acc0[None], acc]),
            jnp.concatenate([state.n_labeled[None], n_labeled]),
        )

    return jax.jit(jax.vmap(episode, in_axes=(0, 0, None)))


def episode_mesh(devices: int | None = None) -> Mesh | None:
    """A 1-D mesh over `devices` local devices (None: all) for the episode axis; None for one."""
    local = jax.local_devices()
    n = len(local) if devices is None else devices
    if not 1 <= n <= len(local):
        raise ValueError(
            f"--devices {n}: this process sees {len(local)} device(s) "
            f"({local[0].platform}); choose 1..{len(local)}"
        )
    return None if n == 1 else Mesh(np.array(local[:n]), ("episode",))


def run_chunked(
    runner, keys: jax.Array, params, max_envs: int, strategy_params=None, mesh: Mesh | None = None
):
    """`runner(keys, params, strategy_params)` over at most `max_envs` episodes at a time.

    The last chunk is padded with copies of episode 0, so every call has the
    same shapes and the runner compiles once (bounded memory). With a `mesh`,
    each chunk's episodes are split over its devices (a chunk is padded to a
    multiple of the device count); episodes are independent, so every
    episode's arithmetic is the same on any number of devices, up to XLA's code
    for another per-call batch size, whose rounding can flip a near-tie (README).
    """
    n = keys.shape[0]
    d = 1 if mesh is None else mesh.size
    chunk = -(-min(max_envs, n) // d) * d
    if chunk == n:
        return runner(*_placed(mesh, keys, params), strategy_params)
    index = np.concatenate([np.arange(n), np.zeros(-n % chunk, int)])
    outputs = [
        runner(
            *_placed(mesh, keys[rows], jax.tree.map(lambda a, rows=rows: a[rows], params)),
            strategy_params,
        )
        for rows in np.split(index, len(index) // chunk)
    ]
    return jax.tree.map(lambda *parts: jnp.concatenate(parts)[:n], *outputs)


def _placed(mesh: Mesh | None, keys, params):
    if mesh is None:
        return keys, params
    sharding = NamedSharding(mesh, PartitionSpec("episode"))
    return jax.device_put((keys, params), sharding)


def curves_frame(
    names: Sequence[str],
    seeds: Sequence[int],
    strategy: str,
    acc: np.ndarray,
    n_labeled: np.ndarray,
) -> pd.DataFrame:
    """Long results rows of one strategy from (T * S, B + 1) arrays."""
    n_runs, n_steps = acc.shape
    run = np.repeat(np.arange(n_runs), n_steps)
    return pd.DataFrame(
        {
            "dataset": np.asarray(names, dtype=object)[run // len(seeds)],
            "strategy": strategy,
            "seed": np.asarray(seeds)[run % len(seeds)],
            "step": np.tile(np.arange(n_steps), n_runs),
            "n_labeled": n_labeled.reshape(-1).astype(int),
            "test_accuracy": acc.reshape(-1).astype(np.float64),
        }
    )


def run_entries(
    entries: Sequence[Entry],
    names: Sequence[str],
    seeds: Sequence[int],
    params,
    max_envs: int = DEFAULT_MAX_ENVS,
    progress: bool = False,
    mesh: Mesh | None = None,
) -> pd.DataFrame:
    """Results rows of every entry on the padded splits `params` (task-major, seeds `seeds`).

    What `evaluate` and the evaluations during training both run: the same
    keys (one per seed, whatever the strategy) and the same compiled runners.
    """
    keys = jnp.tile(seed_keys(seeds), len(names))
    frames = []
    for entry in tqdm(entries, desc="strategies", unit="strategy", disable=not progress):
        runner = episode_runner(entry.strategy, entry.config)
        acc, n_labeled = run_chunked(runner, keys, params, max_envs, entry.strategy.params, mesh)
        frames.append(
            curves_frame(names, seeds, entry.strategy.name, np.asarray(acc), np.asarray(n_labeled))
        )
    return pd.concat(frames, ignore_index=True)[list(metrics.RESULT_COLUMNS)]


# --- the pipeline ---------------------------------------------------------------------


def evaluate(
    tasks_or_names: Sequence[Task | str],
    strategies: Sequence[Strategy | str] | None = None,
    seeds: int | Sequence[int] = DEFAULT_SEEDS,
    budget: int | None = None,
    n_initial: int | None = None,
    out_dir: str | Path | None = DEFAULT_OUT,
    wandb_mode: str = "offline",
    policy: LearnedStrategy | str | Path | None = None,
    policy_name: str = "learned",
    shortlist: int | None = None,
    n_candidates: int | None = None,
    targets: Sequence[str | None] = (),
    drop: Sequence[str] = (),
    id_column: str | None = None,
    suite: str = "custom",
    learner: str | None = None,
    wandb_project: str = WANDB_PROJECT,
    progress: bool = True,
    max_envs: int = DEFAULT_MAX_ENVS,
    env: EnvConfig | None = None,
    split: dict[str, Any] | None = None,
    query_batch: int | None = None,
    init: str | None = None,
    overwrite: bool = False,
    devices: int | None = None,
    wandb_group: str | None = None,
) -> pd.DataFrame:
    """Run every strategy on every task and seed; write the outputs to `out_dir`; return results.

    `seeds` is a count (seeds 0..n-1) or explicit seed numbers. `strategies`
    None runs every deployable heuristic; an empty list runs only `policy`.
    `out_dir=None` writes nothing (and logs nothing to W&B); the default
    writes to a fresh folder `runs/evaluate/<suite>__<unix time>`. A folder
    that already holds results is refused unless `overwrite`, and a folder
    another run is writing to is refused; both before anything is computed.
    At most `max_envs` episodes (data sets x seeds) run at once. Returns the
    results frame (columns `metaal.metrics.RESULT_COLUMNS`). `policy` is a
    `LearnedStrategy`, a policy file, `"default"` or the folder of a finished
    `metaal train` run. `shortlist` puts the policy behind margin's shortlist
    of that size (`LearnedStrategy.with_shortlist`; 0 lifts the policy's own).
    `drop` and `id_column` name columns of the files that are not features.
    `devices` local devices share the episodes (None: all); results agree
    across device counts up to rare near-tie flips (README).

    The env is `EnvConfig(budget, n_initial, n_candidates, learner, query_batch,
    init)` (defaults: budget 100, 5 initial labels, the whole pool as
    candidates, `logreg`, one pick per round, a stratified start), or `env`
    itself, which then replaces those six arguments. `split` goes to
    `make_split` (e.g. `max_pool`, `max_features`; default: its defaults).
    The W&B run (job type `evaluate`, tags `suite:` and `learner:`) joins
    `wandb_group` if given (`write_outputs`).
    """
    seeds = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must be a positive count or a non-empty list of seeds")
    if wandb_mode not in tracking.MODES:
        raise ValueError(f"unknown W&B mode {wandb_mode!r}; choose one of {tracking.MODES}")
    own = (budget, n_initial, n_candidates, learner, query_batch, init)
    if env is None:
        env = EnvConfig(
            budget=DEFAULT_BUDGET if budget is None else budget,
            n_initial=DEFAULT_INITIAL if n_initial is None else n_initial,
            n_candidates=n_candidates,
            learner=learner or DEFAULT_LEARNER,
            query_batch=query_batch or 1,
            init=init or "stratified",
        )
    elif own != (None,) * len(own):
        raise ValueError(
            "pass budget, n_initial, n_candidates, learner, query_batch and init inside env, "
            "not with it"
        )
    policy_file = str(policy) if isinstance(policy, str | Path) else None
    if policy_file is not None:
        if policy_file in STRATEGIES and not Path(policy_file).exists():
            raise ValueError(
                f"--policy {policy_file}: {policy_file!r} is a heuristic, not a learned policy; "
                f"evaluate it with --strategies {policy_file} (strategies=[{policy_file!r}])"
            )
        policy = LearnedStrategy.load(policy_file)
    if shortlist is not None:
        if policy is None:
            raise ValueError("--shortlist restricts a learned policy; add --policy")
        policy = policy.with_shortlist(shortlist)
    mesh = episode_mesh(devices)
    chosen = resolve_strategies(strategies, policy, policy_name)
    entries = make_entries(chosen, env)
    if out_dir is DEFAULT_OUT:
        out_dir = outputs.fresh_folder(DEFAULT_OUT, suite)
    folder = (
        contextlib.nullcontext()
        if out_dir is None
        else outputs.claim(
            out_dir,
            holds=RESULT_FILES,
            fix="choose another --out, or pass --overwrite to replace them",
            overwrite=overwrite,
        )
    )
    with folder:
        tasks = load_tasks(tasks_or_names, targets, drop, id_column)
        names = [t.name for t in tasks]
        batch = make_batch(tasks, seeds, **(split or {}))
        check_budget(tasks, batch, len(seeds), entries[0].config)
        params = jax.jit(jax.vmap(make_params))(batch)

        started = time.perf_counter()
        results = run_entries(entries, names, seeds, params, max_envs, progress, mesh)
        elapsed = time.perf_counter() - started

        if out_dir is not None:
            config = {
                "suite": suite,
                "datasets": names,
                "strategies": [e.strategy.name for e in entries],
                "learners": {e.strategy.name: e.config.learner for e in entries},
                "references": [e.strategy.name for e in entries if not e.strategy.deployable],
                "seeds": seeds,
                "budget": env.budget,
                "n_initial": env.n_initial,
                "n_candidates": env.n_candidates,
                "env": dataclasses.asdict(entries[0].config),
                "split": split or {},
                "policy": policy_file,
                "policy_shortlist": None if policy is None else policy.config.get("shortlist", 0),
                "elapsed_seconds": elapsed,
                "devices": 1 if mesh is None else mesh.size,
            }
            write_outputs(
                results, Path(out_dir), config, wandb_mode, wandb_project, wandb_group=wandb_group
            )
    return results


def wandb_tags(config: dict) -> list[str]:
    """An evaluation's W&B tags: `suite:<suite>` and `learner:<the env's learner>`."""
    tags = [f"suite:{config['suite']}"]
    learner = config.get("env", {}).get("learner")
    return tags + ([f"learner:{learner}"] if learner else [])


#: config.json entries that must agree for evaluations to be merged
MERGE_KEYS = ("datasets", "seeds", "budget", "n_initial", "n_candidates", "split")
#: EnvConfig fields that may differ between merged evaluations (BALD runs on its ensemble)
MERGE_ENV_FREE = ("learner", "features")


def merge_evaluations(
    folders: Sequence[str | Path],
    out_dir: str | Path,
    wandb_mode: str = "offline",
    wandb_project: str = WANDB_PROJECT,
    overwrite: bool = False,
    wandb_group: str | None = None,
) -> pd.DataFrame:
    """One report of finished evaluations run on the same tasks, seeds and env; returns results.

    Adding a strategy to an evaluation then costs only that strategy's runs. The
    evaluations must agree on the data sets, seeds, budget, initial set, candidates,
    split and every env setting but the learner (a strategy runs on its own learner);
    a strategy in two of them is refused. Nothing is written before every folder is
    checked.
    """
    if len(folders) < 2:
        raise ValueError("--merge needs at least two evaluation folders")
    configs, frames = [], []
    for folder in map(Path, folders):
        if not (folder / "results.csv").is_file() or not (folder / "config.json").is_file():
            raise ValueError(
                f"--merge {folder}: not a finished evaluation (no results.csv and config.json)"
            )
        configs.append(json.loads((folder / "config.json").read_text()))
        frames.append(pd.read_csv(folder / "results.csv"))
    first = configs[0]
    for folder, config in zip(folders[1:], configs[1:], strict=True):
        for key in MERGE_KEYS:
            if config.get(key) != first.get(key):
                raise ValueError(
                    f"--merge {folder}: its {key} ({config.get(key)}) differs from "
                    f"{folders[0]}'s ({first.get(key)}); merge evaluations of the same runs"
                )
        env_a, env_b = (
            {k: v for k, v in c.get("env", {}).items() if k not in MERGE_ENV_FREE}
            for c in (first, config)
        )
        if env_a != env_b:
            diff = sorted(k for k in env_a.keys() | env_b.keys() if env_a.get(k) != env_b.get(k))
            raise ValueError(
                f"--merge {folder}: env settings {', '.join(diff)} differ from {folders[0]}'s"
            )
    seen: dict[str, Path] = {}
    for folder, config in zip(map(Path, folders), configs, strict=True):
        for name in config["strategies"]:
            if name in seen:
                raise ValueError(
                    f"--merge: strategy {name!r} is in both {seen[name]} and {folder}; "
                    "leave one folder out"
                )
            seen[name] = folder
    merged = dict(first)
    for key in ("strategies", "references"):
        merged[key] = [n for c in configs for n in c.get(key, [])]
    merged["learners"] = {k: v for c in configs for k, v in c.get("learners", {}).items()}
    policies = [c.get("policy") for c in configs if c.get("policy")]
    merged["policy"] = policies[0] if len(policies) == 1 else policies or None
    merged["merged_from"] = [str(f) for f in folders]
    merged["elapsed_seconds"] = sum(c.get("elapsed_seconds", 0.0) for c in configs)
    results = pd.concat(frames, ignore_index=True)
    with outputs.claim(
        out_dir,
        holds=RESULT_FILES,
        fix="choose another --out, or pass --overwrite to replace them",
        overwrite=overwrite,
    ):
        write_outputs(results, Path(out_dir), merged, wandb_mode, wandb_project, wandb_group)
    return results


def write_outputs(
    results: pd.DataFrame,
    out: Path,
    config: dict,
    wandb_mode: str,
    wandb_project: str,
    wandb_group: str | None = None,
) -> dict[str, Path]:
    """Write the CSVs, report and plots to `out` and log them to a W&B run; returns the paths.

    The W&B run (job type `evaluate`, tags `wandb_tags`, group `wandb_group`)
    gets the curves, the summary table, the win/tie/loss table
    (`eval/win_tie_loss`), the plots, the mean ranks and the files
    results.csv, summary.csv and report.md as an artifact of type
    `evaluation`.
    """
    out.mkdir(parents=True, exist_ok=True)
    summary = metrics.summarise(results)
    paths = {"config": out / "config.json", "summary": out / "summary.csv"}
    atomic.write_text(paths["config"], json.dumps(config, indent=2, default=str))
    with atomic.replacing(paths["summary"]) as tmp:
        summary.to_csv(tmp, index=False)
    paths.update(report.write_report(results, summary, out, config))
    # results.csv last: its presence means the evaluation's files are all complete
    paths["results"] = out / "results.csv"
    with atomic.replacing(paths["results"]) as tmp:
        results.to_csv(tmp, index=False)

    run = tracking.init_run(
        wandb_project,
        tracking.run_name(config["suite"], "eval", config["seeds"][0]),
        {**config, "wandb_group": wandb_group},
        mode=wandb_mode,
        dir=out,
        group=wandb_group,
        job_type="evaluate",
        tags=wandb_tags(config),
    )
    curves = results.groupby(["step", "dataset", "strategy"])["test_accuracy"].mean()
    for step, per_step in curves.groupby(level="step"):
        run.log(
            {f"eval/{d}/{s}/test_accuracy": float(v) for (_, d, s), v in per_step.items()},
            step=int(step),
        )
    run.log_table("eval/summary", summary)
    run.log_table("eval/win_tie_loss", metrics.win_tie_loss(results))
    run.log_images({f"eval/plots/{p.stem}": p for p in paths.values() if p.suffix == ".png"})
    run.update_summary(
        {f"eval/mean_rank/{s}": float(r) for s, r in metrics.mean_ranks(summary).items()}
    )
    run.log_artifact(
        f"evaluation-{run.id}",
        "evaluation",
        [paths[name] for name in ("results", "summary", "report") if name in paths],
    )
    run.finish()
    return paths


# --- command line ---------------------------------------------------------------------


def _init_method(text: str) -> str:
    if text.isdigit():
        raise argparse.ArgumentTypeError(
            f"--init names how the initial set is drawn ({', '.join(INITS)}); its size is "
            f"--n-initial {text}"
        )
    if text not in INITS:
        raise argparse.ArgumentTypeError(f"--init {text!r}: choose one of {', '.join(INITS)}")
    return text


def add_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> None:
    """Add the `metaal evaluate` options to `parser`."""
    parser.add_argument(
        "--devices",
        type=int,
        help="local devices that share the episodes (default: all; see the README on how "
        "results can differ across device counts)",
    )
    parser.add_argument(
        "--merge",
        action="append",
        default=[],
        metavar="DIR",
        help="merge finished evaluations of the same tasks, seeds and env into one report in "
        "--out (repeatable; runs nothing)",
    )
    data = parser.add_argument_group("data (at least one)")
    data.add_argument("--suite", help="task suite: heldout, train, synthetic[:N], a+b, or one name")
    data.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="FILE",
        help="your own CSV / TSV / NPZ file (repeatable)",
    )
    data.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="COLUMN",
        help="label column of each --data file (once for all files, or once per file)",
    )
    data.add_argument(
        "--drop",
        action="append",
        default=[],
        metavar="COLUMN",
        help="a column of the --data files to leave out of the features (repeatable)",
    )
    data.add_argument(
        "--id", metavar="COLUMN", help="a column of the --data files naming rows: not a feature"
    )
    parser.add_argument(
        "--strategies",
        help="comma-separated strategy names, or 'none' to run only --policy (default: "
        f"{','.join(HEURISTICS)})",
    )
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="seeds 0..N-1")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="the seeds are FIRST..FIRST+N-1 (default 0). Training runs train on split seeds "
        f"0..splits_per_task-1: `--first-seed {VALIDATION_SEED}` on their suite is the "
        "validation protocol, the training tasks' fresh splits",
    )
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGET, help="queries per run")
    parser.add_argument(
        "--n-initial",
        type=int,
        default=DEFAULT_INITIAL,
        help=f"size of the initial labelled set (default: {DEFAULT_INITIAL})",
    )
    parser.add_argument(
        "--n-candidates",
        type=int,
        default=None,
        help="candidates offered per step (default: the whole unlabelled pool)",
    )
    parser.add_argument(
        "--learner",
        default=DEFAULT_LEARNER,
        help=f"the env's learner: a name ({', '.join(LEARNERS)}) with optional settings, "
        "name:key=value,... e.g. mlp:hidden=64,weight_decay=0.001 (BALD always runs on "
        f"ensemble) (default: {DEFAULT_LEARNER})",
    )
    parser.add_argument(
        "--query-batch",
        type=int,
        default=1,
        help="picks per round: the learner is refitted and scored once a round (default: 1)",
    )
    parser.add_argument(
        "--init",
        type=_init_method,
        default="stratified",
        help="the initial labelled set: stratified (reads labels), random, or centroids "
        "(k-means on the features, no labels: a cold start) (default: stratified)",
    )
    parser.add_argument(
        "--out", help=f"output folder (default: a fresh {DEFAULT_OUT}/<suite>__<unix time>)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results an --out folder already holds (default: refuse)",
    )
    parser.add_argument(
        "--wandb-mode", choices=tracking.MODES, default="offline", help="W&B logging mode"
    )
    parser.add_argument("--wandb-project", default=WANDB_PROJECT, help="W&B project")
    parser.add_argument("--wandb-group", help="W&B group of the run (default: none)")
    parser.add_argument(
        "--policy",
        help="a learned policy: a policy file (LearnedStrategy.save), 'default' for the shipped "
        "one, or the folder of a finished `metaal train` run (default: none)",
    )
    parser.add_argument("--name", default="learned", help="the learned policy's strategy name")
    parser.add_argument(
        "--shortlist",
        type=int,
        help="the policy re-ranks only margin's K most uncertain candidates (overrides the "
        "policy's own; 0: all candidates) (default: the policy's own)",
    )


#: The `EnvConfig` fields `metaal evaluate` sets, by the flag that sets them (for messages).
ENV_FLAGS = {
    "budget": "--budget",
    "n_initial": "--n-initial",
    "n_candidates": "--n-candidates",
    "learner": "--learner",
}


@outputs.command("evaluate")
def main(args: argparse.Namespace) -> int:
    """Run `metaal evaluate` from parsed arguments; returns the exit code (2 on bad input)."""
    if args.merge:
        if not args.out:
            raise ValueError("--merge writes the merged report to --out; add --out DIR")
        results = merge_evaluations(
            args.merge,
            args.out,
            args.wandb_mode,
            args.wandb_project,
            args.overwrite,
            args.wandb_group,
        )
        print(report.mean_rank_table(metrics.summarise(results)))
        print(f"results in {args.out}")
        return 0
    if not args.suite and not args.data:
        raise ValueError("no data sets given; pass --suite NAME or --data FILE")
    if args.target and not args.data:
        raise ValueError("--target names the label column of --data files; add --data FILE")
    if (args.drop or args.id) and not args.data:
        raise ValueError("--drop and --id name columns of --data files; add --data FILE")
    if len(args.target) not in (0, 1, len(args.data)):
        raise ValueError(
            f"{len(args.target)} --target values for {len(args.data)} --data files; "
            "give one for all files or one per file"
        )
    targets = args.target * len(args.data) if len(args.target) == 1 else args.target
    names = suite_names(args.suite) if args.suite else []
    strategies = None
    if args.strategies is not None and args.strategies.strip() == "none":
        if not args.policy:
            raise ValueError("--strategies none runs only the learned policy; add --policy")
        strategies = []
    elif args.strategies is not None:  # "--strategies ," names none: an error, not every one
        strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
        if not strategies:
            raise ValueError(
                f"--strategies {args.strategies!r} names no strategy; list some, e.g. "
                "--strategies margin,random, or leave it out to run every heuristic"
            )
    if args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
    if args.first_seed < 0:
        raise ValueError(f"--first-seed must be >= 0, got {args.first_seed}")
    if args.n_candidates is not None and args.n_candidates < 1:
        raise ValueError(
            f"--n-candidates must be at least 1, got {args.n_candidates}; leave it out to offer "
            "the whole pool"
        )
    if args.shortlist is not None and args.shortlist < 0:
        raise ValueError(f"--shortlist must be >= 0 (0: no shortlist), got {args.shortlist}")
    with flags.in_flag_terms(ENV_FLAGS):
        env = EnvConfig(
            budget=args.budget,
            n_initial=args.n_initial,
            n_candidates=args.n_candidates,
            learner=args.learner,
            query_batch=args.query_batch,
            init=args.init,
        )
    suite = args.suite or "data"
    out = Path(args.out) if args.out else outputs.fresh_folder(DEFAULT_OUT, suite)
    print(f"evaluating into {out}", flush=True)
    results = evaluate(
        [*args.data, *names],
        strategies=strategies,
        seeds=range(args.first_seed, args.first_seed + args.seeds),
        env=env,
        out_dir=out,
        wandb_mode=args.wandb_mode,
        policy=args.policy,
        policy_name=args.name,
        shortlist=args.shortlist,
        targets=targets,
        drop=args.drop,
        id_column=args.id,
        suite=suite,
        wandb_project=args.wandb_project,
        overwrite=args.overwrite,
        wandb_group=args.wandb_group,
        devices=args.devices,
    )
    summary = metrics.summarise(results)
    print(report.mean_rank_table(summary))
    print(f"results in {out}")
    return 0
