"""Experiment configs: frozen dataclasses and the named presets `tiny`, `demo` and `paper`.

A `TrainSettings` is everything a `metaal train` run needs: the agent config
(`agents.ppo.PPOConfig` or `agents.dqn.DQNConfig`, which holds the env
config), the training data and the run's driver settings. Presets give one
per agent; the command line overrides single fields.

- `tiny`: seconds on a laptop; for tests (two small synthetic tasks, budget 6);
- `demo`: minutes; the 29 `train` tasks, budget 50, 32 candidates;
- `paper`: the reference setting: `train+synthetic`, pool 1000, validation
  500, budget 100, 32 candidates, logistic regression.

    settings = preset("demo", agent="dqn")
    env_config("paper")  # the EnvConfig other pipelines share
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from agents import AGENTS, get_agent
from agents.dqn import DQNConfig
from agents.ppo import PPOConfig
from envs.core import EnvConfig


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which tasks a run trains on and how they are split."""

    suite: str = "train"
    """Suite name (`train`, `synthetic[:N]`, `train+synthetic`, a data set name, ...)."""
    splits_per_task: int = 4
    """Splits precomputed per task (seeds 0..n-1); each reset picks one at random."""
    max_pool: int = 1000
    """Pool size cap per split."""
    max_val: int = 500
    """Validation size cap per split."""
    max_features: int | None = 32
    """Wider tasks are projected on their pool's top principal components (the suite is padded
    to its widest task, so one 287-feature task would slow every env step)."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """How the driver runs: seed, chunking (checkpoints) and periodic evaluation."""

    seed: int = 0
    """Root seed of the run."""
    chunk_updates: int = 20
    """Updates per jitted chunk; a checkpoint after each (a killed run loses at most this)."""
    eval_every: int = 5
    """Chunks between evaluations of the current policy (0: only at the end)."""
    eval_tasks: int = 3
    """Training tasks the evaluation runs on (the suite's first ones, fresh splits); 0: none."""
    eval_seeds: int = 8
    """Episodes per evaluation task and strategy."""


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """A whole training run: agent name and config, data, driver."""

    agent: str
    config: Any
    data: DataConfig = DataConfig()
    run: RunConfig = RunConfig()
    shortlist: int = 0
    """Deployment only: the exported policy re-ranks margin's `shortlist` most uncertain
    candidates (`metaal.policy_net.shortlisted_scorer`; 0: all). Training is unchanged."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (what checkpoints and W&B record)."""
        return {
            "agent": self.agent,
            "config": dataclasses.asdict(self.config),
            "data": dataclasses.asdict(self.data),
            "run": dataclasses.asdict(self.run),
            "shortlist": self.shortlist,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainSettings:
        """Inverse of `to_dict`."""
        agent = get_agent(d["agent"])
        return cls(
            agent=d["agent"],
            config=_from_dict(agent.config, d["config"]),
            data=_from_dict(DataConfig, d["data"]),
            run=_from_dict(RunConfig, d["run"]),
            shortlist=int(d.get("shortlist", 0)),  # runs saved before shortlists had none
        )


def _from_dict(cls: type, d: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {sorted(unknown)}")
    values = {}
    for name, value in d.items():
        if name == "env":
            value = _from_dict(EnvConfig, value)
        elif typing.get_origin(hints[name]) is tuple:
            value = tuple(value)
        values[name] = value
    return cls(**values)


_ENVS = {
    "tiny": EnvConfig(
        budget=6, n_initial=2, n_candidates=4, probe_size=4, fit_steps=2, init_fit_steps=5
    ),
    "demo": EnvConfig(budget=50, n_candidates=32),
    "paper": EnvConfig(budget=100, n_candidates=32),
}

_DATA = {
    "tiny": DataConfig(suite="synthetic:2", splits_per_task=2, max_pool=40, max_val=20),
    "demo": DataConfig(suite="train", splits_per_task=4, max_pool=500, max_val=250),
    "paper": DataConfig(suite="train+synthetic", splits_per_task=8),
}

_RUNS = {
    "tiny": RunConfig(chunk_updates=2, eval_every=1, eval_tasks=1, eval_seeds=2),
    "demo": RunConfig(chunk_updates=20, eval_every=5),
    "paper": RunConfig(chunk_updates=50, eval_every=10, eval_seeds=16),
}

#: A DQN update is one vector step (num_envs env steps), a PPO update num_envs * num_steps: these
#: chunk sizes give DQN chunks (checkpoints, and evaluations every eval_every chunks) of as many
#: env steps as PPO's.
_DQN_CHUNK_UPDATES = {"demo": 20 * 16, "paper": 50 * 32}

_AGENT_CONFIGS = {
    ("tiny", "ppo"): dict(
        num_envs=4,
        num_steps=4,
        total_steps=64,
        num_minibatches=2,
        update_epochs=2,
        hidden=(8,),
        state_hidden=8,
    ),
    ("tiny", "dqn"): dict(
        num_envs=4,
        total_steps=64,
        buffer_size=64,
        batch_size=8,
        learning_starts=8,
        hidden=(8,),
        state_hidden=8,
    ),
    ("demo", "ppo"): dict(num_envs=64, num_steps=16, total_steps=500_000),
    ("demo", "dqn"): dict(num_envs=64, total_steps=500_000, buffer_size=8192),
    ("paper", "ppo"): dict(num_envs=128, num_steps=32, total_steps=20_000_000),
    ("paper", "dqn"): dict(num_envs=128, total_steps=20_000_000, buffer_size=32768),
}

PRESETS = ("tiny", "demo", "paper")


def env_config(name: str = "demo", **overrides: Any) -> EnvConfig:
    """The `EnvConfig` of preset `name`, with fields replaced by `overrides`."""
    _check_preset(name)
    return dataclasses.replace(_ENVS[name], **overrides)


def preset(name: str = "demo", agent: str = "ppo") -> TrainSettings:
    """The `TrainSettings` of preset `name` for `agent` (`ppo` or `dqn`)."""
    _check_preset(name)
    spec = get_agent(agent)
    config = spec.config(env=_ENVS[name], **_AGENT_CONFIGS[name, agent])
    run = _RUNS[name]
    if agent == "dqn" and name in _DQN_CHUNK_UPDATES:
        run = dataclasses.replace(run, chunk_updates=_DQN_CHUNK_UPDATES[name])
    return TrainSettings(agent=agent, config=config, data=_DATA[name], run=run)


#: Seeds voting in the shipped default policy (`metaal train --members`; 5 rather than 3 by
#: mean rank and wins against margin on the `train` suite, see README).
DEFAULT_POLICY_MEMBERS = 5
#: Margin shortlist of the shipped default policy: it re-ranks margin's 16 most uncertain
#: candidates (chosen among 8, 16, 32, 64 and none by mean AULC on the `train` suite).
DEFAULT_POLICY_SHORTLIST = 16
#: The command that makes the shipped default policy (metaal/policies/default).
DEFAULT_POLICY_COMMAND = (
    "metaal train --agent ppo --preset demo --suite train --total-steps 2000000 "
    f"--reward-norm task --shortlist {DEFAULT_POLICY_SHORTLIST} "
    f"--members {DEFAULT_POLICY_MEMBERS} --seed 0 "
    "--out runs/default"
)


def default_policy_settings(seed: int = 0) -> TrainSettings:
    """One member of the shipped default policy's recipe (its seed-`seed` run).

    PPO on `train`, 2M env steps, rewards normalised per task, exported
    behind margin's shortlist of 16; `DEFAULT_POLICY_COMMAND` trains seeds
    0 to 4 and exports their vote.
    """
    settings = preset("demo", "ppo")
    config = settings.config.replace(total_steps=2_000_000, reward_norm="task")
    run = dataclasses.replace(settings.run, seed=seed)
    data = dataclasses.replace(settings.data, suite="train")
    return dataclasses.replace(
        settings, config=config, data=data, run=run, shortlist=DEFAULT_POLICY_SHORTLIST
    )


def _check_preset(name: str) -> None:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")


__all__ = [
    "AGENTS",
    "PRESETS",
    "DataConfig",
    "DQNConfig",
    "DEFAULT_POLICY_COMMAND",
    "DEFAULT_POLICY_MEMBERS",
    "PPOConfig",
    "RunConfig",
    "TrainSettings",
    "default_policy_settings",
    "env_config",
    "preset",
]
