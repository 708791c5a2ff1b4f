"""Agents that meta-train the candidate-scoring policy, one file per algorithm.

Every agent module offers the same functions of its typed config
(`PPOConfig`, `DQNConfig`, `ImitationConfig`):

- `init(config, key, tasks, env=None) -> runner` (network, optimiser, env slots, RNG);
- `update(config, runner, tasks, env=None) -> (runner, metrics)`: one update;
- `policy_params(runner)`: the scorer parameters to deploy;
- `make_train(config, env=None) -> train(key, tasks)`: the whole run under one `jax.jit`.

An update is one PPO rollout and its epochs, one DQN vector step, or one
DAgger round of imitation. `AGENTS` maps each name to them, and `make_chunk`
jits K updates at a time, which is how `experiments.train` drives every run
between checkpoints (the same resume, W&B logging and policy export for all).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from metaal.agents import dqn, imitation, ppo


class Agent(NamedTuple):
    """An agent's functions (see the module docstring)."""

    name: str
    config: type
    init: Callable[..., Any]
    update: Callable[..., Any]
    policy_params: Callable[[Any], Any]


AGENTS: dict[str, Agent] = {
    "dqn": Agent("dqn", dqn.DQNConfig, dqn.init, dqn.update, dqn.policy_params),
    "ppo": Agent("ppo", ppo.PPOConfig, ppo.init, ppo.update, ppo.policy_params),
    "imitation": Agent(
        "imitation",
        imitation.ImitationConfig,
        imitation.init,
        imitation.update,
        imitation.policy_params,
    ),
}


def get_agent(name: str) -> Agent:
    """The agent called `name`; a ValueError lists the known agents otherwise."""
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; known agents: {', '.join(sorted(AGENTS))}")
    return AGENTS[name]


def make_chunk(agent: Agent, config: Any, n_updates: int, env: Any = None) -> Callable:
    """Jitted `chunk(runner, tasks) -> (runner, metrics (n_updates, ...))`: K updates in a scan."""

    def chunk(runner, tasks):
        return jax.lax.scan(
            lambda r, _: agent.update(config, r, tasks, env), runner, None, n_updates
        )

    return jax.jit(chunk)
