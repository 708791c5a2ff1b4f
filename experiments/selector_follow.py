"""Whose pick a selector policy takes, by third of the budget, on a suite.

    python -m metaal.experiments.selector_follow runs/sel_big_s1/policy --suite heldout --seeds 3

Runs the policy in the env as `LearnedStrategy.to_strategy` does (the proposers' picks,
scored alone; whole pool, budget 100, the policy's columns) on every data set of the
suite, seeds 0..N-1, and prints for each third of the budget the share of steps whose pick
each proposer had proposed (a pick several proposers share counts for each), and how often
margin's pick was taken, alone or shared. Episodes run one by one (a jitted step each), so
this is a diagnostic for a few seeds, not an evaluation.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from metaal.data import load_task, suite_names
from metaal.envs.core import ActiveLearningEnv, EnvConfig, make_params
from metaal.experiments.evaluate import make_batch
from metaal.policy_net import NEG_INF, proposers_of, selector_state_of, trained_features
from metaal.strategies.base import select
from metaal.strategies.learned import LearnedStrategy
from metaal.strategies.selector import selector_picks


def follow_table(
    policy: LearnedStrategy, suite: str, seeds: int, budget: int = 100
) -> pd.DataFrame:
    """One row per (data set, seed, step): 1 where each proposer had proposed the pick."""
    names = proposers_of(policy.config)
    if not names:
        raise ValueError("this policy is not a selector (its config names no proposers)")
    features = trained_features(policy.config)
    step_columns = selector_state_of(policy.config)
    env = ActiveLearningEnv(EnvConfig(budget=budget, n_candidates=None, features=features))
    columns = [f"proposed_by_{n}" for n in names]

    @jax.jit
    def step(key, obs, state, params, policy_params):
        k_propose, k_select, k_env = jax.random.split(key, 3)
        ctx = env.context(state, params)
        picks, rows = selector_picks(names, k_propose, obs, ctx, step_columns)
        scores = jnp.where(picks.action_mask, policy.apply(policy_params, picks), NEG_INF)
        j = select(scores, picks.action_mask, k_select)
        who = picks.candidates[j, np.array([picks.features.index(c) for c in columns])]
        obs, state, *_ = env.step(k_env, state, rows[j], params)
        return obs, state, who

    rows = []
    for name in suite_names(suite):
        batch = make_batch([load_task(name)], list(range(seeds)))
        for s in range(seeds):
            params = make_params(jax.tree.map(lambda x, s=s: x[s], batch))
            obs, state = env.reset(jax.random.key(s), params)
            key = jax.random.key(100 + s)
            for t in range(budget):
                key, k = jax.random.split(key)
                obs, state, who = step(k, obs, state, params, policy.params)
                rows.append((name, s, t, *np.asarray(who)))
    return pd.DataFrame(rows, columns=["dataset", "seed", "step", *names])


def main(argv: Sequence[str] | None = None) -> int:
    """Print the shares of `follow_table` by third of the budget."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("policy", help="a selector's policy file or finished run folder")
    parser.add_argument("--suite", default="heldout")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    policy = LearnedStrategy.load(args.policy)
    table = follow_table(policy, args.suite, args.seeds)
    names = list(proposers_of(policy.config))
    table["third"] = pd.cut(table["step"], [-1, 32, 65, 99], labels=["0-32", "33-65", "66-99"])
    print(table.groupby("third", observed=True)[names].mean().round(3).to_string())
    if "margin" in names:
        alone = (table["margin"] == 1) & (table[names].sum(axis=1) == 1)
        print(f"margin's pick taken: {table['margin'].mean():.3f} (alone: {alone.mean():.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
