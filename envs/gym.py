"""Gymnasium adapters over the functional core (`envs.core`): one env and a jitted vector env.

`ActiveLearningGymEnv` is a thin `gymnasium.Env`, modelled on Gymnasium's
`envs/functional_jax_env.py`: it keeps the core's `EnvState` and a JAX key,
returns numpy observations, a Python `float` reward, a `bool` terminated
flag, a plain `False` truncated flag and Python scalars in `info`. It never
resets itself. An action must lie in the action space, `Discrete(C)`: an
integer 0..C-1 (a Python int, a numpy integer or a 0-d integer array).
Anything else (out of range, a float such as 2.7, a string, None, an array
of shape other than ()) raises a `ValueError` naming the action and the
space. A masked or already-labelled action inside the space is the core's
no-op: it uses one query and is rewarded `-invalid_action_penalty`.

`ActiveLearningVectorEnv` runs `num_envs` episodes at once with one
`jax.jit(jax.vmap(...))` of the core's reset and step, and resets finished
episodes on the next `step` call (Gymnasium's `AutoresetMode.NEXT_STEP`: that
call ignores the finished env's action and returns its first observation
with reward 0).

Keys: `reset(seed=s)` starts the env's key chain at `jax.random.key(s)`;
every reset and step splits one key off the chain. Env `i` of a vector env
reset with seed `s` follows the chain of `jax.random.key(s + i)` (the
seeding convention of Gymnasium's `SyncVectorEnv`), so its rows equal a
single env reset with seed `s + i` and given the same actions.

Tasks: without `task`, a small fixed synthetic task (`default_task`, no
optional package needed) so that `gym.make("metaal/ActiveLearning-v0")`
works bare; otherwise `task` is a `Task`, a `Split`, a data set or suite name
(`"keel/wine"`, `"heldout"`, see `metaal.data.suites`), a file path, or a
sequence of these. Every task is split once with `split_seed` and all are
padded to common shapes, so one compiled step serves them all. The single
env draws a task per reset (or takes `options={"task": index_or_name}`);
env `i` of a vector env runs task `i % n_tasks` in every episode.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from metaal import features
from metaal.data import (
    Split,
    Task,
    load_task,
    make_split,
    make_synthetic_task,
    pad_split,
    stack_splits,
    suite_names,
)
from metaal.envs.core import (
    ActiveLearningEnv,
    EnvConfig,
    EnvParams,
    EnvState,
    check_fits,
    make_params,
)

TaskSpec = Task | Split | str | Sequence[Task | Split | str]

#: Per-step info keys (the vector env marks them absent for envs that were just reset).
STEP_INFO = ("test_score", "pool_index", "valid_action")


_make_params_batch = jax.jit(jax.vmap(make_params))


@functools.cache
def default_task() -> Task:
    """The task of a bare `gym.make`: 400 rows, 5 features, 2 classes, synthetic seed 0."""
    return make_synthetic_task(0, n_samples=400, n_features=5, name="synthetic-default")


@dataclasses.dataclass(frozen=True)
class PreparedTasks:
    """Tasks split once and padded to common shapes; `params` has a leading task axis."""

    names: tuple[str, ...]
    params: EnvParams

    def take(self, index: np.ndarray | int) -> EnvParams:
        """Params of task `index` (an int, or an array of task indices for a batch)."""
        return jax.tree.map(lambda x: x[index], self.params)


def _resolve(task: Task | Split | str) -> list[Task | Split]:
    if isinstance(task, Task | Split):
        return [task]
    if isinstance(task, str):
        if Path(task).is_file():
            return [load_task(task)]
        return [load_task(name) for name in suite_names(task)]
    raise TypeError(
        f"task must be a Task, a Split, a data set or suite name, or a sequence of these; "
        f"got {type(task).__name__}"
    )


def prepare_tasks(
    task: TaskSpec,
    config: EnvConfig,
    split_seed: int = 0,
    max_pool: int = 1000,
    max_val: int = 500,
    max_test: int = 500,
) -> PreparedTasks:
    """Load, split (seed `split_seed`), pad and check every task; one `EnvParams` per task."""
    items = [task] if isinstance(task, Task | Split | str) else list(task)
    resolved = [t for item in items for t in _resolve(item)]
    if not resolved:
        raise ValueError("task: no tasks given; pass a Task, a name or a non-empty sequence")
    splits = [
        t if isinstance(t, Split) else make_split(t, split_seed, max_pool, max_val, max_test)
        for t in resolved
    ]
    for split in splits:
        check_fits(pad_split(split), config, split.name)
    params = _make_params_batch(stack_splits(splits))
    return PreparedTasks(names=tuple(s.name for s in splits), params=params)


def observation_space(config: EnvConfig, n_pool: int) -> spaces.Dict:
    """The Dict observation space of one env over a (padded) pool of `n_pool` samples.

    Every state feature lies in [-1, 1] (the validation gain so far can be
    negative); the candidate columns are the env's `features`, with the
    bounds of the feature table (`metaal.features.column_bounds`).
    """
    c = config.n_candidates or n_pool
    names = core_env(config).features
    low, high = features.column_bounds(names, c)
    low = np.broadcast_to(low, (c, len(names))).copy()
    high = np.broadcast_to(high, (c, len(names))).copy()
    return spaces.Dict(
        {
            "state": spaces.Box(
                -1.0, 1.0, (features.n_state_features(config.probe_size),), np.float32
            ),
            "candidates": spaces.Box(low, high, dtype=np.float32),
            "action_mask": spaces.MultiBinary(c),
        }
    )


def to_numpy(obs: Any) -> dict[str, np.ndarray]:
    """A core `Observation` (single or batched) as the numpy dict of the observation space."""
    obs = jax.device_get(obs)
    return {
        "state": np.array(obs.state, np.float32),
        "candidates": np.array(obs.candidates, np.float32),
        "action_mask": np.array(obs.action_mask, np.int8),
    }


def check_action(action: Any, space: spaces.Discrete) -> np.int32:
    """`action` as the core's int32, or a `ValueError` naming it and `space` when outside it."""
    if not space.contains(action):
        raise ValueError(
            f"action {action!r} ({type(action).__name__}) is not in the action space {space}: "
            f"give one integer from 0 to {space.n - 1} (a candidate's index)"
        )
    return np.int32(action)


def check_actions(actions: Any, space: spaces.Discrete, num_envs: int) -> np.ndarray:
    """A vector env's actions as int32 (num_envs,), or a `ValueError` naming the bad ones."""
    a = np.asarray(actions)
    if a.shape != (num_envs,) or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(
            f"actions {actions!r}: expected {num_envs} integers (shape ({num_envs},)), one per "
            f"env, each in {space}; got shape {a.shape} and dtype {a.dtype}"
        )
    outside = np.nonzero((a < 0) | (a >= space.n))[0]
    if outside.size:
        raise ValueError(
            f"actions {a.tolist()}: env(s) {outside.tolist()} got actions outside the action "
            f"space {space}; give integers from 0 to {space.n - 1}"
        )
    return a.astype(np.int32)


@functools.cache
def core_env(config: EnvConfig) -> ActiveLearningEnv:
    """The functional env of `config`, shared so that every adapter reuses its compiled code."""
    return ActiveLearningEnv(config)


def _split(chain: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Advance a key chain: (next chain, key for this reset or step)."""
    chain, key = jax.random.split(chain)
    return chain, key


_split_jit = jax.jit(_split)


@functools.cache
def _vector_fns(config: EnvConfig, shared_params: bool):
    """`jit(vmap(...))` of the core's reset and step with the key chain, and the autoreset merge.

    With `shared_params` every env reads one unbatched `EnvParams` (no per-env copy).
    """
    env = core_env(config)
    p_axis = None if shared_params else 0

    def reset(chain, params):
        chain, key = _split(chain)
        return (chain, *env.reset_env(key, params))

    def step(chain, state, action, params):
        chain, key = _split(chain)
        return (chain, *env.step_env(key, state, action, params))

    def merge(done, fresh, old):
        def pick(a, b):
            return jnp.where(done.reshape(done.shape + (1,) * (a.ndim - 1)), a, b)

        return jax.tree.map(pick, fresh, old)

    return (
        jax.jit(jax.vmap(reset, in_axes=(0, p_axis))),
        jax.jit(jax.vmap(step, in_axes=(0, 0, 0, p_axis))),
        jax.jit(merge),
    )


def _config(budget, n_candidates, reward, learner, n_initial, extra) -> EnvConfig:
    return EnvConfig(
        budget=budget,
        n_candidates=n_candidates,
        reward=reward,
        learner=learner,
        n_initial=n_initial,
        **extra,
    )


class ActiveLearningGymEnv(gym.Env):
    """One active-learning episode at a time as a `gymnasium.Env` (see the module docstring).

    Extra keyword arguments are `EnvConfig` fields (`fit_steps`, `probe_size`,
    `invalid_action_penalty`, ...). `max_pool`, `max_val` and `max_test` cap
    the split sizes.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        task: TaskSpec | None = None,
        budget: int = 100,
        n_candidates: int | None = 32,
        reward: str = "gain",
        learner: str = "logreg",
        n_initial: int = 5,
        split_seed: int = 0,
        max_pool: int = 1000,
        max_val: int = 500,
        max_test: int = 500,
        render_mode: str | None = None,
        **config: Any,
    ) -> None:
        if render_mode is not None:
            raise ValueError(f"render_mode {render_mode!r} is not supported; this env has none")
        self.config = _config(budget, n_candidates, reward, learner, n_initial, config)
        task = default_task() if task is None else task
        self.tasks = prepare_tasks(task, self.config, split_seed, max_pool, max_val, max_test)
        self.core = core_env(self.config)
        self._task_params = [self.tasks.take(i) for i in range(len(self.tasks.names))]
        n_pool = self.tasks.params.task.pool_X.shape[-2]
        self.observation_space = observation_space(self.config, n_pool)
        self.action_space = spaces.Discrete(self.config.n_candidates or n_pool)
        self.render_mode = None
        self._chain: jax.Array | None = None
        self.state: EnvState | None = None
        self.task_index = 0
        self._done = False

    @property
    def params(self) -> EnvParams:
        """The params (task data) of the current episode."""
        return self._task_params[self.task_index]

    def _pick_task(self, options: dict | None) -> int:
        choice = (options or {}).get("task")
        if choice is None:
            n = len(self.tasks.names)
            return int(self.np_random.integers(n)) if n > 1 else 0
        if isinstance(choice, str):
            if choice not in self.tasks.names:
                raise ValueError(
                    f"options['task']={choice!r} is not one of this env's tasks "
                    f"{list(self.tasks.names)}; pass one of them or its index"
                )
            return self.tasks.names.index(choice)
        if not 0 <= int(choice) < len(self.tasks.names):
            raise ValueError(
                f"options['task']={choice} is out of range: this env has "
                f"{len(self.tasks.names)} task(s)"
            )
        return int(choice)

    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode; `options={"task": index_or_name}` picks the task of a suite."""
        super().reset(seed=seed)
        if seed is not None or self._chain is None:
            start = seed if seed is not None else int(self.np_random.integers(2**31))
            self._chain = jax.random.key(start)
        self.task_index = self._pick_task(options)
        self._chain, key = _split_jit(self._chain)
        obs, self.state = self.core.reset(key, self.params)
        self._done = False
        info = {
            "val_score": float(self.state.val_score),
            "n_labeled": int(self.state.n_labeled),
            "task": self.tasks.names[self.task_index],
        }
        return to_numpy(obs), info

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Query candidate `action`: masked is a penalised no-op, outside the space a ValueError."""
        action = check_action(action, self.action_space)
        if self.state is None or self._done:
            raise gym.error.ResetNeeded(
                "step() called before reset() or after the episode terminated; call reset()"
            )
        self._chain, key = _split_jit(self._chain)
        obs, self.state, reward, terminated, _, info = self.core.step(
            key, self.state, action, self.params
        )
        obs, reward, terminated, info = jax.device_get((obs, reward, terminated, info))
        self._done = bool(terminated)
        info = {k: np.asarray(v).item() for k, v in info.items()}
        return to_numpy(obs), float(reward), bool(terminated), False, info


class ActiveLearningVectorEnv(VectorEnv):
    """`num_envs` episodes stepped by one `jax.jit(jax.vmap(...))` call (see the module docstring).

    Env `i` runs task `i % n_tasks`. Finished episodes are reset on the next
    `step` (`AutoresetMode.NEXT_STEP`). Rewards are float64, terminations
    and truncations bool arrays; `info` holds arrays with Gymnasium's `_key`
    masks.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int,
        task: TaskSpec | None = None,
        budget: int = 100,
        n_candidates: int | None = 32,
        reward: str = "gain",
        learner: str = "logreg",
        n_initial: int = 5,
        split_seed: int = 0,
        max_pool: int = 1000,
        max_val: int = 500,
        max_test: int = 500,
        render_mode: str | None = None,
        **config: Any,
    ) -> None:
        if render_mode is not None:
            raise ValueError(f"render_mode {render_mode!r} is not supported; this env has none")
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        self.config = _config(budget, n_candidates, reward, learner, n_initial, config)
        task = default_task() if task is None else task
        self.tasks = prepare_tasks(task, self.config, split_seed, max_pool, max_val, max_test)
        self.core = core_env(self.config)
        self.num_envs = num_envs
        self.task_index = np.arange(num_envs) % len(self.tasks.names)
        # One task: all envs share its params. Several: each env holds a copy of its
        # task's arrays (num_envs x the padded task size in memory).
        shared = len(self.tasks.names) == 1
        self.params = self.tasks.take(0) if shared else self.tasks.take(self.task_index)
        self._reset_fn, self._step_fn, self._merge_fn = _vector_fns(self.config, shared)
        n_pool = self.tasks.params.task.pool_X.shape[-2]
        self.single_observation_space = observation_space(self.config, n_pool)
        self.single_action_space = spaces.Discrete(self.config.n_candidates or n_pool)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.render_mode = None
        self._chains: jax.Array | None = None
        self.state: EnvState | None = None
        self._done = np.zeros(num_envs, bool)

    def _reset_info(self, state: EnvState) -> dict[str, np.ndarray]:
        info = {
            "val_score": np.asarray(state.val_score, np.float64),
            "n_labeled": np.asarray(state.n_labeled, np.int64),
            "task_index": self.task_index.copy(),
        }
        everyone = np.ones(self.num_envs, bool)
        return {**info, **{f"_{k}": everyone for k in info}}

    def reset(
        self, *, seed: int | Sequence[int] | None = None, options: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Reset every env; env `i` starts the key chain of seed `seed + i` (or `seed[i]`)."""
        if isinstance(seed, int) or seed is None:
            super().reset(seed=seed)
            base = seed if seed is not None else int(self.np_random.integers(2**31))
            seeds = [base + i for i in range(self.num_envs)]
        else:
            seeds = [int(s) for s in seed]
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed: got {len(seeds)} seeds for {self.num_envs} envs")
            super().reset(seed=seeds[0])
        chains = jnp.stack([jax.random.key(s) for s in seeds])
        self._chains, obs, self.state = self._reset_fn(chains, self.params)
        self._done = np.zeros(self.num_envs, bool)
        return to_numpy(obs), self._reset_info(jax.device_get(self.state))

    def step(
        self, actions: Any
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Step every env; envs that finished on the previous call are reset instead."""
        actions = check_actions(actions, self.single_action_space, self.num_envs)
        if self.state is None:
            raise gym.error.ResetNeeded("step() called before reset(); call reset() first")
        chains, obs, state, reward, terminated, _, info = self._step_fn(
            self._chains, self.state, actions, self.params
        )
        reset_now = self._done
        if reset_now.any():
            fresh_chains, fresh_obs, fresh_state = self._reset_fn(self._chains, self.params)
            done = jnp.asarray(reset_now)
            chains, obs, state = self._merge_fn(
                done, (fresh_chains, fresh_obs, fresh_state), (chains, obs, state)
            )
        self._chains, self.state = chains, state
        reward, terminated, info, host_state = jax.device_get((reward, terminated, info, state))
        reward = np.where(reset_now, 0.0, reward).astype(np.float64)
        terminated = np.where(reset_now, False, terminated).astype(bool)
        self._done = terminated.copy()
        out = self._reset_info(host_state)
        stepped = ~reset_now
        for k in STEP_INFO:
            out[k] = np.where(stepped, info[k], 0).astype(np.asarray(info[k]).dtype)
            out[f"_{k}"] = stepped.copy()
        return to_numpy(obs), reward, terminated, np.zeros(self.num_envs, bool), out
