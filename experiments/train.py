"""Meta-train a query policy: `metaal train` (PPO or DQN over a task suite), checkpoints, export.

    metaal train --agent ppo --preset demo --out runs/ppo
    metaal train --resume runs/ppo               # continue a stopped or killed run
    metaal train --agent ppo --members 3 --out runs/vote   # 3 seeds, one vmapped program, a vote
    metaal evaluate --suite heldout --policy runs/ppo/policy

The run resolves the suite (refusing held-out data), precomputes
`splits_per_task` splits of every task (test rows dropped: training never
reads them), and runs the agent in chunks of `chunk_updates` updates, one
jitted chunk function reused throughout. After every chunk it writes a
checkpoint (so a killed run loses at most one chunk), logs CleanRL-style
metrics to W&B (`charts/episodic_return`, `charts/SPS`, `losses/*`) and
every `eval_every` chunks (and after the last) evaluates the current policy
against random and margin sampling on a few training tasks (splits never
trained on; test accuracy, `eval/*`); the same numbers go to
`OUT/metrics.jsonl`, one line per chunk, written before the chunk's
checkpoint. At the end the policy is exported to `OUT/policy`, a
`metaal.strategies.learned.LearnedStrategy` file, and logged to W&B as an
artifact of type `policy`. Every file is written atomically, and OUT is
locked for the run (`metaal.experiments.outputs`).

The W&B run has job type `train`, tags `agent:`, `suite:` and (from the
command line) `preset:`, and its group is `--wandb-group` or the run
folder's name (a vote's folder for its members). Its id, group and tags are
kept in `OUT/wandb_run.json`, so a resumed run logs to the same W&B run.

A resumed run reads its config from the checkpoint and continues bit for
bit as if it had never stopped (on the same machine): the chunk the kill
interrupted, its evaluation included, runs again and its metrics line is
written once. Resuming a finished run does nothing. Ctrl-C ends the run
with one line naming the update to resume from, and exit code 130.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import math
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from metaal import atomic, metrics, tracking
from metaal.agents import checkpoint, get_agent, make_chunk, rollout
from metaal.data import ALL_HELDOUT, check_heldout_unseen, load_task, make_split, suite_names
from metaal.data.batch import pad_split, stack_splits
from metaal.data.task import Split
from metaal.envs.core import ActiveLearningEnv, EnvConfig, check_fits, make_params
from metaal.experiments import configs, distributed, evaluate, flags, outputs
from metaal.experiments.configs import DataConfig, TrainSettings
from metaal.experiments.evaluate import make_batch
from metaal.policy_net import policy_config
from metaal.strategies import get_strategy
from metaal.strategies.lookahead import STATS

WANDB_PROJECT = "metaal"
DEFAULT_OUT = "runs/train"
#: One JSON line of metrics per chunk in the run folder (the learning curve without W&B).
METRICS_FILE = "metrics.jsonl"
#: Strategies of the periodic evaluation: the current policy and two baselines.
EVAL_STRATEGIES = ("learned", "random", "margin")
#: The W&B run of a run folder (id, group, tags), so that a resumed run continues it.
WANDB_FILE = "wandb_run.json"
#: Per-update metrics a chunk logs at their last value, not their mean over the chunk.
LAST_VALUE_METRICS = ("charts/learning_rate",)


# --- settings -------------------------------------------------------------------------


def finalise(settings: TrainSettings) -> TrainSettings:
    """Round the run up to whole chunks, so one compiled chunk function serves the whole run."""
    config = settings.config
    per_chunk = max(1, min(settings.run.chunk_updates, config.num_updates))
    updates = math.ceil(config.num_updates / per_chunk) * per_chunk
    return dataclasses.replace(
        settings,
        config=config.with_updates(updates),
        run=dataclasses.replace(settings.run, chunk_updates=per_chunk),
    )


# --- data -----------------------------------------------------------------------------


def training_names(suite: str) -> list[str]:
    """Task names of `suite`, after checking that no held-out data set is among them."""
    names = suite_names(suite)
    check_heldout_unseen(names, ALL_HELDOUT)
    return names


def _without_test(split: Split) -> Split:
    # Test accuracy is computed at every env step but never read in training: one row keeps
    # the shapes valid at almost no cost.
    return dataclasses.replace(split, test_X=split.test_X[:1], test_y=split.test_y[:1])


def stacked_params(splits: Sequence[Split], config: EnvConfig):
    """Env params of `splits` stacked on a leading axis, after checking every pool fits."""
    smallest = min(splits, key=lambda split: len(split.pool_y))
    check_fits(pad_split(smallest), config, smallest.name)
    return jax.jit(jax.vmap(make_params))(stack_splits(splits))


def load_training_tasks(settings: TrainSettings, env: ActiveLearningEnv, key: jax.Array):
    """(`TrainingTasks` of every (task, split), evaluation names, evaluation env params)."""
    params, eval_names, eval_params = training_data(settings, env)
    training = rollout.training_tasks(env, params, settings.config.reward_norm, key)
    return training, eval_names, eval_params


def training_data(settings: TrainSettings, env: ActiveLearningEnv):
    """(stacked env params of every (task, split), evaluation names, evaluation env params)."""
    data = settings.data
    names = training_names(data.suite)
    tasks = [load_task(n) for n in names]
    splits = [
        _without_test(
            make_split(
                task,
                seed,
                max_pool=data.max_pool,
                max_val=data.max_val,
                max_features=data.max_features,
            )
        )
        for task in tasks
        for seed in range(data.splits_per_task)
    ]
    params = stacked_params(splits, settings.config.env)

    eval_names = [t.name for t in tasks[: settings.run.eval_tasks]]
    eval_params = None
    if eval_names:
        batch = make_batch(tasks[: settings.run.eval_tasks], eval_seeds(settings), **split_of(data))
        check_fits(batch, settings.config.env, "evaluation tasks")
        eval_params = jax.jit(jax.vmap(make_params))(batch)
    return params, eval_names, eval_params


def eval_seeds(settings: TrainSettings) -> list[int]:
    """Split seeds of the periodic evaluation: fresh splits, never trained on."""
    return [evaluate.VALIDATION_SEED + s for s in range(settings.run.eval_seeds)]


def split_of(data: DataConfig) -> dict[str, Any]:
    """The `make_split` settings of a run's data config."""
    return {"max_pool": data.max_pool, "max_val": data.max_val, "max_features": data.max_features}


# --- evaluation -----------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def make_env(config: EnvConfig) -> ActiveLearningEnv:
    """One env object per config, so compiled functions are reused across runs in a process."""
    return ActiveLearningEnv(config)


def export_config(settings: TrainSettings, env_steps: int, command: str) -> dict[str, Any]:
    """The policy config a run exports: network, features, provenance (no shortlist yet).

    A selector run (`proposers`) records its proposers and step columns (`selector_state`):
    the policy scores their picks only. A look-ahead run records its shortlist (`lookahead`).
    """
    config = settings.config
    proposers = getattr(config, "proposers", ())
    restricted = {}
    if proposers:
        restricted = {"proposers": list(proposers), "selector_state": list(config.selector_state)}
    if getattr(config, "lookahead", 0):
        restricted = {"lookahead": int(config.lookahead)}
        stats = tuple(getattr(config, "lookahead_stats", STATS))
        if stats != STATS:  # a file with the default columns stays readable by older code
            restricted["lookahead_stats"] = list(stats)
    return policy_config(
        config.hidden,
        config.state_hidden,
        config.env.probe_size,
        features=make_env(config.env).features,
        agent=settings.agent,
        env=dataclasses.asdict(config.env),
        suite=settings.data.suite,
        seed=settings.run.seed,
        env_steps=env_steps,
        command=command,
        **restricted,
    )


def evaluation_entries(settings: TrainSettings, policy) -> list[evaluate.Entry]:
    """The periodic evaluation's strategies (`EVAL_STRATEGIES`) in the training env's config."""
    learned = (policy.to_strategy(EVAL_STRATEGIES[0]), policy.probe_size)
    baselines = [(get_strategy(name), None) for name in EVAL_STRATEGIES[1:]]
    return evaluate.make_entries([learned, *baselines], settings.config.env)


def eval_metrics(results: pd.DataFrame) -> dict[str, float]:
    """`eval/<strategy>/{aulc,final_accuracy}` and `eval/<dataset>/<strategy>/aulc`."""
    runs = metrics.run_table(results)
    out = {}
    for strategy, rows in runs.groupby("strategy", sort=False):
        out[f"eval/{strategy}/aulc"] = float(rows["aulc"].mean())
        out[f"eval/{strategy}/final_accuracy"] = float(rows["final_accuracy"].mean())
        for name, per_task in rows.groupby("dataset", sort=False):
            out[f"eval/{name}/{strategy}/aulc"] = float(per_task["aulc"].mean())
    return out


# --- the run --------------------------------------------------------------------------


#: How runs stacked in one program advance: `vmap` (vectorised: purejaxrl's
#: `jit(vmap(train))`; each run equals itself trained alone up to float32 rounding, which
#: a long run's sampled actions can amplify) or `map` (`lax.map`: one after another inside
#: the program, each bit for bit the run alone; one compile, no vectorisation).
MEMBER_PROGRAMS = ("vmap", "map")


def check_program(program: str, flag: str = "--member-program") -> None:
    """Refuse a `program` that is not one of `MEMBER_PROGRAMS`, naming `flag`."""
    if program not in MEMBER_PROGRAMS:
        raise ValueError(f"{flag} {program!r}: choose one of {', '.join(MEMBER_PROGRAMS)}")


def _over_runs(chunk: Callable, program: str) -> Callable:
    """Jitted `chunk(*stacked, tasks)` over runs stacked on a leading axis, by `program`.

    `stacked` (the runners; for a sweep the configs first) carry the run
    axis; `tasks` is shared but for its per-run reward scales (M, T).
    """
    check_program(program)

    def over(*args):
        *stacked, tasks = args

        def run(parts):
            return chunk(*parts[:-1], rollout.TrainingTasks(tasks.params, parts[-1]))

        parts = (*stacked, tasks.reward_scale)
        if program == "map":
            return jax.lax.map(run, parts)
        return jax.vmap(lambda *p: run(p))(*parts)

    return jax.jit(over)


@functools.lru_cache(maxsize=4)
def compiled_sweep(
    agent_name: str, config: Any, chunk_updates: int, program: str = "vmap"
) -> Callable:
    """Jitted `chunk(configs, runner, tasks)` over runs whose configs differ in floats.

    `configs` is the runs' configs stacked on a leading axis (their float
    fields are pytree leaves); every static field is `config`'s. `program`:
    `MEMBER_PROGRAMS`.
    """
    agent = get_agent(agent_name)
    env = make_env(config.env)

    def chunk(config, runner, tasks):
        return jax.lax.scan(
            lambda r, _: agent.update(config, r, tasks, env), runner, None, chunk_updates
        )

    return _over_runs(chunk, program)


@functools.lru_cache(maxsize=8)
def compiled(
    agent_name: str, config: Any, chunk_updates: int, members: int = 0, program: str = "vmap"
) -> tuple[Callable, Callable]:
    """Jitted `init(key, tasks)` and `chunk(runner, tasks)`, cached per (agent, config, K).

    With `members` > 0 the chunk advances that many runs at once: runners
    stacked on a leading axis, tasks shared but their reward scales (M, T).
    """
    agent = get_agent(agent_name)
    env = make_env(config.env)
    init = jax.jit(lambda key, tasks: agent.init(config, key, tasks, env))
    chunk = make_chunk(agent, config, chunk_updates, env)
    if members:
        chunk = _over_runs(chunk, program)
    return init, chunk


def _over_chunk(key: str, values: np.ndarray) -> float:
    values = np.asarray(values)
    if key in LAST_VALUE_METRICS and values.size:
        return float(values.reshape(-1)[-1])  # the value now, e.g. the current step size
    return float(np.mean(values))


def _chunk_log(stats: dict[str, np.ndarray]) -> dict[str, float]:
    """Means over the chunk's updates; RL agents' episode sums become per-episode means.

    `LAST_VALUE_METRICS` (the learning rate) are the chunk's last update's.
    """
    if "episodes" not in stats:  # imitation reports per-round means only
        return {k: _over_chunk(k, v) for k, v in stats.items()}
    episodes = float(np.sum(stats.pop("episodes")))
    returns = float(np.sum(stats.pop("episode_return_sum")))
    final_val = float(np.sum(stats.pop("final_val_score_sum")))
    log = {k: _over_chunk(k, v) for k, v in stats.items()}
    if episodes:
        log["charts/episodic_return"] = returns / episodes
        log["charts/final_val_accuracy"] = final_val / episodes
    log["charts/episodes"] = episodes
    return log


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says where the run stopped and how to resume it."""


def interrupted(run_dir: Path, resume_dir: Path) -> TrainingInterrupted:
    """The interruption of the run in `run_dir` (resumed in `resume_dir`) at its last checkpoint."""
    found = checkpoint.list_checkpoints(run_dir)
    if not found:
        return TrainingInterrupted(
            "interrupted before the first checkpoint (update 0, env step 0); nothing to resume: "
            "run the same command again"
        )
    meta = checkpoint.read_meta(found[-1])
    return TrainingInterrupted(
        f"interrupted at update {meta['updates']} (env step {meta.get('env_steps', 0)}); "
        f"resume with `metaal train --resume {resume_dir}`"
    )


def finished_policy(run_dir: str | Path) -> Path | None:
    """The policy of a finished run or vote in `run_dir` (None: not finished, or no run).

    Finished: the exported policy is there and the last checkpoint holds every
    update (every member's, for a vote).
    """
    run_dir = Path(run_dir)
    policy = run_dir / checkpoint.POLICY_FILE
    if not policy.is_file():
        return None
    record = run_dir / MEMBERS_FILE
    if record.is_file():
        seeds = json.loads(record.read_text())["seeds"]
        done = all(finished_policy(member_dir(run_dir, seed)) for seed in seeds)
        return policy if done else None
    found = checkpoint.list_checkpoints(run_dir)
    if not found:
        return None
    meta = checkpoint.read_meta(found[-1])
    settings = TrainSettings.from_dict(meta["settings"])
    return policy if meta["updates"] >= settings.config.num_updates else None


def _keep_metrics_until(out: Path, env_steps: int) -> None:
    """Drop metrics lines past the checkpoint a run resumes from: they are computed again."""
    path = out / METRICS_FILE
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["env_steps"] <= env_steps:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue  # not a metrics line: never written by a run
    atomic.write_text(path, "".join(kept))


def saved_wandb_run(run_dir: str | Path) -> dict[str, Any]:
    """The W&B run a run folder logged to (`WANDB_FILE`: id, group, tags); {} if none."""
    path = Path(run_dir) / WANDB_FILE
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def wandb_tags(settings: TrainSettings, preset: str | None = None) -> list[str]:
    """A training run's W&B tags: `agent:<agent>`, `suite:<suite>`, `preset:<preset>` if known."""
    tags = [f"agent:{settings.agent}", f"suite:{settings.data.suite}"]
    return tags + ([f"preset:{preset}"] if preset else [])


def rounding_note(given: TrainSettings, final: TrainSettings) -> str | None:
    """What `finalise` changed in the run's length, in the flags' terms (None: nothing)."""
    before, after = given.config.total_steps, final.config.total_steps
    if before == after:
        return None
    chunk = final.run.chunk_updates * final.config.steps_per_update
    way = "up" if after > before else "down"
    return f"--total-steps {before} rounded {way} to {after}: whole chunks of {chunk} env steps"


def train(
    settings: TrainSettings | None,
    out: str | Path,
    resume: bool = False,
    wandb_mode: str = "offline",
    progress: bool = True,
    command: str = "",
    stop_after_chunks: int | None = None,
    resume_dir: str | Path | None = None,
    wandb_group: str | None = None,
    preset: str | None = None,
    devices: int | None = None,
) -> Path | None:
    """Run (or with `resume`, continue) training into `out`; returns the exported policy's path.

    `settings` is ignored when resuming (the checkpoint's are used). `out` is
    checked and locked before anything is computed
    (`metaal.experiments.outputs.claim`). Resuming a finished run returns its
    policy at once. `progress` shows a progress bar and one line per phase
    (loading data, compiling, training, evaluating, exporting). Ctrl-C raises
    `TrainingInterrupted`, whose message names the update to resume from
    and the command (`--resume resume_dir`, default `out`).
    `stop_after_chunks` stops early without exporting, as if the run had
    been killed after that many chunks (returns None).

    W&B: the run's group is `wandb_group`, else the one saved in
    `out/WANDB_FILE`, else `out`'s name; `preset` (if known) is tagged. A
    resumed run continues the W&B run saved in `out/WANDB_FILE`.

    `devices` local devices (None: all) share the env slots (`train_mesh`);
    the run agrees with one device's up to float32 rounding (the loss sums
    are all-reduced in another order).
    """
    out = Path(out)
    if resume:
        checkpoint.latest(out)  # a clear error when `out` holds no run
    with _claim(out, resume):
        try:
            return _train(
                settings, out, resume, wandb_mode, progress, command, stop_after_chunks,
                wandb_group, preset, devices,
            )  # fmt: skip
        except KeyboardInterrupt:
            raise interrupted(out, Path(resume_dir or out)) from None


def _claim(out: Path, resume: bool):
    """Lock `out` for this run (`outputs.claim`); only process 0 of many holds the lock."""
    if not distributed.is_writer():
        return contextlib.nullcontext(out)
    return outputs.claim(out, flag="--resume" if resume else "--out")


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, flush=True)


@dataclasses.dataclass
class Run:
    """One run of `train_runs`: its folder, settings, resume point and (once open) W&B run."""

    out: Path
    settings: TrainSettings
    command: str
    last: Path | None  # the checkpoint it continues from; None: it starts at update 0
    resumed: bool  # it continues an earlier start (its W&B run and metrics file are kept)
    run: Any = None


def prepare_run(
    settings: TrainSettings | None,
    out: Path,
    resume: bool,
    command: str,
    progress: bool,
    at_update: int | None = None,
) -> Run | Path:
    """The run in `out`, checked before anything is computed; a finished run's policy path.

    `at_update` resumes from that update's checkpoint instead of the newest
    (a vote's member that saved one chunk more than the others); 0 restarts
    the run from its first update, with its saved settings.
    """
    if resume:
        found = checkpoint.list_checkpoints(out)
        last = checkpoint.latest(out)
        meta = checkpoint.read_meta(last)
        try:
            settings = TrainSettings.from_dict(meta["settings"])
        except (KeyError, TypeError, ValueError) as err:
            raise checkpoint.CheckpointError(
                f"{last / checkpoint.META_FILE}: no usable training settings "
                f"({type(err).__name__}: {err}); was it written by `metaal train`? Start a new "
                "run with --out"
            ) from err
        command = meta.get("command", command)
        done = finished_policy(out)
        if done is not None and at_update is None:
            _say(progress, f"{out}: finished already ({meta['updates']} updates); nothing to do")
            return done
        if at_update is not None and at_update != meta["updates"]:
            by_update = {checkpoint.read_meta(c)["updates"]: c for c in found}
            if at_update and at_update not in by_update:
                raise checkpoint.CheckpointError(
                    f"{out}: no checkpoint at update {at_update} (it has "
                    f"{sorted(by_update)}); its vote cannot resume its members together. "
                    "Start the vote again with --out"
                )
            last = by_update.get(at_update)
            meta = checkpoint.read_meta(last) if last else {"env_steps": 0}
        # metrics past the checkpoint were logged by chunks that are run again
        if distributed.is_writer():
            _keep_metrics_until(out, int(meta.get("env_steps", 0)))
        return Run(out, settings, command, last, resumed=True)
    if checkpoint.list_checkpoints(out) or (out / checkpoint.POLICY_FILE).exists():
        raise checkpoint.CheckpointError(
            f"{out}: already holds a training run; continue it with --resume {out} or "
            "choose another --out"
        )
    given, settings = settings, finalise(settings)
    if note := rounding_note(given, settings):
        _say(progress, note)
    return Run(out, settings, command, None, resumed=False)


def _train(
    settings: TrainSettings | None,
    out: Path,
    resume: bool,
    wandb_mode: str,
    progress: bool,
    command: str,
    stop_after_chunks: int | None,
    wandb_group: str | None = None,
    preset: str | None = None,
    devices: int | None = None,
) -> Path | None:
    """`train` inside its claimed folder."""
    prepared = prepare_run(settings, out, resume, command, progress)
    if isinstance(prepared, Path):
        return prepared
    policies = train_runs(
        [prepared], wandb_mode, progress, stop_after_chunks, wandb_group, preset, devices
    )
    return None if policies is None else policies[0]


def _member_slice(tree: Any, i: int) -> Any:
    return jax.tree.map(lambda x: x[i], tree)


def _stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *xs: jax.numpy.stack(xs), *trees)


def _open_wandb(
    r: Run, wandb_mode: str, wandb_group: str | None, preset: str | None, updates_done: int
) -> None:
    """Start (or, for a resumed run, continue) `r`'s W&B run; its id is kept in `WANDB_FILE`."""
    settings = r.settings
    saved = saved_wandb_run(r.out) if r.resumed else {}
    group = wandb_group or saved.get("group") or r.out.resolve().name
    tags = saved.get("tags") or wandb_tags(settings, preset)
    if not distributed.is_writer():  # process 0 logs for every process
        wandb_mode = "disabled"
    r.run = tracking.init_run(
        WANDB_PROJECT,
        tracking.run_name(settings.data.suite, settings.agent, settings.run.seed),
        # flat, with the flags' names, so a W&B sweep agent can set any field by flag
        {
            "agent": settings.agent,
            **flags.flat_config(settings.sections()),
            "shortlist": settings.shortlist,
            "command": r.command,
            "resumed_at_update": updates_done,
            "wandb_group": group,
        },
        mode=wandb_mode,
        dir=r.out,
        group=group,
        job_type="train",
        tags=tags,
        run_id=saved.get("id"),
    )
    if r.run.id is not None and distributed.is_writer():
        # before the first chunk: a run killed in it resumes this W&B run
        record = {"id": r.run.id, "group": group, "tags": list(tags)}
        if record != saved:
            atomic.write_text(r.out / WANDB_FILE, json.dumps(record))


def train_mesh(settings: TrainSettings, devices: int | None, n_runs: int = 1):
    """(mesh, axis) that `devices` local devices (None: all) split a run's env slots with.

    (None, 0) on one device. A vote's runs are split between the devices when
    their count divides evenly, else each run's slots. Imitation keeps no env
    slots between rounds: it runs on one device, and asking it for more is an
    error. Checked before anything is computed.
    """
    if jax.process_count() > 1:  # every process's devices: one global mesh
        total = len(jax.devices())
        if devices not in (None, total):
            raise ValueError(
                f"--devices {devices}: {jax.process_count()} processes share {total} devices; "
                f"drop --devices or give {total}"
            )
        mesh = Mesh(np.array(jax.devices()), ("episode",))
    else:
        mesh = evaluate.episode_mesh(devices)
    if mesh is None:
        return None, 0
    if settings.agent == "imitation":
        if devices is None:
            return None, 0
        raise ValueError(
            f"--devices {devices}: imitation's rounds are not split over devices yet; "
            "drop --devices (it runs on one)"
        )
    if n_runs > 1 and n_runs % mesh.size == 0:
        return mesh, 0
    slots = settings.config.num_envs
    if slots % mesh.size:
        raise ValueError(
            f"--devices {mesh.size} must divide the {slots} env slots (--num-envs)"
            + (f" or the {n_runs} members" if n_runs > 1 else "")
            + "; choose a divisor"
        )
    return mesh, 1 if n_runs > 1 else 0


def train_runs(
    runs: Sequence[Run],
    wandb_mode: str,
    progress: bool,
    stop_after_chunks: int | None,
    wandb_group: str | None = None,
    preset: str | None = None,
    devices: int | None = None,
    program: str = "vmap",
) -> list[Path] | None:
    """Train `runs` (same settings but the seed and float fields, same start) to the end.

    Returns their policies' paths.

    One run is one program. Several are one `vmap`ped program (purejaxrl's
    `jit(vmap(train))`): their runners are stacked on a leading axis and every
    chunk advances all of them; each keeps its own folder, checkpoints,
    metrics, evaluation and W&B run, exactly as if it ran alone.
    `devices` local devices (None: all) share the env slots (`train_mesh`).
    `program` says how stacked runs advance (`MEMBER_PROGRAMS`).
    """
    settings = runs[0].settings
    agent = get_agent(settings.agent)
    config = settings.config
    config.check()
    n_chunks = config.num_updates // settings.run.chunk_updates
    _say(
        progress,
        f"loading data: suite {settings.data.suite}, {settings.data.splits_per_task} split(s) "
        "per task",
    )
    stacked = len(runs) > 1
    mesh, axis = train_mesh(settings, devices, len(runs))
    init, chunk = compiled(
        settings.agent, config, settings.run.chunk_updates, len(runs) if stacked else 0, program
    )
    env = make_env(config.env)
    params, eval_names, eval_params = training_data(settings, env)
    runners, member_tasks = [], []
    for r in runs:
        k_init, k_scale = jax.random.split(jax.random.key(r.settings.run.seed))
        tasks = rollout.training_tasks(env, params, config.reward_norm, k_scale)
        if r.last is None:
            runner = init(k_init, tasks)
        else:
            template = jax.eval_shape(lambda k, t: rollout.detach_params(init(k, t)), k_init, tasks)
            runner = rollout.attach_params(checkpoint.restore(r.last, template), tasks)
        runners.append(runner)
        member_tasks.append(tasks)
    if stacked:
        runner = _stack(runners)
        tasks = rollout.TrainingTasks(
            params=params, reward_scale=_stack([t.reward_scale for t in member_tasks])
        )
    else:
        runner, tasks = runners[0], member_tasks[0]
    # a sweep's runs differ in float fields of their configs: those go in as vmapped leaves
    configs = [r.settings.config for r in runs]
    swept = (_stack(configs),) if any(c != configs[0] for c in configs[1:]) else ()
    if swept:
        chunk = compiled_sweep(settings.agent, config, settings.run.chunk_updates, program)
    if mesh is not None:
        placement = rollout.slot_placement(runner, mesh, axis)
        replicated = NamedSharding(mesh, PartitionSpec())
        runner = distributed.put(runner, placement)
        tasks = distributed.put(tasks, jax.tree.map(lambda _: replicated, tasks))
        # the runner keeps its placement from chunk to chunk; metrics come back replicated
        chunk = jax.jit(chunk, out_shardings=(placement, replicated))
        _say(progress, f"{mesh.size} devices share the env slots")
    updates_done = int(runners[0].update)
    # the exported policy, evaluated by `metaal evaluate`'s runners, compiled once per run
    entries = evaluation_entries(
        settings,
        checkpoint.policy_of(
            agent.policy_params(runners[0]), export_config(settings, 0, ""), settings.shortlist
        ),
    )
    del runners  # the stacked runner holds them
    for r in runs:
        _open_wandb(r, wandb_mode, wandb_group, preset, updates_done)
    first_chunk = updates_done // settings.run.chunk_updates
    _say(
        progress,
        f"compiling: {settings.agent}, {settings.run.chunk_updates} update(s) of "
        f"{config.steps_per_update} env steps per chunk"
        + (f", {len(runs)} runs in one vmapped program" if stacked else ""),
    )
    chunk = functools.partial(chunk.lower(*swept, runner, tasks).compile(), *swept)
    _say(
        progress,
        f"training: {config.total_steps} env steps in {n_chunks} chunk(s)"
        + (f" for each of {len(runs)} runs" if stacked else "")
        + (f", from update {updates_done}" if updates_done else ""),
    )
    bar = tqdm(
        total=config.total_steps,
        initial=updates_done * config.steps_per_update,
        unit="step",
        unit_scale=True,
        desc=f"{settings.agent} {settings.data.suite}" + (f" x{len(runs)}" if stacked else ""),
        disable=not progress,
    )
    try:
        for index in range(first_chunk, n_chunks):
            if stop_after_chunks is not None and index - first_chunk >= stop_after_chunks:
                for r in runs:
                    r.run.finish()
                return None
            started = time.perf_counter()
            runner, stats = chunk(runner, tasks)
            stats = distributed.to_host(stats)
            elapsed = time.perf_counter() - started
            last_chunk = index == n_chunks - 1
            bar.update(settings.run.chunk_updates * config.steps_per_update)
            if last_chunk:
                bar.close()
            for i, r in enumerate(runs):
                _after_chunk(
                    r,
                    _member_slice(runner, i) if stacked else runner,
                    _member_slice(stats, i) if stacked else stats,
                    elapsed,
                    index,
                    n_chunks,
                    entries,
                    eval_names,
                    eval_params,
                    progress,
                    bar,
                    mesh,
                )
    finally:
        bar.close()

    policies = []
    for i, r in enumerate(runs):
        member = _member_slice(runner, i) if stacked else runner
        params = distributed.to_host(agent.policy_params(member))
        policy = r.out / checkpoint.POLICY_FILE
        if distributed.is_writer():
            _say(progress, f"exporting the policy to {policy}")
            checkpoint.policy_of(
                params,
                export_config(r.settings, int(member.update) * config.steps_per_update, r.command),
                r.settings.shortlist,
            ).save(policy)
            r.run.update_summary({"policy": str(policy)})
            r.run.log_artifact(f"policy-{r.run.id}", "policy", [policy])
        r.run.finish()
        policies.append(policy)
    distributed.barrier("policies exported")  # the other processes return once they exist
    return policies


def _after_chunk(
    r: Run,
    runner: Any,
    stats: Any,
    elapsed: float,
    index: int,
    n_chunks: int,
    entries: list[evaluate.Entry],
    eval_names: list[str],
    eval_params: Any,
    progress: bool,
    bar: Any,
    mesh: Any = None,
) -> None:
    """One run's log, evaluation, metrics line and checkpoint after chunk `index`."""
    settings, config = r.settings, r.settings.config
    agent = get_agent(settings.agent)
    updates_done = int(runner.update)
    env_steps = updates_done * config.steps_per_update
    log = _chunk_log(dict(stats))
    log["charts/SPS"] = settings.run.chunk_updates * config.steps_per_update / elapsed
    last_chunk = index == n_chunks - 1
    every = settings.run.eval_every
    if eval_names and (last_chunk or (every and (index + 1) % every == 0)):
        if last_chunk:
            _say(progress, f"evaluating the final policy on {len(eval_names)} task(s)")
        else:
            bar.set_postfix_str("evaluating")
        if jax.process_count() > 1:  # every process evaluates on its own devices
            policy, mesh = distributed.to_host(agent.policy_params(runner)), None
        else:
            policy = agent.policy_params(runner)
        learned = entries[0].with_params(policy)
        results = evaluate.run_entries(
            [learned, *entries[1:]], eval_names, eval_seeds(settings), eval_params, mesh=mesh
        )
        log.update(eval_metrics(results))
    state = distributed.to_host(checkpoint.keys_as_data(rollout.detach_params(runner)))
    if not distributed.is_writer():
        return
    r.run.log(log, step=env_steps)
    # The metrics line, then the checkpoint: a run killed in between repeats this
    # chunk on resume and `_keep_metrics_until` drops the line it wrote first.
    atomic.append_line(r.out / METRICS_FILE, json.dumps({"env_steps": env_steps, **log}))
    checkpoint.save(
        r.out,
        updates_done,
        state,
        {
            "agent": settings.agent,
            "env_steps": env_steps,
            "settings": settings.to_dict(),
            "command": r.command,
        },
    )
    postfix = {"SPS": f"{log['charts/SPS']:.0f}"}
    if "charts/episodic_return" in log:
        postfix["return"] = f"{log['charts/episodic_return']:.4f}"
    bar.set_postfix(postfix)


MEMBERS_FILE = "members.json"


def member_dir(out: str | Path, seed: int) -> Path:
    """Run folder of the member trained with `seed` inside a vote's folder `out`."""
    return Path(out) / f"seed{seed}"


def train_members(
    settings: TrainSettings | None,
    out: str | Path,
    members: int = 1,
    resume: bool = False,
    wandb_mode: str = "offline",
    progress: bool = True,
    command: str = "",
    wandb_group: str | None = None,
    preset: str | None = None,
    member_group: int = 0,
    stop_after_chunks: int | None = None,
    devices: int | None = None,
    member_program: str = "vmap",
) -> Path | None:
    """Train `members` runs (seeds seed, seed + 1, ...) and export their vote as OUT/policy.

    With `members=1` the export is the one member's policy, not a one-member vote.

    Each member is an ordinary run in OUT/seed<k> (checkpoints, resume, W&B);
    the vote (`LearnedStrategy.ensemble`) scores by the mean of the members'
    standardised scores. `member_group` members train as one program (0: all
    of them; 1: one after another, each its own program), vectorised
    (`member_program="vmap"`: a member equals the same seed trained alone up
    to float32 rounding, which sampled actions can amplify over a long run) or
    looped inside the program (`"map"`: bit for bit the seed alone). With
    `resume`, finished members are kept, killed ones continue from their last
    checkpoint (a group's members from the last update they all saved) and
    missing ones start, all from the settings saved in OUT/members.json.
    `out` is checked and locked before anything is computed. The members' W&B runs share one group:
    `wandb_group`, else the one they logged to, else OUT's name.
    `stop_after_chunks` stops the first group early, as `train`'s does (None).
    """
    from metaal.strategies.learned import LearnedStrategy

    out = Path(out)
    record = out / MEMBERS_FILE
    if resume and not record.is_file():
        raise checkpoint.CheckpointError(
            f"{out}: no {MEMBERS_FILE}, so not a vote's folder; a single run resumes with "
            "--resume on its own folder"
        )
    if not resume and members < 1:
        raise ValueError(f"--members must be at least 1, got {members}")
    if not resume:
        check_program(member_program)
    if not resume and member_group < 0:
        raise ValueError(
            f"--member-group must be >= 0 (0: every member in one program), got {member_group}"
        )
    with _claim(out, resume):
        if resume:
            done = finished_policy(out)
            if done is not None:
                _say(
                    progress, f"{out}: finished already (every member and the vote); nothing to do"
                )
                return done
            saved = json.loads(record.read_text())
            settings, seeds = TrainSettings.from_dict(saved["settings"]), saved["seeds"]
            command = saved.get("command", command)
            member_group = saved.get("member_group", 1)  # votes before groups: one by one
            member_program = saved.get("member_program", "vmap")
        else:
            if record.exists() or checkpoint.list_checkpoints(out):
                raise checkpoint.CheckpointError(
                    f"{out}: already holds a training run; continue it with --resume {out} or "
                    "choose another --out"
                )
            seeds = [settings.run.seed + i for i in range(members)]
            if distributed.is_writer():
                atomic.write_text(
                    record,
                    json.dumps(
                        {
                            "settings": settings.to_dict(),
                            "seeds": seeds,
                            "command": command,
                            "member_group": member_group,
                            "member_program": member_program,
                        }
                    ),
                )
        size = member_group or len(seeds)
        for first in range(0, len(seeds), size) if size > 1 else ():
            group = seeds[first : first + size]
            finished = _train_group(
                settings, out, group, command, wandb_mode=wandb_mode, progress=progress,
                wandb_group=wandb_group, preset=preset, stop_after_chunks=stop_after_chunks,
                devices=devices, program=member_program,
            )  # fmt: skip
            if not finished:
                return None
        policies = []
        for seed in seeds:
            folder = member_dir(out, seed)
            done = folder / checkpoint.POLICY_FILE
            if not done.is_file():
                started = bool(checkpoint.list_checkpoints(folder))
                member = dataclasses.replace(
                    settings, run=dataclasses.replace(settings.run, seed=seed)
                )
                print(
                    f"member seed {seed} ({len(policies) + 1}/{len(seeds)}): {folder}", flush=True
                )
                group = wandb_group or saved_wandb_run(folder).get("group") or out.resolve().name
                train(
                    member, folder, started, wandb_mode, progress, command, resume_dir=out,
                    wandb_group=group, preset=preset, devices=devices,
                )  # fmt: skip
            policies.append(LearnedStrategy.load(done))
        # one member is exported as its own policy, as imitation's --members 1 is
        vote = policies[0] if len(policies) == 1 else LearnedStrategy.ensemble(policies)
        vote.config["command"] = command
        if distributed.is_writer():
            vote.save(out / checkpoint.POLICY_FILE)
        distributed.barrier("vote exported")
        return out / checkpoint.POLICY_FILE


def _train_group(
    settings: TrainSettings,
    out: Path,
    seeds: Sequence[int],
    command: str,
    wandb_mode: str,
    progress: bool,
    wandb_group: str | None,
    preset: str | None,
    stop_after_chunks: int | None = None,
    devices: int | None = None,
    program: str = "vmap",
) -> bool:
    """Train the vote members `seeds` as one vmapped program, each into its own folder.

    Returns False when `stop_after_chunks` stopped it before the end.
    """
    folders = [member_dir(out, seed) for seed in seeds]
    if all(finished_policy(folder) for folder in folders):
        return True
    started = [bool(checkpoint.list_checkpoints(folder)) for folder in folders]
    updates = [
        checkpoint.read_meta(checkpoint.latest(folder))["updates"] if begun else 0
        for folder, begun in zip(folders, started, strict=True)
    ]
    at = min(updates)  # a kill between two members' saves leaves one a chunk ahead
    runs = []
    for seed, folder, begun in zip(seeds, folders, started, strict=True):
        if begun:
            runs.append(prepare_run(None, folder, True, command, progress, at_update=at))
        else:
            folder.mkdir(parents=True, exist_ok=True)
            _keep_metrics_until(folder, 0)  # lines of a first chunk that was killed
            member = dataclasses.replace(settings, run=dataclasses.replace(settings.run, seed=seed))
            runs.append(prepare_run(member, folder, False, command, progress))
    print(f"members {', '.join(map(str, seeds))} in one program: {out}", flush=True)
    group = wandb_group or saved_wandb_run(folders[0]).get("group") or out.resolve().name
    try:
        trained = train_runs(
            runs, wandb_mode, progress, stop_after_chunks, group, preset, devices, program
        )
        return trained is not None
    except KeyboardInterrupt:
        raise interrupted(folders[0], out) from None


def final_table(run_dir: str | Path) -> str | None:
    """The last evaluation's AULC of learned, random and margin (each member's, for a vote).

    None when the run logged no evaluation (`--eval-tasks 0`).
    """
    run_dir = Path(run_dir)
    record = run_dir / MEMBERS_FILE
    if record.is_file():
        seeds = json.loads(record.read_text())["seeds"]
        runs = [(f"learned (seed {s})", member_dir(run_dir, s)) for s in seeds]
    else:
        runs = [(EVAL_STRATEGIES[0], run_dir)]
    finals = []
    for label, folder in runs:
        path = folder / METRICS_FILE
        logged = [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []
        evaluated = [m for m in logged if f"eval/{EVAL_STRATEGIES[0]}/aulc" in m]
        if evaluated:
            finals.append((label, evaluated[-1]))
    if not finals:
        return None
    # the baselines run on the same tasks and seeds for every member: shown once
    rows = [(label, m[f"eval/{EVAL_STRATEGIES[0]}/aulc"]) for label, m in finals]
    rows += [(name, finals[0][1][f"eval/{name}/aulc"]) for name in EVAL_STRATEGIES[1:]]
    width = max(len(label) for label, _ in rows)
    lines = [f"final evaluation at env step {finals[0][1]['env_steps']} (AULC, higher is better):"]
    lines += [f"  {label:<{width}}  {aulc:.4f}" for label, aulc in rows]
    return "\n".join(lines)


# --- command line ---------------------------------------------------------------------


def chosen_preset(argv: Sequence[str]) -> TrainSettings:
    """The preset the command line names (`--agent`, `--preset`), before its flags are added."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--agent", default="ppo")
    pre.add_argument("--preset", default="demo")
    known, _ = pre.parse_known_args(list(argv))
    try:
        return configs.preset(known.preset, known.agent)
    except ValueError:  # reported by the full parser's choices, or by main
        return configs.preset("demo", "ppo")


def add_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> None:
    """Add the `metaal train` options to `parser`.

    Besides the run's own options, every field of the chosen agent's config,
    the env, the data and the run config is a flag (`metaal.experiments.flags`)
    whose default in `--help` is the chosen preset's (`--agent`, `--preset`).
    """
    settings = chosen_preset(argv)
    parser.add_argument(
        "--agent",
        choices=sorted(configs.AGENTS),
        help="ppo, dqn, or imitation (DAgger of the look-ahead oracle) (default: ppo)",
    )
    parser.add_argument(
        "--preset",
        choices=sorted({p for a in configs.AGENTS for p in configs.preset_names(a)}),
        metavar="PRESET",
        help="settings to start from: tiny, demo, paper; for imitation also a recipe "
        f"({', '.join(configs.IMITATION_RECIPES)}) (default: demo)",
    )
    parser.add_argument(
        "--members",
        type=int,
        help="train this many runs (seeds --seed, --seed + 1, ...) and export their vote "
        "(the mean of their standardised scores) (default: 1)",
    )
    parser.add_argument(
        "--member-program",
        choices=MEMBER_PROGRAMS,
        help="how a group's members advance in their one program: vmap (vectorised; equal to "
        "each seed alone up to float32 rounding) or map (a loop; bit for bit each seed "
        "alone) (default: vmap)",
    )
    parser.add_argument(
        "--member-group",
        type=int,
        help="members trained together as one vmapped program (0: all of them; 1: one "
        "after another; lower it when memory is short) (default: 0)",
    )
    if settings.agent != "imitation":  # imitation's shortlist is a field of its config
        parser.add_argument(
            "--shortlist",
            type=int,
            help="the exported policy re-ranks only margin's K most uncertain candidates "
            f"(deployment only; 0: all candidates) (default: {settings.shortlist})",
        )
    parser.add_argument(
        "--devices",
        type=int,
        help="local devices that share the env slots (default: all; the result agrees with "
        "one device's up to float32 rounding)",
    )
    parser.add_argument(
        "--coordinator-address",
        help="many processes (jax.distributed): HOST:PORT of process 0; with --num-processes "
        "and --process-id, or METAAL_COORDINATOR_ADDRESS etc.; Slurm and Open MPI are "
        "detected without them (default: one process)",
    )
    parser.add_argument("--num-processes", type=int, help="many processes: how many")
    parser.add_argument("--process-id", type=int, help="many processes: this one's 0-based id")
    parser.add_argument("--out", help=f"run folder (default: {DEFAULT_OUT}/<run name>)")
    parser.add_argument(
        "--resume", metavar="DIR", help="continue the run in DIR (default: start a new run)"
    )
    parser.add_argument(
        "--wandb-mode",
        choices=tracking.MODES,
        default="offline",
        help="W&B logging mode (default: offline)",
    )
    parser.add_argument(
        "--wandb-group",
        help="W&B group of the run (default: the run folder's name; a resumed run keeps its group)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bar and no phase lines (default: off)"
    )
    flags.add_config_flags(
        parser,
        settings.sections(),
        titles={
            "agent": f"{settings.agent} settings",
            "env": "training env settings",
            "data": "training data settings",
            "run": "run settings",
        },
    )


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    """The preset named by the arguments with every given field replaced."""
    settings = configs.preset(args.preset or "demo", args.agent or "ppo")
    changed = flags.apply_flags(args, settings.sections())
    config = changed["agent"].replace(env=changed["env"])
    shortlist = getattr(config, "shortlist", None)
    if shortlist is None:
        shortlist = settings.shortlist if args.shortlist is None else args.shortlist
    if shortlist < 0:
        raise ValueError(f"--shortlist must be >= 0 (0: no shortlist), got {shortlist}")
    for name in ("chunk_updates", "eval_seeds"):
        value = getattr(changed["run"], name)
        if value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
    for name in ("total_steps", "num_envs", "n_rounds", "n_envs"):
        value = getattr(config, name, 1)
        if value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
    return dataclasses.replace(
        settings, config=config, data=changed["data"], run=changed["run"], shortlist=shortlist
    )


@outputs.command("train")
def main(args: argparse.Namespace) -> int:
    """Run `metaal train` from parsed arguments; returns the exit code (2 on bad input).

    Prints the run folder first, then (unless --quiet) each phase and the
    progress bar, and at the end the final evaluation's table. Ctrl-C: one
    line with the resume command, exit code 130.
    """
    argv = sys.argv[1:]
    command = "metaal " + shlex.join(argv[argv.index("train") :]) if "train" in argv else ""
    distributed.initialize(
        distributed.settings_from(args.coordinator_address, args.num_processes, args.process_id)
    )
    run_kwargs = {
        "wandb_mode": args.wandb_mode,
        "progress": not args.quiet,
        "command": command,
        "wandb_group": args.wandb_group,
        "devices": args.devices,
    }
    if args.resume:
        sections = configs.preset(args.preset or "demo", args.agent or "ppo").sections()
        given = flags.given_flags(args, sections)
        own = ("agent", "preset", "members", "member_group", "member_program", "shortlist")
        given += [f"--{o.replace('_', '-')}" for o in own if getattr(args, o, None) is not None]
        if given:
            raise ValueError(
                f"--resume continues {args.resume} with its saved config; drop "
                f"{', '.join(given)}, or start a new run with --out"
            )
        if args.out and Path(args.out) != Path(args.resume):
            raise ValueError("--resume DIR continues in DIR; drop --out")
        out = Path(args.resume)
        done = finished_policy(out)
        if done is not None:  # said before anything is loaded or compiled
            print(f"{out}: this run is finished already; its policy is {done}. Nothing to resume")
            return 0
        print(f"run folder: {out} (resumed)", flush=True)
        resume = train_members if (out / MEMBERS_FILE).is_file() else train
        policy = resume(None, out, resume=True, **run_kwargs)
    else:
        settings = settings_from_args(args)
        out = (
            Path(args.out)
            if args.out
            else outputs.fresh_folder(
                DEFAULT_OUT, f"{settings.data.suite}__{settings.agent}__{settings.run.seed}"
            )
        )
        print(f"run folder: {out}", flush=True)
        run_kwargs["preset"] = args.preset or "demo"
        if args.members is None:
            for flag in ("member_group", "member_program"):
                if getattr(args, flag) is not None:
                    raise ValueError(
                        f"--{flag.replace('_', '-')} sets how a vote's members train: add "
                        "--members N"
                    )
            policy = train(settings, out, **run_kwargs)
        else:
            group = {} if args.member_group is None else {"member_group": args.member_group}
            if args.member_program is not None:
                group["member_program"] = args.member_program
            policy = train_members(settings, out, args.members, **run_kwargs, **group)
    if not distributed.is_writer():
        print(f"process {jax.process_index()} of {jax.process_count()}: done (process 0 wrote)")
        return 0
    table = final_table(out)
    if table:
        print(table)
    print(f"policy written to {policy}")
    return 0
