"""Vectorised training envs shared by the agents: a new task at every reset, auto-reset, returns.

The training suite is one `TrainingTasks`: env params stacked over every
(task, split) pair, so a reset picks a data set *and* one of its
precomputed splits at random. Each of the `num_envs` slots keeps the params
of its current episode (`Envs.params`), gathered once at reset rather than
at every step: gathering a padded pool per step would cost more than the
step itself.

Episodes never truncate and every episode lasts exactly `budget` steps, so
all slots terminate together; the reset (a cold learner fit) therefore runs
under a `cond` only on the steps where some slot terminated (`lazy_cond`, so
also in vmapped runs).

Rewards are the env's, optionally divided by a per-task scale
(`reward_norm="task"`): the validation accuracy a learner fitted on the whole
pool reaches minus the accuracy after the initial labelled set, floored at
`MIN_REWARD_SCALE`. Gains then measure the share of the achievable
improvement, so easy and hard tasks weigh alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp
from flax import struct

from metaal.batching import lazy_cond
from metaal.envs.core import ActiveLearningEnv, EnvParams, Observation

REWARD_NORMS = ("none", "task")
#: Smallest per-task reward scale: tasks that barely improve are not blown up.
MIN_REWARD_SCALE = 0.05


class Env(Protocol):
    """What the agents need of an env: the functional reset and step (see `envs.core`)."""

    def reset_env(self, key: jax.Array, params: Any) -> tuple[Observation, Any]:
        """Start an episode."""

    def step_env(self, key: jax.Array, state: Any, action: jax.Array, params: Any) -> tuple:
        """`obs, state, reward, terminated, truncated, info`."""


@struct.dataclass
class TrainingTasks:
    """Env params stacked over (task, split) pairs (leading axis T) and their reward scales (T,)."""

    params: Any
    reward_scale: jnp.ndarray


@struct.dataclass
class Envs:
    """The `num_envs` env slots of a training run (leading axis N on every field)."""

    state: Any
    obs: Observation
    task: jnp.ndarray  # (N,) index into TrainingTasks of each slot's current episode
    params: Any  # (N, ...) that task's params; None in checkpoints (rebuilt from `task`)
    episode_return: jnp.ndarray  # (N,) return so far in the current episode
    episode_length: jnp.ndarray  # (N,)


@struct.dataclass
class StepOutput:
    """What one vector step reports, per slot."""

    reward: jnp.ndarray  # (N,) reward the agent learns from (normalised if configured)
    done: jnp.ndarray  # (N,) the episode terminated at this step
    episode_return: jnp.ndarray  # (N,) return of the episode that ended here, else 0
    val_score: jnp.ndarray  # (N,) validation accuracy after this step


def n_tasks(tasks: TrainingTasks) -> int:
    """Number of (task, split) pairs."""
    return tasks.reward_scale.shape[0]


def take(tree: Any, index: jnp.ndarray) -> Any:
    """Rows `index` of every leaf of a batched pytree."""
    return jax.tree.map(lambda x: x[index], tree)


def reset(env: Env, key: jax.Array, tasks: TrainingTasks, num_envs: int) -> Envs:
    """Fresh episodes in every slot, each on a (task, split) drawn uniformly at random."""
    k_task, k_reset = jax.random.split(key)
    task = jax.random.randint(k_task, (num_envs,), 0, n_tasks(tasks))
    params = take(tasks.params, task)
    obs, state = jax.vmap(env.reset_env)(jax.random.split(k_reset, num_envs), params)
    return Envs(
        state=state,
        obs=obs,
        task=task,
        params=params,
        episode_return=jnp.zeros(num_envs, jnp.float32),
        episode_length=jnp.zeros(num_envs, jnp.int32),
    )


def step(
    env: Env,
    key: jax.Array,
    envs: Envs,
    action: jax.Array,
    tasks: TrainingTasks,
    reward_norm: str = "none",
) -> tuple[Envs, StepOutput]:
    """Step every slot; slots whose episode terminated are reset on a new random task."""
    num_envs = envs.task.shape[0]
    k_step, k_reset = jax.random.split(key)
    obs, state, reward, done, _, info = jax.vmap(env.step_env)(
        jax.random.split(k_step, num_envs), envs.state, action, envs.params
    )
    if reward_norm == "task":
        reward = reward / tasks.reward_scale[envs.task]
    episode_return = envs.episode_return + reward
    stepped = envs.replace(
        state=state,
        obs=obs,
        episode_return=jnp.where(done, 0.0, episode_return),
        episode_length=jnp.where(done, 0, envs.episode_length + 1),
    )

    def reset_done(k_reset, tasks, done, current: Envs) -> Envs:
        fresh = reset(env, k_reset, tasks, num_envs)

        def pick(new, old):
            return jnp.where(done.reshape(done.shape + (1,) * (new.ndim - 1)), new, old)

        return jax.tree.map(pick, fresh, current)

    # a vmapped vote's or sweep's runs end their episodes at the same steps: under vmap the
    # reset still runs only then (a plain cond would become a select, a reset every step)
    envs = lazy_cond(jnp.any(done), reset_done, stepped, k_reset, tasks, done, stepped)
    out = StepOutput(
        reward=reward,
        done=done,
        episode_return=jnp.where(done, episode_return, 0.0),
        val_score=info["val_score"],
    )
    return envs, out


def episode_stats(out: StepOutput) -> dict[str, jnp.ndarray]:
    """Sums over a batch of `StepOutput`s, for averaging over a whole chunk of updates."""
    done = out.done.astype(jnp.float32)
    return {
        "episodes": jnp.sum(done),
        "episode_return_sum": jnp.sum(out.episode_return),
        "final_val_score_sum": jnp.sum(out.val_score * done),
    }


def detach_params(runner: Any) -> Any:
    """The runner without its slots' env params (they are rebuilt from the task indices).

    Runners without env slots (imitation's) are returned as they are.
    """
    if not hasattr(runner, "envs"):
        return runner
    return runner.replace(envs=runner.envs.replace(params=None))


def attach_params(runner: Any, tasks: TrainingTasks) -> Any:
    """Inverse of `detach_params`: gather every slot's params from `tasks` again."""
    if not hasattr(runner, "envs"):
        return runner
    return runner.replace(envs=runner.envs.replace(params=take(tasks.params, runner.envs.task)))


def make_train(init: Callable, update: Callable, config: Any, env: Any = None) -> Callable:
    """Jitted `train(key, tasks) -> (runner, metrics per update)`: a whole run as one `lax.scan`.

    Every agent's `make_train` is this over its own `init` and `update`.
    """

    def train(key, tasks):
        runner = init(config, key, tasks, env)
        return jax.lax.scan(
            lambda r, _: update(config, r, tasks, env), runner, None, config.num_updates
        )

    return jax.jit(train)


def reward_scales(
    env: ActiveLearningEnv, params: EnvParams, key: jax.Array, n_resets: int = 4, n_fits: int = 4
) -> jnp.ndarray:
    """Per-task reward scale (T,): full-pool minus initial validation accuracy, floored.

    The initial accuracy is averaged over `n_resets` initial sets; the
    full-pool learner is the env's cold learner, refitted `n_fits` times
    (warm) on every pool row so that it converges.
    """
    learner = env.learner_init

    def one(p: EnvParams, k: jax.Array) -> jnp.ndarray:
        task = p.task
        k_fit, k_reset = jax.random.split(k)
        initial = jax.vmap(lambda kk: env.reset_env(kk, p)[1].val_score)(
            jax.random.split(k_reset, n_resets)
        )
        weights = task.pool_mask.astype(jnp.float32)
        fitted = jax.lax.fori_loop(
            0,
            n_fits,
            lambda _, lp: learner.fit(lp, task.pool_X, task.pool_y, weights, task.class_mask),
            learner.init(
                k_fit, task.pool_X.shape[-1], task.class_mask.shape[-1], task.feature_mask
            ),
        )
        full = env.accuracy(fitted, task.val_X, task.val_y, task.val_mask, task.class_mask)
        return jnp.maximum(full - jnp.mean(initial), MIN_REWARD_SCALE)

    t = jax.tree.leaves(params)[0].shape[0]
    return jax.jit(jax.vmap(one))(params, jax.random.split(key, t))


def training_tasks(
    env: Env, params: Any, reward_norm: str = "none", key: jax.Array | None = None
) -> TrainingTasks:
    """`TrainingTasks` from stacked env params; reward scales computed only for `"task"`."""
    if reward_norm not in REWARD_NORMS:
        raise ValueError(f"unknown reward_norm {reward_norm!r}; choose one of {REWARD_NORMS}")
    t = jax.tree.leaves(params)[0].shape[0]
    if reward_norm == "task":
        scale = reward_scales(env, params, jax.random.key(0) if key is None else key)
    else:
        scale = jnp.ones(t, jnp.float32)
    return TrainingTasks(params=params, reward_scale=scale)


def slot_placement(runner: Any, mesh: Any, axis: int = 0) -> Any:
    """Shardings that split `runner`'s env slots (`runner.envs`) along `axis` over `mesh`.

    Every other part of the runner is replicated. `axis` 0 splits the slots
    of one run; for runs stacked on a leading axis (a vmapped vote), 0 splits
    the runs and 1 each run's slots. XLA partitions the jitted update from
    these placements: the slots' steps run where their data is and the loss
    reductions become all-reduces, whose order of summation (not their
    value) depends on the device count.
    """
    from jax.sharding import NamedSharding, PartitionSpec

    envs = getattr(runner, "envs", None)
    if envs is None:
        raise ValueError(
            f"{type(runner).__name__} keeps no env slots between updates, so it cannot be "
            "split over devices; run it with --devices 1"
        )
    size = jax.tree.leaves(envs)[0].shape[axis]
    if size % mesh.size:
        raise ValueError(
            f"--devices {mesh.size} must divide the {size} env slots of a run (--num-envs or "
            f"--n-envs); choose a divisor of {size}"
        )
    replicated = NamedSharding(mesh, PartitionSpec())
    split = NamedSharding(mesh, PartitionSpec(*([None] * axis), mesh.axis_names[0]))
    placement = jax.tree.map(lambda _: replicated, runner)
    return placement.replace(envs=jax.tree.map(lambda _: split, envs))
