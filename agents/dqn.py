"""Double DQN for the candidate-scoring policy (the LAL-RL recipe), readable top to bottom.

Q(s, a) is the `CandidateScorer`'s score of candidate a, so one network
with shared weights values any number of candidates (masked ones at -1e9,
never chosen). One update steps every env slot `train_frequency` times with
an epsilon-greedy policy (epsilon decays linearly over the first
`exploration_fraction` of the run), stores the steps in the replay buffer,
and, once `learning_starts` env steps are stored, takes one gradient step on
a sampled batch and moves the target network towards the online one (soft
update, `tau`). Targets are double-DQN: the online network picks the next
action, the target network values it; terminal steps do not bootstrap.

The replay buffer is a set of fixed-size arrays in the carry, laid out
(time, slot) like a flat trajectory buffer: the observation after step t
is the one stored at t + 1, so each observation, whose candidate features
dominate the memory, is stored once. After a terminal step that next
observation belongs to the new episode, but terminal targets never read it.

    config = DQNConfig(env=EnvConfig(budget=50), total_steps=200_000)
    runner, metrics = make_train(config)(jax.random.key(0), tasks)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training.train_state import TrainState

from metaal.agents import rollout
from metaal.envs.core import ActiveLearningEnv, EnvConfig, Observation
from metaal.policy_net import CandidateScorer, network


@struct.dataclass
class DQNConfig:
    """DQN settings: static fields set shapes and code paths, float fields are sweepable leaves."""

    env: EnvConfig = struct.field(pytree_node=False, default=EnvConfig())
    """The training env."""
    num_envs: int = struct.field(pytree_node=False, default=64)
    """Env slots stepped in parallel."""
    total_steps: int = struct.field(pytree_node=False, default=1_000_000)
    """Env steps of the whole run, all slots together."""
    buffer_size: int = struct.field(pytree_node=False, default=8192)
    """Replay capacity in transitions (rounded down to a multiple of num_envs)."""
    batch_size: int = struct.field(pytree_node=False, default=128)
    """Transitions per gradient step."""
    learning_starts: int = struct.field(pytree_node=False, default=2048)
    """Env steps stored before the first gradient step."""
    train_frequency: int = struct.field(pytree_node=False, default=1)
    """Vector env steps per gradient step."""
    hidden: tuple[int, ...] = struct.field(pytree_node=False, default=(32, 32))
    """Widths of the candidate layers of the scorer."""
    state_hidden: int = struct.field(pytree_node=False, default=32)
    """Width of the state embedding."""
    reward_norm: str = struct.field(pytree_node=False, default="none")
    """`none` or `task` (divide rewards by a per-task scale, see `agents.rollout`)."""
    lr: float = 1e-3
    """Adam learning rate."""
    gamma: float = 0.99
    """Discount."""
    tau: float = 0.01
    """Soft target-update rate per gradient step."""
    eps_start: float = 1.0
    """Initial exploration rate."""
    eps_end: float = 0.05
    """Final exploration rate."""
    exploration_fraction: float = 0.5
    """Share of the run over which epsilon decays."""
    max_grad_norm: float = 10.0
    """Global gradient-norm clip."""

    @property
    def steps_per_update(self) -> int:
        """Env steps per update, all slots together."""
        return self.num_envs * self.train_frequency

    @property
    def num_updates(self) -> int:
        """Updates in the whole run (at least one)."""
        return max(1, self.total_steps // self.steps_per_update)

    @property
    def buffer_length(self) -> int:
        """Time slots of the (time, slot) replay buffer."""
        return max(2, self.buffer_size // self.num_envs)

    def with_updates(self, updates: int) -> DQNConfig:
        """The same config running `updates` updates."""
        return self.replace(total_steps=updates * self.steps_per_update)

    def check(self) -> None:
        """Raise a clear error for settings that cannot work."""
        if self.reward_norm not in rollout.REWARD_NORMS:
            raise ValueError(
                f"unknown reward_norm {self.reward_norm!r}; choose one of {rollout.REWARD_NORMS}"
            )
        if self.learning_starts < 2 * self.num_envs:
            raise ValueError(
                f"learning_starts ({self.learning_starts}) must cover at least two vector "
                f"steps (2 * num_envs = {2 * self.num_envs}) so that sampled steps have a "
                "stored next observation"
            )


@struct.dataclass
class ReplayBuffer:
    """(time, slot) arrays of past steps; `pos` is the next time index written."""

    obs: Observation
    action: jnp.ndarray
    reward: jnp.ndarray
    done: jnp.ndarray
    pos: jnp.ndarray
    size: jnp.ndarray  # time indices filled


@struct.dataclass
class DQNRunner:
    """Everything a DQN run carries between updates (and writes to a checkpoint)."""

    train_state: TrainState
    target_params: Any
    buffer: ReplayBuffer
    envs: rollout.Envs
    key: jax.Array
    update: jnp.ndarray  # updates done


def _q(net: CandidateScorer, params: Any, obs: Observation) -> jnp.ndarray:
    return net.apply(params, obs.state, obs.candidates, obs.action_mask)[0]


def empty_buffer(obs: Observation, length: int) -> ReplayBuffer:
    """A buffer of `length` time slots for batched observations like `obs` (N, ...)."""
    n = obs.action_mask.shape[0]
    return ReplayBuffer(
        obs=jax.tree.map(lambda x: jnp.zeros((length,) + x.shape, x.dtype), obs),
        action=jnp.zeros((length, n), jnp.int32),
        reward=jnp.zeros((length, n), jnp.float32),
        done=jnp.zeros((length, n), bool),
        pos=jnp.int32(0),
        size=jnp.int32(0),
    )


def add(buffer: ReplayBuffer, obs: Observation, action, reward, done) -> ReplayBuffer:
    """Store one vector step (every slot) at `pos`, overwriting the oldest when full."""
    length = buffer.action.shape[0]
    i = buffer.pos
    return ReplayBuffer(
        obs=jax.tree.map(lambda b, x: b.at[i].set(x), buffer.obs, obs),
        action=buffer.action.at[i].set(action),
        reward=buffer.reward.at[i].set(reward),
        done=buffer.done.at[i].set(done),
        pos=(i + 1) % length,
        size=jnp.minimum(buffer.size + 1, length),
    )


def sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int):
    """(obs, action, reward, done, next_obs) of `batch_size` stored steps, uniformly.

    Only steps whose next observation is stored qualify: every filled time
    index but the newest. Needs `size >= 2`.
    """
    length, n = buffer.action.shape
    k_t, k_env = jax.random.split(key)
    offset = jax.random.randint(k_t, (batch_size,), 0, buffer.size - 1)
    t = (buffer.pos - buffer.size + offset) % length
    t_next = (t + 1) % length
    j = jax.random.randint(k_env, (batch_size,), 0, n)
    obs = jax.tree.map(lambda x: x[t, j], buffer.obs)
    next_obs = jax.tree.map(lambda x: x[t_next, j], buffer.obs)
    return obs, buffer.action[t, j], buffer.reward[t, j], buffer.done[t, j], next_obs


def epsilon(config: DQNConfig, env_steps: jnp.ndarray) -> jnp.ndarray:
    """Exploration rate after `env_steps` env steps: linear decay, then constant."""
    decay_steps = jnp.maximum(config.exploration_fraction * config.total_steps, 1.0)
    frac = jnp.clip(env_steps / decay_steps, 0.0, 1.0)
    return config.eps_start + frac * (config.eps_end - config.eps_start)


def init(
    config: DQNConfig, key: jax.Array, tasks: rollout.TrainingTasks, env: Any = None
) -> DQNRunner:
    """A fresh run: online and target networks, optimiser, empty buffer, env slots, RNG."""
    config.check()
    env = env or ActiveLearningEnv(config.env)
    net = network(config.hidden, config.state_hidden)
    k_net, k_env, key = jax.random.split(key, 3)
    envs = rollout.reset(env, k_env, tasks, config.num_envs)
    first = jax.tree.map(lambda x: x[0], envs.obs)
    params = net.init(k_net, first.state, first.candidates, first.action_mask)
    train_state = TrainState.create(apply_fn=net.apply, params=params, tx=optimiser(config))
    return DQNRunner(
        # A typed step counter (not a weakly typed 0), so a restored runner has the same types.
        train_state=train_state.replace(step=jnp.int32(0)),
        target_params=params,
        buffer=empty_buffer(envs.obs, config.buffer_length),
        envs=envs,
        key=key,
        update=jnp.int32(0),
    )


def optimiser(config: DQNConfig) -> optax.GradientTransformation:
    """Gradient-norm clipping then Adam; built by every update from its (maybe traced) config."""
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(config.lr))


def update(
    config: DQNConfig, runner: DQNRunner, tasks: rollout.TrainingTasks, env: Any = None
) -> tuple[DQNRunner, dict[str, jnp.ndarray]]:
    """One DQN update: `train_frequency` epsilon-greedy vector steps, then one learning step."""
    env = env or ActiveLearningEnv(config.env)
    net = network(config.hidden, config.state_hidden)
    params = runner.train_state.params

    def env_step(carry, _):
        buffer, envs, key, env_steps = carry
        key, k_explore, k_random, k_env = jax.random.split(key, 4)
        obs = envs.obs
        greedy = jnp.argmax(_q(net, params, obs), axis=-1)
        random = jax.random.categorical(k_random, jnp.where(obs.action_mask, 0.0, -jnp.inf))
        explore = jax.random.uniform(k_explore, greedy.shape) < epsilon(config, env_steps)
        action = jnp.where(explore, random, greedy)
        envs, out = rollout.step(env, k_env, envs, action, tasks, config.reward_norm)
        buffer = add(buffer, obs, action, out.reward, out.done)
        carry = (buffer, envs, key, env_steps + config.num_envs)
        return carry, rollout.episode_stats(out)

    env_steps = runner.update * config.steps_per_update
    (buffer, envs, key, _), stats = jax.lax.scan(
        env_step,
        (runner.buffer, runner.envs, runner.key, env_steps),
        None,
        config.train_frequency,
    )

    def loss_fn(p, batch):
        obs, action, reward, done, next_obs = batch
        q = jnp.take_along_axis(_q(net, p, obs), action[:, None], axis=-1)[:, 0]
        next_action = jnp.argmax(_q(net, p, next_obs), axis=-1)
        next_q = jnp.take_along_axis(
            _q(net, runner.target_params, next_obs), next_action[:, None], axis=-1
        )[:, 0]
        target = reward + config.gamma * (1.0 - done.astype(jnp.float32)) * next_q
        target = jax.lax.stop_gradient(target)
        return jnp.mean((q - target) ** 2), jnp.mean(q)

    def learn(train_state, key):
        batch = sample(buffer, key, config.batch_size)
        (loss, q_mean), grads = jax.value_and_grad(loss_fn, has_aux=True)(train_state.params, batch)
        train_state = train_state.apply_gradients(grads=grads)
        target = optax.incremental_update(train_state.params, runner.target_params, config.tau)
        return train_state, target, {"losses/td_loss": loss, "losses/q_values": q_mean}

    def skip(train_state, key):
        zero = jnp.float32(0.0)
        return train_state, runner.target_params, {"losses/td_loss": zero, "losses/q_values": zero}

    key, k_learn = jax.random.split(key)
    stored = (env_steps + config.steps_per_update) >= config.learning_starts
    # this config's optimiser (a sweep's configs are traced); the runner keeps its own
    train_state, target_params, metrics = jax.lax.cond(
        stored, learn, skip, runner.train_state.replace(tx=optimiser(config)), k_learn
    )
    train_state = train_state.replace(tx=runner.train_state.tx)
    metrics["charts/epsilon"] = epsilon(config, env_steps)
    metrics.update(jax.tree.map(jnp.sum, stats))
    runner = DQNRunner(
        train_state=train_state,
        target_params=target_params,
        buffer=buffer,
        envs=envs,
        key=key,
        update=runner.update + 1,
    )
    return runner, metrics


def policy_params(runner: DQNRunner) -> Any:
    """The scorer parameters to deploy (the online network)."""
    return runner.train_state.params


def make_train(
    config: DQNConfig, env: Any = None
) -> Callable[[jax.Array, rollout.TrainingTasks], tuple[DQNRunner, dict[str, jnp.ndarray]]]:
    """Jitted `train(key, tasks) -> (runner, metrics per update)` for the whole run."""
    return rollout.make_train(init, update, config, env)
