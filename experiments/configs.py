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

from metaal.agents import AGENTS, get_agent
from metaal.agents.dqn import DQNConfig
from metaal.agents.imitation import ImitationConfig
from metaal.agents.ppo import PPOConfig
from metaal.envs.core import EnvConfig
from metaal.strategies.lookahead import EXTRA_STATS, STATS
from metaal.strategies.selector import (
    DEFAULT_PROPOSERS,
    LOOKAHEAD_PROPOSERS,
    PROPOSERS,
    STEP_COLUMNS,
)


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

    def __post_init__(self) -> None:
        if getattr(self.config, "lookahead", 0) and self.shortlist:
            raise ValueError(
                f"shortlist {self.shortlist}: a look-ahead policy (lookahead "
                f"{self.config.lookahead}) already scores only margin's shortlist; drop --shortlist"
            )
        own = getattr(self.config, "shortlist", None)  # imitation trains behind its shortlist
        if own is not None and own != self.shortlist:
            raise ValueError(
                f"the {self.agent} agent trains and deploys with one shortlist; its config says "
                f"{own}, the settings {self.shortlist}: set --shortlist once"
            )

    def sections(self) -> dict[str, Any]:
        """The flat-flag sections of the run (agent config, env, data, run)."""
        return {"agent": self.config, "env": self.config.env, "data": self.data, "run": self.run}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (what checkpoints record)."""
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
    ("tiny", "imitation"): dict(
        n_rounds=2,
        n_envs=2,
        n_labels=4,
        n_policy_labels=4,
        shortlist=4,
        updates_per_round=5,
        batch_size=8,
        hidden=(8,),
        state_hidden=8,
    ),
    ("demo", "ppo"): dict(num_envs=64, num_steps=16, total_steps=500_000),
    ("demo", "dqn"): dict(num_envs=64, total_steps=500_000, buffer_size=8192),
    ("paper", "ppo"): dict(num_envs=128, num_steps=32, total_steps=20_000_000),
    ("paper", "dqn"): dict(num_envs=128, total_steps=20_000_000, buffer_size=32768),
}

PRESETS = ("tiny", "demo", "paper")

# --- imitation recipes ----------------------------------------------------------------
# The DAgger recipes of the imitation ablation (docs/RESULTS.md), each a change of the one
# before. They train on `train` with one split per data set, whole-pool candidates, budget
# 100, and data sets wider than 40 features projected on their leading components.

_BASE = dict(
    expert_set="val",
    first_policy="oracle",
    beta_decay=0.5,
    targets="zscore",
    shortlist=0,
    n_labels=32,
    n_policy_labels=8,
    n_rounds=4,
    n_envs=16,
    updates_per_round=300,
)
_POOL = {**_BASE, "expert_set": "pool+val"}
_M0 = {**_POOL, "first_policy": "margin", "beta_decay": 0.0}
_SL16 = {**_M0, "targets": "episode", "shortlist": 16, "n_labels": 16, "n_policy_labels": 16}
_BIG = {"n_rounds": 6, "n_envs": 32, "updates_per_round": 600}
_HUGE = {"n_rounds": 8, "n_envs": 64, "updates_per_round": 800}
# the strategy selector (issue 16): sl16_big's data, choosing among heuristics' picks
_SEL = {**_SL16, **_BIG, "shortlist": 0}
# the look-ahead policies (issue 16): margin's 16 most uncertain candidates with the columns
_LA16 = {**_SL16, "shortlist": 0, "lookahead": 16}


#: The fourth session's selector settings: a prior toward margin and the noise step columns.
_NOISY_A05 = {
    "anchor_bonus": 0.5,
    "selector_state": (*STEP_COLUMNS, "fit_error", "label_disagreement"),
}

#: The fifth session's: the same with a three-step expert.
_NOISY_A05_H3 = {**_NOISY_A05, "expert_horizon": 3}

#: The sixth session's: the fourth's with targets that never see the candidate's own label.
_NOISY_A05_EXP = {**_NOISY_A05, "expert_label": "expected"}
#: ... and its second lever: the same average, weighted by a teacher fitted on the whole pool.
_NOISY_A05_TEACHER = {**_NOISY_A05, "expert_label": "teacher"}


def _selector(proposers: tuple[str, ...]) -> dict[str, Any]:
    n = len(proposers)
    return {**_SEL, "proposers": proposers, "n_labels": n, "n_policy_labels": n}


#: name -> (what it changes, ImitationConfig fields, training suite)
IMITATION_RECIPES: dict[str, tuple[str, dict[str, Any], str]] = {
    "base": ("expert: validation look-ahead; free MLP scorer, listwise z-scores", _BASE, "train"),
    "pool": ("expert measures accuracy on unlabelled pool + val (privileged)", _POOL, "train"),
    "pool_linear": ("pool, linear ranker", {**_POOL, "hidden": ()}, "train"),
    "pool_regression": ("pool, regression loss", {**_POOL, "loss": "regression"}, "train"),
    "pool_pairwise": ("pool, pairwise RankNet loss", {**_POOL, "loss": "pairwise"}, "train"),
    "pool_T2": ("pool, listwise temperature 2", {**_POOL, "temperature": 2.0}, "train"),
    "m0": ("pool; margin acts in round 0, then the learner alone (beta 0)", _M0, "train"),
    "m0_episode": (
        "m0, targets centred per state and scaled per episode",
        {**_M0, "targets": "episode"},
        "train",
    ),
    "m0_episode_linear": (
        "m0_episode, linear ranker",
        {**_M0, "targets": "episode", "hidden": ()},
        "train",
    ),
    "m0_episode_synthetic": (
        "m0_episode on train + 32 synthetic tasks",
        {**_M0, "targets": "episode"},
        "train+synthetic:32",
    ),
    "sl16": ("m0_episode, re-ranking margin's 16 most uncertain candidates", _SL16, "train"),
    "sl8": (
        "sl16 with a shortlist of 8",
        {**_SL16, "shortlist": 8, "n_labels": 8, "n_policy_labels": 8},
        "train",
    ),
    "sl16_big": ("sl16 with 3x the data: 6 rounds x 32 envs", {**_SL16, **_BIG}, "train"),
    "sl16_huge": ("sl16 with 8 rounds x 64 envs", {**_SL16, **_HUGE}, "train"),
    "sl32_huge": (
        "sl16_huge with a shortlist of 32",
        {**_SL16, **_HUGE, "shortlist": 32, "n_labels": 32, "n_policy_labels": 32},
        "train",
    ),
    "sel_big": (
        "sl16_big's data; the policy chooses among the picks of margin, entropy, BADGE, "
        "core-set, density and random (a strategy selector)",
        _selector(DEFAULT_PROPOSERS),
        "train",
    ),
    "sel_all_big": (
        "sel_big with every stateless heuristic of its time as a proposer (not eer, emoc)",
        _selector(tuple(p for p in PROPOSERS if p not in LOOKAHEAD_PROPOSERS)),
        "train",
    ),
    "sel_big_a05": (
        "sel_big with a prior toward margin: its pick's target gets +0.5 (anchor_bonus)",
        {**_selector(DEFAULT_PROPOSERS), "anchor_bonus": 0.5},
        "train",
    ),
    "sel_big_a1": (
        "sel_big with a stronger prior toward margin: anchor_bonus 1.0",
        {**_selector(DEFAULT_PROPOSERS), "anchor_bonus": 1.0},
        "train",
    ),
    "sel_mbr_a05": (
        "a selector among three families only, margin, BADGE and random, with anchor_bonus 0.5",
        {**_selector(("margin", "badge", "random")), "anchor_bonus": 0.5},
        "train",
    ),
    "sel_mbr_a05_fit": (
        "sel_mbr_a05 with two step columns that say how noisy the labels look: the learner's "
        "error on its own labelled rows (fit_error) and the share of labelled rows whose "
        "nearest labelled neighbour disagrees (label_disagreement)",
        {**_selector(("margin", "badge", "random")), **_NOISY_A05},
        "train",
    ),
    "sel_mr_a05_fit": (
        "sel_mbr_a05_fit without BADGE: the selector leaves margin only for a random pick",
        {**_selector(("margin", "random")), **_NOISY_A05},
        "train",
    ),
    "sel_mbr_a05_fit_h3": (
        "sel_mbr_a05_fit with a three-step expert: each pick is scored after it and margin's "
        "next two picks (expert_horizon 3), so leaving margin is credited for what it does "
        "to margin's later picks",
        {**_selector(("margin", "badge", "random")), **_NOISY_A05_H3},
        "train",
    ),
    "sel_mr_a05_fit_h3": (
        "sel_mr_a05_fit with the three-step expert of sel_mbr_a05_fit_h3",
        {**_selector(("margin", "random")), **_NOISY_A05_H3},
        "train",
    ),
    "sel_mbr_a05_fit_exp": (
        "sel_mbr_a05_fit with an expected-label expert: each pick's gain is averaged over the "
        "learner's two likeliest labels for it (expert_label expected), so the target says "
        "what a pick is worth before its label is known, not how lucky its label was",
        {**_selector(("margin", "badge", "random")), **_NOISY_A05_EXP},
        "train",
    ),
    "sel_mr_a05_fit_exp": (
        "sel_mr_a05_fit with the expected-label expert of sel_mbr_a05_fit_exp",
        {**_selector(("margin", "random")), **_NOISY_A05_EXP},
        "train",
    ),
    "sel_mbr_a05_fit_teacher": (
        "sel_mbr_a05_fit_exp with the two labels weighted by a teacher, the learner fitted on "
        "every pool label (expert_label teacher): the target says how the pick's "
        "neighbourhood is labelled, not how lucky its own label was",
        {**_selector(("margin", "badge", "random")), **_NOISY_A05_TEACHER},
        "train",
    ),
    "sel_mr_a05_fit_teacher": (
        "sel_mr_a05_fit with the teacher-weighted expert of sel_mbr_a05_fit_teacher",
        {**_selector(("margin", "random")), **_NOISY_A05_TEACHER},
        "train",
    ),
    "sel_mr_a05_fit_teacher_huge": (
        "sel_mr_a05_fit_teacher with 2.7x the DAgger data (8 rounds x 64 envs, 800 updates "
        "a round), so that draws of the same recipe agree more",
        {**_selector(("margin", "random")), **_NOISY_A05_TEACHER, **_HUGE},
        "train",
    ),
    "la16_big": (
        "sl16_big with the look-ahead columns: each of margin's 16 most uncertain candidates "
        "carries the expected change of the pool's predictions and its expected error and "
        "entropy after labelling it (refits with its two likeliest labels, no label read)",
        {**_LA16, **_BIG},
        "train",
    ),
    "la16_big_linear": (
        "la16_big with a linear ranker (hidden ())",
        {**_LA16, **_BIG, "hidden": ()},
        "train",
    ),
    "la16_wide": (
        "la16_big on a wider training mix: train + the 32 generated tasks that synthetic:32 "
        "(validation B) leaves out",
        {**_LA16, **_BIG},
        "train+synthetic:32-64",
    ),
    "la16_wide_teacher": (
        "la16_wide with the teacher-weighted expert (expert_label teacher): each candidate's "
        "target is its gain averaged over its two likeliest labels, weighted by the learner "
        "fitted on every pool label, so the target is what labelling the candidate is worth, "
        "not how lucky its own label was (the look-ahead columns' question, answered with "
        "the hidden labels)",
        {**_LA16, **_BIG, "expert_label": "teacher"},
        "train+synthetic:32-64",
    ),
    "la16_wide_huge": (
        "la16_wide with 2.7x the DAgger data (8 rounds x 64 envs, 800 updates a round): "
        "the variance cut a vote of three gives, in one scorer",
        {**_LA16, **_HUGE},
        "train+synthetic:32-64",
    ),
    "la16_wide_huge_teacher": (
        "la16_wide_huge with la16_wide_teacher's expert: the two levers that each lifted every "
        "B draw above la16_wide's, together; the label-free target should make draws agree",
        {**_LA16, **_HUGE, "expert_label": "teacher"},
        "train+synthetic:32-64",
    ),
    "la16_wide_huge_h3": (
        "la16_wide_huge with a three-step expert (expert_horizon 3): each candidate is scored "
        "after it and margin's next two picks, since the one-step oracle gets worse with "
        "more candidates to choose from (greedy one-step targets mislead)",
        {**_LA16, **_HUGE, "expert_horizon": 3},
        "train+synthetic:32-64",
    ),
    "la16_wide_huge_x": (
        "la16_wide_huge with four more look-ahead statistics per candidate (EXTRA_STATS): "
        "how far its expected error and change differ between its two likeliest labels, the "
        "share of pool decisions its label flips, and how much its label would contradict the "
        "labelled rows (their error after the refit), each with its z-score: what eer's mean "
        "hides",
        {**_LA16, **_HUGE, "lookahead_stats": (*STATS, *EXTRA_STATS)},
        "train+synthetic:32-64",
    ),
    "sel_big_wide": (
        "sel_big on a wider training mix: train + 32 synthetic tasks (honeypots, imbalance, noise)",
        _selector(DEFAULT_PROPOSERS),
        "train+synthetic:32",
    ),
}
#: The imitation recipe of the `demo` and `paper` presets.
_IMITATION_PRESET_RECIPES = {"demo": "sl16_big", "paper": "sl16_huge"}
_IMITATION_ENV = EnvConfig(budget=100, n_candidates=None)
_IMITATION_RUN = RunConfig(chunk_updates=1, eval_every=2)


def imitation_recipe(name: str) -> TrainSettings:
    """The `TrainSettings` of imitation recipe `name` (`IMITATION_RECIPES`)."""
    if name not in IMITATION_RECIPES:
        raise ValueError(
            f"unknown imitation recipe {name!r}; known: {', '.join(IMITATION_RECIPES)}"
        )
    _, fields, suite = IMITATION_RECIPES[name]
    config = ImitationConfig(env=_IMITATION_ENV, **fields)
    data = DataConfig(suite=suite, splits_per_task=1, max_features=40)
    return TrainSettings(
        agent="imitation", config=config, data=data, run=_IMITATION_RUN, shortlist=config.shortlist
    )


def env_config(name: str = "demo", **overrides: Any) -> EnvConfig:
    """The `EnvConfig` of preset `name`, with fields replaced by `overrides`."""
    _check_preset(name)
    return dataclasses.replace(_ENVS[name], **overrides)


def preset(name: str = "demo", agent: str = "ppo") -> TrainSettings:
    """The `TrainSettings` of preset `name` for `agent` (an imitation recipe for `imitation`)."""
    spec = get_agent(agent)
    if agent == "imitation" and name in IMITATION_RECIPES:
        return imitation_recipe(name)
    _check_preset(name, agent)
    if agent == "imitation" and name in _IMITATION_PRESET_RECIPES:
        return imitation_recipe(_IMITATION_PRESET_RECIPES[name])
    config = spec.config(env=_ENVS[name], **_AGENT_CONFIGS[name, agent])
    run = _RUNS[name]
    if agent == "dqn" and name in _DQN_CHUNK_UPDATES:
        run = dataclasses.replace(run, chunk_updates=_DQN_CHUNK_UPDATES[name])
    if agent == "imitation":  # a DAgger round is long: a checkpoint after each
        run = dataclasses.replace(run, chunk_updates=1)
    return TrainSettings(
        agent=agent,
        config=config,
        data=_DATA[name],
        run=run,
        shortlist=getattr(config, "shortlist", 0),
    )


def preset_names(agent: str) -> tuple[str, ...]:
    """The presets `agent` accepts."""
    return PRESETS + (tuple(IMITATION_RECIPES) if agent == "imitation" else ())


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


def _check_preset(name: str, agent: str = "ppo") -> None:
    if name not in preset_names(agent):
        raise ValueError(
            f"unknown preset {name!r} for {agent}; known presets: {', '.join(preset_names(agent))}"
        )


__all__ = [
    "AGENTS",
    "PRESETS",
    "DataConfig",
    "DQNConfig",
    "DEFAULT_POLICY_COMMAND",
    "IMITATION_RECIPES",
    "ImitationConfig",
    "DEFAULT_POLICY_MEMBERS",
    "PPOConfig",
    "RunConfig",
    "TrainSettings",
    "default_policy_settings",
    "env_config",
    "imitation_recipe",
    "preset",
    "preset_names",
]
