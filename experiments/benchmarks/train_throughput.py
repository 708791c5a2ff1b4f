"""Env steps per second of PPO and DQN training, updates included, at the reference env config.

Reference config (as `env_throughput`): make_classification data, pool
1000, validation 500, 20 features, 2 classes, 32 candidates per step,
budget 100, logistic regression; `--envs` env slots (default 64), each
episode on one of `--tasks` splits drawn at every reset, as in training.
Test rows are dropped, as `metaal train` does. Agents run with their
default hyper-parameters (PPO: 16 steps per slot per update, 4 epochs of 4
minibatches; DQN: one gradient step of 128 transitions per vector step).

Each agent's chunk of updates is compiled ahead of time, run once to warm
up, then timed `--repeats` times; the best time counts. Compile time is
printed but not counted.

    python -m metaal.experiments.benchmarks.train_throughput [--envs 64] [--repeats 3]

The last line is `ppo_steps_per_s=<float> dqn_steps_per_s=<float>`.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from metaal.agents import get_agent, make_chunk, rollout
from metaal.agents.dqn import DQNConfig
from metaal.agents.ppo import PPOConfig
from metaal.data.batch import stack_splits
from metaal.envs.core import ActiveLearningEnv, EnvConfig, make_params
from metaal.experiments.benchmarks.env_throughput import reference_split

REFERENCE_ENV = EnvConfig(budget=100, n_initial=5, n_candidates=32, learner="logreg")
#: Env steps per timed call, per agent (whole updates).
STEPS_PER_CALL = 8192


def reference_tasks(n: int, env: ActiveLearningEnv) -> rollout.TrainingTasks:
    """`n` reference splits (data seeds 0..n-1) as training tasks, test rows dropped."""
    splits = [reference_split(seed) for seed in range(n)]
    splits = [dataclasses.replace(s, test_X=s.test_X[:1], test_y=s.test_y[:1]) for s in splits]
    params = jax.jit(jax.vmap(make_params))(stack_splits(splits))
    return rollout.training_tasks(env, params)


def steps_per_s(name: str, config, tasks, env, repeats: int) -> float:
    """Best env steps per second over `repeats` timed chunks of updates."""
    agent = get_agent(name)
    n_updates = max(1, STEPS_PER_CALL // config.steps_per_update)
    runner = jax.jit(lambda k, t: agent.init(config, k, t, env))(jax.random.key(0), tasks)
    started = time.perf_counter()
    chunk = make_chunk(agent, config, n_updates, env).lower(runner, tasks).compile()
    compile_s = time.perf_counter() - started
    runner, _ = jax.block_until_ready(chunk(runner, tasks))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        runner, _ = jax.block_until_ready(chunk(runner, tasks))
        times.append(time.perf_counter() - started)
    rate = n_updates * config.steps_per_update / min(times)
    print(
        f"{name}: compile {compile_s:.1f} s, {n_updates} updates per call, best "
        f"{min(times):.3f} s, median {np.median(times):.3f} s, {rate:.0f} env steps/s"
    )
    return rate


def env_only_steps_per_s(tasks, env, num_envs: int, repeats: int) -> float:
    """Env steps per second of the training env slots alone (random actions), for context."""

    def run(envs, key):
        def body(envs, k):
            k_act, k_step = jax.random.split(k)
            u = jax.random.uniform(k_act, envs.obs.action_mask.shape)
            action = jnp.argmax(jnp.where(envs.obs.action_mask, u, -1.0), axis=-1)
            envs, _ = rollout.step(env, k_step, envs, action, tasks)
            return envs, None

        return jax.lax.scan(body, envs, jax.random.split(key, 128))[0]

    envs = jax.jit(lambda k: rollout.reset(env, k, tasks, num_envs))(jax.random.key(0))
    fn = jax.jit(run).lower(envs, jax.random.key(1)).compile()
    envs = jax.block_until_ready(fn(envs, jax.random.key(1)))
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        envs = jax.block_until_ready(fn(envs, jax.random.key(2 + i)))
        times.append(time.perf_counter() - started)
    rate = 128 * num_envs / min(times)
    print(f"env slots alone: {rate:.0f} env steps/s")
    return rate


def main() -> None:
    """Run the benchmark and print its result lines."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", type=int, default=64, help="env slots")
    parser.add_argument("--tasks", type=int, default=4, help="reference splits to sample from")
    parser.add_argument("--repeats", type=int, default=3, help="timed chunks per agent")
    args = parser.parse_args()
    env = ActiveLearningEnv(REFERENCE_ENV)
    tasks = reference_tasks(args.tasks, env)
    print(f"devices: {jax.devices()}, env slots: {args.envs}, tasks: {args.tasks}")
    env_only_steps_per_s(tasks, env, args.envs, args.repeats)
    ppo_config = PPOConfig(env=REFERENCE_ENV, num_envs=args.envs)
    dqn_config = DQNConfig(env=REFERENCE_ENV, num_envs=args.envs)
    ppo = steps_per_s("ppo", ppo_config, tasks, env, args.repeats)
    dqn = steps_per_s("dqn", dqn_config, tasks, env, args.repeats)
    print(f"ppo_steps_per_s={ppo:.1f} dqn_steps_per_s={dqn:.1f}")


if __name__ == "__main__":
    main()
