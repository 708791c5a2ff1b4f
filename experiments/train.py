"""Meta-train a query policy: `metaal train` (PPO or DQN over a task suite), checkpoints, export.

    metaal train --agent ppo --preset demo --out runs/ppo
    metaal train --resume runs/ppo               # continue a stopped or killed run
    metaal train --agent ppo --members 3 --out runs/vote   # 3 seeds, exported as one vote
    metaal evaluate --suite heldout --policy runs/ppo/policy

The run resolves the suite (refusing held-out data), precomputes
`splits_per_task` splits of every task (test rows dropped: training never
reads them), and runs the agent in chunks of `chunk_updates` updates, one
jitted chunk function reused throughout. After every chunk it writes a
checkpoint (so a killed run loses at most one chunk), logs CleanRL-style
metrics to W&B (`charts/episodic_return`, `charts/SPS`, `losses/*`) and
every `eval_every` chunks evaluates the current policy against random and
margin sampling on a few training tasks (splits never trained on; test
accuracy, `eval/*`); the same numbers go to `OUT/metrics.jsonl`, one line
per chunk. At the end the policy is exported to `OUT/policy`, a
`metaal.strategies.learned.LearnedStrategy` file.

A resumed run reads its config from the checkpoint and continues bit for
bit as if it had never stopped (on the same machine).
"""

from __future__ import annotations

import argparse
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
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from agents import checkpoint, get_agent, make_chunk, rollout
from envs.core import ActiveLearningEnv, EnvConfig, check_fits, make_params
from experiments import configs
from experiments.configs import TrainSettings
from metaal import metrics, tracking
from metaal.data import HELDOUT, check_heldout_unseen, load_task, make_split, suite_names
from metaal.data.batch import pad_split, stack_splits
from metaal.data.task import Split
from metaal.policy_net import CandidateScorer, policy_config
from metaal.strategies import get_strategy, select

WANDB_PROJECT = "metaal"
DEFAULT_OUT = "runs/train"
#: One JSON line of metrics per chunk in the run folder (the learning curve without W&B).
METRICS_FILE = "metrics.jsonl"
#: Split seeds of the evaluation episodes start here, far from the training splits' 0..n-1.
EVAL_SEED_OFFSET = 10_000
#: Strategies of the periodic evaluation: the current policy and two baselines.
EVAL_STRATEGIES = ("learned", "random", "margin")


# --- settings -------------------------------------------------------------------------


def finalise(settings: TrainSettings) -> TrainSettings:
    """Round the run up to whole chunks, so one compiled chunk function serves the whole run."""
    config = settings.config
    per_chunk = max(1, min(settings.run.chunk_updates, config.num_updates))
    updates = math.ceil(config.num_updates / per_chunk) * per_chunk
    return dataclasses.replace(
        settings,
        config=config.replace(total_steps=updates * config.steps_per_update),
        run=dataclasses.replace(settings.run, chunk_updates=per_chunk),
    )


# --- data -----------------------------------------------------------------------------


def training_names(suite: str) -> list[str]:
    """Task names of `suite`, after checking that no held-out data set is among them."""
    names = suite_names(suite)
    check_heldout_unseen(names, HELDOUT)
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
    training = rollout.training_tasks(env, params, settings.config.reward_norm, key)

    eval_tasks = tasks[: settings.run.eval_tasks]
    eval_splits = [
        make_split(
            t,
            EVAL_SEED_OFFSET + s,
            max_pool=data.max_pool,
            max_val=data.max_val,
            max_features=data.max_features,
        )
        for t in eval_tasks
        for s in range(settings.run.eval_seeds)
    ]
    eval_names = [t.name for t in eval_tasks]
    eval_params = stacked_params(eval_splits, settings.config.env) if eval_splits else None
    return training, eval_names, eval_params


# --- evaluation -----------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def make_env(config: EnvConfig) -> ActiveLearningEnv:
    """One env object per config, so compiled functions are reused across runs in a process."""
    return ActiveLearningEnv(config)


@functools.lru_cache(maxsize=8)
def evaluator(config: EnvConfig, hidden: tuple[int, ...], state_hidden: int) -> Callable:
    """Jitted `(net_params, keys (E,), params (E, ...)) -> test accuracy curves (3, E, B + 1)`.

    Rows follow `EVAL_STRATEGIES`: the network's greedy policy, random and
    margin sampling. Every strategy gets the same keys, hence the same
    initial sets and candidates (paired runs); one program runs all three.
    """
    env = make_env(config)
    net = CandidateScorer(hidden=hidden, state_hidden=state_hidden)
    baselines = [get_strategy(name) for name in EVAL_STRATEGIES[1:]]

    def score(which, net_params, key, obs, ctx):
        learned = net.apply(net_params, obs.state, obs.candidates, obs.action_mask)[0]
        others = [strategy.score(key, obs, ctx, ())[0] for strategy in baselines]
        return jnp.stack([learned, *others])[which]

    def episode(which, net_params, key, params):
        k_reset, k_steps = jax.random.split(key)
        _, first = env.reset_env(k_reset, params)

        def step(state, keys):
            k_env, k_score, k_select = keys
            obs = env.observe(state, params)
            scores = score(which, net_params, k_score, obs, env.context(state, params))
            action = select(scores, obs.action_mask, k_select)
            _, state, _, _, _, info = env.step_env(k_env, state, action, params)
            return state, info["test_score"]

        keys = jax.random.split(k_steps, (config.budget, 3))
        _, acc = jax.lax.scan(step, first, (keys[:, 0], keys[:, 1], keys[:, 2]))
        acc0 = env.test_accuracy(first.learner, params.task)
        return jnp.concatenate([acc0[None], acc])

    runs = jax.vmap(episode, in_axes=(None, None, 0, 0))
    strategies = jax.vmap(runs, in_axes=(0, None, None, None))
    which = jnp.arange(len(EVAL_STRATEGIES))
    return jax.jit(lambda net_params, keys, params: strategies(which, net_params, keys, params))


def eval_metrics(curves: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """`eval/<strategy>/{aulc,final_accuracy}` and `eval/<dataset>/<strategy>/aulc`."""
    out = {}
    for strategy, acc in zip(EVAL_STRATEGIES, curves, strict=True):
        per_task = acc.reshape(len(names), -1, acc.shape[-1])
        out[f"eval/{strategy}/aulc"] = float(np.mean(metrics.aulc(per_task)))
        out[f"eval/{strategy}/final_accuracy"] = float(np.mean(per_task[..., -1]))
        for name, runs in zip(names, per_task, strict=True):
            out[f"eval/{name}/{strategy}/aulc"] = float(np.mean(metrics.aulc(runs)))
    return out


# --- the run --------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def compiled(agent_name: str, config: Any, chunk_updates: int) -> tuple[Callable, Callable]:
    """Jitted `init(key, tasks)` and `chunk(runner, tasks)`, cached per (agent, config, K)."""
    agent = get_agent(agent_name)
    env = make_env(config.env)
    init = jax.jit(lambda key, tasks: agent.init(config, key, tasks, env))
    return init, make_chunk(agent, config, chunk_updates, env)


def _chunk_log(stats: dict[str, np.ndarray]) -> dict[str, float]:
    episodes = float(np.sum(stats.pop("episodes")))
    returns = float(np.sum(stats.pop("episode_return_sum")))
    final_val = float(np.sum(stats.pop("final_val_score_sum")))
    log = {k: float(np.mean(v)) for k, v in stats.items()}
    if episodes:
        log["charts/episodic_return"] = returns / episodes
        log["charts/final_val_accuracy"] = final_val / episodes
    log["charts/episodes"] = episodes
    return log


def train(
    settings: TrainSettings,
    out: str | Path,
    resume: bool = False,
    wandb_mode: str = "offline",
    progress: bool = True,
    command: str = "",
    stop_after_chunks: int | None = None,
) -> Path | None:
    """Run (or with `resume`, continue) training into `out`; returns the exported policy's path.

    `settings` is ignored when resuming (the checkpoint's are used).
    `stop_after_chunks` stops early without exporting, as if the run had
    been killed after that many chunks (returns None).
    """
    out = Path(out)
    if resume:
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
    else:
        last = None
        if checkpoint.list_checkpoints(out):
            raise checkpoint.CheckpointError(
                f"{out}: already holds a training run; continue it with --resume {out} or "
                "choose another --out"
            )
        settings = finalise(settings)
    agent = get_agent(settings.agent)
    config = settings.config
    config.check()
    init, chunk = compiled(settings.agent, config, settings.run.chunk_updates)
    env = make_env(config.env)
    k_init, k_scale = jax.random.split(jax.random.key(settings.run.seed))
    tasks, eval_names, eval_params = load_training_tasks(settings, env, k_scale)
    if last is None:
        runner = init(k_init, tasks)
    else:
        template = jax.eval_shape(lambda k, t: rollout.detach_params(init(k, t)), k_init, tasks)
        runner = rollout.attach_params(checkpoint.restore(last, template), tasks)
    updates_done = int(runner.update)
    n_chunks = config.num_updates // settings.run.chunk_updates
    evaluate = evaluator(config.env, tuple(config.hidden), config.state_hidden)
    eval_keys = [
        jax.random.key(EVAL_SEED_OFFSET + seed)
        for _ in eval_names
        for seed in range(settings.run.eval_seeds)
    ]

    run = tracking.init_run(
        WANDB_PROJECT,
        tracking.run_name(settings.data.suite, settings.agent, settings.run.seed),
        {**settings.to_dict(), "command": command, "resumed_at_update": updates_done},
        mode=wandb_mode,
        dir=out,
    )
    bar = tqdm(
        total=config.total_steps,
        initial=updates_done * config.steps_per_update,
        unit="step",
        unit_scale=True,
        desc=f"{settings.agent} {settings.data.suite}",
        disable=not progress,
    )
    first_chunk = updates_done // settings.run.chunk_updates
    bar.set_postfix_str("compiling")
    chunk = chunk.lower(runner, tasks).compile()
    for index in range(first_chunk, n_chunks):
        if stop_after_chunks is not None and index - first_chunk >= stop_after_chunks:
            bar.close()
            run.finish()
            return None
        started = time.perf_counter()
        runner, stats = chunk(runner, tasks)
        stats = jax.device_get(stats)
        elapsed = time.perf_counter() - started
        updates_done = int(runner.update)
        env_steps = updates_done * config.steps_per_update
        log = _chunk_log(dict(stats))
        log["charts/SPS"] = settings.run.chunk_updates * config.steps_per_update / elapsed
        checkpoint.save(
            out,
            updates_done,
            rollout.detach_params(runner),
            {
                "agent": settings.agent,
                "env_steps": env_steps,
                "settings": settings.to_dict(),
                "command": command,
            },
        )
        last_chunk = index == n_chunks - 1
        every = settings.run.eval_every
        if eval_keys and (last_chunk or (every and (index + 1) % every == 0)):
            curves = evaluate(agent.policy_params(runner), jnp.stack(eval_keys), eval_params)
            log.update(eval_metrics(np.asarray(curves), eval_names))
        run.log(log, step=env_steps)
        with open(out / METRICS_FILE, "a") as f:
            f.write(json.dumps({"env_steps": env_steps, **log}) + "\n")
        bar.update(settings.run.chunk_updates * config.steps_per_update)
        postfix = {"SPS": f"{log['charts/SPS']:.0f}"}
        if "charts/episodic_return" in log:
            postfix["return"] = f"{log['charts/episodic_return']:.4f}"
        bar.set_postfix(postfix)
    bar.close()

    policy = checkpoint.export_policy(
        out / checkpoint.POLICY_FILE,
        agent.policy_params(runner),
        policy_config(
            config.hidden,
            config.state_hidden,
            config.env.probe_size,
            agent=settings.agent,
            env=dataclasses.asdict(config.env),
            suite=settings.data.suite,
            seed=settings.run.seed,
            env_steps=int(runner.update) * config.steps_per_update,
            command=command,
        ),
        settings.shortlist,
    )
    run.update_summary({"policy": str(policy)})
    run.finish()
    return policy


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
) -> Path:
    """Train `members` runs (seeds seed, seed + 1, ...) and export their vote as OUT/policy.

    With `members=1` the export is the one member's policy, not a one-member vote.

    Each member is an ordinary run in OUT/seed<k> (checkpoints, resume, W&B);
    the vote (`LearnedStrategy.ensemble`) scores by the mean of the members'
    standardised scores. With `resume`, finished members are kept, killed
    ones continue from their last checkpoint and missing ones start, all from
    the settings saved in OUT/members.json.
    """
    from metaal.strategies.learned import LearnedStrategy

    out = Path(out)
    record = out / MEMBERS_FILE
    if resume:
        if not record.is_file():
            raise checkpoint.CheckpointError(
                f"{out}: no {MEMBERS_FILE}, so not a vote's folder; a single run resumes with "
                "--resume on its own folder"
            )
        saved = json.loads(record.read_text())
        settings, seeds = TrainSettings.from_dict(saved["settings"]), saved["seeds"]
        command = saved.get("command", command)
    else:
        if members < 1:
            raise ValueError(f"--members must be at least 1, got {members}")
        if record.exists() or checkpoint.list_checkpoints(out):
            raise checkpoint.CheckpointError(
                f"{out}: already holds a training run; continue it with --resume {out} or "
                "choose another --out"
            )
        seeds = [settings.run.seed + i for i in range(members)]
        out.mkdir(parents=True, exist_ok=True)
        record.write_text(
            json.dumps({"settings": settings.to_dict(), "seeds": seeds, "command": command})
        )
    policies = []
    for seed in seeds:
        folder = member_dir(out, seed)
        done = folder / checkpoint.POLICY_FILE
        if not done.is_file():
            started = bool(checkpoint.list_checkpoints(folder))
            member = dataclasses.replace(settings, run=dataclasses.replace(settings.run, seed=seed))
            print(f"member seed {seed} ({len(policies) + 1}/{len(seeds)}): {folder}", flush=True)
            train(member, folder, started, wandb_mode, progress, command)
        policies.append(LearnedStrategy.load(done))
    # one member is exported as its own policy, as imitation's --members 1 is
    vote = policies[0] if len(policies) == 1 else LearnedStrategy.ensemble(policies)
    vote.config["command"] = command
    return vote.save(out / checkpoint.POLICY_FILE)


# --- command line ---------------------------------------------------------------------

#: Options that change the config: not allowed with --resume (the run keeps its own).
_CONFIG_OPTIONS = ("agent", "preset", "suite", "total_steps", "num_envs", "seed", "reward_norm",
                   "budget", "n_candidates", "shortlist", "chunk_updates", "members")  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `metaal train` options to `parser`."""
    parser.add_argument(
        "--agent",
        choices=[*sorted(configs.AGENTS), "imitation"],
        help="RL agent, or imitation (DAgger of the look-ahead oracle; default: ppo)",
    )
    parser.add_argument(
        "--variant",
        help="imitation recipe (experiments/research_imitation.py VARIANTS; default: the "
        "recipe of the shipped default policy)",
    )
    parser.add_argument(
        "--members",
        type=int,
        help="train this many runs (seeds --seed, --seed + 1, ...) and export their vote "
        "(the mean of their standardised scores); default 1, imitation: as the shipped policy",
    )
    parser.add_argument(
        "--preset", choices=configs.PRESETS, help="settings to start from (default: demo)"
    )
    parser.add_argument(
        "--suite", help="training suite: train, synthetic[:N], train+synthetic, or a data set"
    )
    parser.add_argument("--total-steps", type=int, help="env steps of the run, all envs together")
    parser.add_argument("--num-envs", type=int, help="envs stepped in parallel")
    parser.add_argument("--seed", type=int, help="root seed (default: 0)")
    parser.add_argument("--budget", type=int, help="queries per training episode (preset's)")
    parser.add_argument(
        "--n-candidates", type=int, help="random unlabelled candidates offered per step (preset's)"
    )
    parser.add_argument(
        "--reward-norm",
        choices=rollout.REWARD_NORMS,
        help="`task` divides rewards by a per-task scale (full-pool minus initial accuracy)",
    )
    parser.add_argument(
        "--shortlist",
        type=int,
        help="the exported policy re-ranks only margin's K most uncertain candidates "
        "(deployment only; default 0: all candidates)",
    )
    parser.add_argument(
        "--chunk-updates", type=int, help="updates per chunk, i.e. between checkpoints"
    )
    parser.add_argument("--out", help=f"run folder (default: {DEFAULT_OUT}/<run name>)")
    parser.add_argument("--resume", metavar="DIR", help="continue the run in DIR")
    parser.add_argument(
        "--wandb-mode", choices=tracking.MODES, default="offline", help="W&B logging mode"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    """The preset named by the arguments with their overrides applied."""
    settings = configs.preset(args.preset or "demo", args.agent or "ppo")
    config = settings.config
    overrides = {
        "total_steps": args.total_steps,
        "num_envs": args.num_envs,
        "reward_norm": args.reward_norm,
    }
    for name, value in overrides.items():
        if value is not None:
            if name in ("total_steps", "num_envs") and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
            config = config.replace(**{name: value})
    env_overrides = {"budget": args.budget, "n_candidates": args.n_candidates}
    env_overrides = {k: v for k, v in env_overrides.items() if v is not None}
    if env_overrides:  # EnvConfig checks them (budget and candidates must be positive)
        config = config.replace(env=dataclasses.replace(config.env, **env_overrides))
    data = (
        settings.data
        if args.suite is None
        else dataclasses.replace(settings.data, suite=args.suite)
    )
    run = settings.run
    if args.seed is not None:
        run = dataclasses.replace(run, seed=args.seed)
    if args.chunk_updates is not None:
        if args.chunk_updates < 1:
            raise ValueError(f"--chunk-updates must be positive, got {args.chunk_updates}")
        run = dataclasses.replace(run, chunk_updates=args.chunk_updates)
    shortlist = settings.shortlist if args.shortlist is None else args.shortlist
    if shortlist < 0:
        raise ValueError(f"--shortlist must be >= 0 (0: no shortlist), got {shortlist}")
    return dataclasses.replace(settings, config=config, data=data, run=run, shortlist=shortlist)


def main(args: argparse.Namespace) -> int:
    """Run `metaal train` from parsed arguments; returns the exit code (2 on bad input)."""
    argv = sys.argv[1:]
    command = "metaal " + shlex.join(argv[argv.index("train") :]) if "train" in argv else ""
    try:
        if args.agent != "imitation" and args.variant:
            raise ValueError("--variant is an imitation option; add --agent imitation")
        if args.agent == "imitation":
            recipe = [
                o for o in ("budget", "n_candidates", "shortlist") if getattr(args, o) is not None
            ]
            if recipe:
                flags = ", ".join("--" + o.replace("_", "-") for o in recipe)
                raise ValueError(f"the imitation --variant sets {flags}; drop them")
            from experiments.imitate import DEFAULT_MEMBERS, DEFAULT_VARIANT, train_imitation

            if args.resume:
                raise ValueError("imitation runs write no checkpoints; re-run without --resume")
            out = args.out or str(Path(DEFAULT_OUT) / tracking.run_name("train", "imitation", 0))
            policy = train_imitation(
                out,
                args.variant or DEFAULT_VARIANT,
                args.seed or 0,
                command=command,
                members=DEFAULT_MEMBERS if args.members is None else args.members,
            )
        elif args.resume:
            given = [o for o in _CONFIG_OPTIONS if getattr(args, o, None) is not None]
            if given:
                flags = ", ".join("--" + o.replace("_", "-") for o in given)
                raise ValueError(
                    f"--resume continues {args.resume} with its saved config; drop {flags}, "
                    "or start a new run with --out"
                )
            if args.out and Path(args.out) != Path(args.resume):
                raise ValueError("--resume DIR continues in DIR; drop --out")
            resume = train_members if (Path(args.resume) / MEMBERS_FILE).is_file() else train
            policy = resume(
                None,
                args.resume,
                resume=True,
                wandb_mode=args.wandb_mode,
                progress=not args.quiet,
                command=command,
            )
        else:
            settings = settings_from_args(args)
            out = args.out or str(
                Path(DEFAULT_OUT)
                / tracking.run_name(settings.data.suite, settings.agent, settings.run.seed)
            )
            run_kwargs = {"wandb_mode": args.wandb_mode, "progress": not args.quiet}
            if args.members is None:
                policy = train(settings, out, command=command, **run_kwargs)
            else:
                policy = train_members(settings, out, args.members, command=command, **run_kwargs)
    except ValueError as err:  # DataError and CheckpointError are ValueErrors: bad input
        print(f"metaal train: error: {err}", file=sys.stderr)
        return 2
    print(f"policy written to {policy}")
    return 0
