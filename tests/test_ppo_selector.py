"""PPO as a strategy selector, started from a saved policy (issue 16's non-myopic lever).

A selector's action set is its proposers' picks: where every proposer picks the same
candidate, PPO must execute that candidate. A run started from a policy file with a zero
learning rate must end with exactly the file's weights, and a positive one must move
them. A file that does not fit the run is refused by name before any compute.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import datasets

from metaal.agents import ppo, rollout
from metaal.data import Task, make_split, pad_split
from metaal.envs.core import ActiveLearningEnv, EnvConfig, make_params
from metaal.features import n_state_features
from metaal.policy_net import candidate_scorer, network, policy_config, proposers_of
from metaal.strategies.learned import LearnedStrategy

ENV = EnvConfig(budget=6, n_initial=4, n_candidates=None)
#: On a binary task margin and least confidence rank alike: the selector has one pick.
SAME_PICK = ("margin", "least_confidence")
HIDDEN, STATE_HIDDEN = (8,), 8


@pytest.fixture(scope="module")
def setup():
    bunch = datasets.load_breast_cancer()
    task = Task("cancer", bunch.data, bunch.target.astype(np.int32), ("m", "b"), "sklearn")
    env = ActiveLearningEnv(ENV)
    params = make_params(pad_split(make_split(task, 0, max_pool=120, max_val=60)))
    tasks = rollout.training_tasks(env, jax.tree.map(lambda x: x[None], params))
    return env, tasks


def _config(**fields) -> ppo.PPOConfig:
    base = dict(
        env=ENV,
        num_envs=4,
        num_steps=3,
        total_steps=12,
        num_minibatches=2,
        update_epochs=1,
        hidden=HIDDEN,
        state_hidden=STATE_HIDDEN,
        proposers=SAME_PICK,
    )
    return ppo.PPOConfig(**{**base, **fields})


def _saved_policy(path, env, proposers=SAME_PICK, hidden=HIDDEN, state=None):
    extra = {} if state is None else {"selector_state": list(state)}
    config = policy_config(
        hidden,
        STATE_HIDDEN,
        ENV.probe_size,
        features=env.features,
        proposers=list(proposers),
        **extra,
    )
    net = network(hidden, STATE_HIDDEN)
    n_columns = len(env.features) + len(proposers) + 1 + (2 if state is None else len(state))
    params = net.init(
        jax.random.key(7),
        jnp.zeros((n_state_features(ENV.probe_size),)),
        jnp.zeros((2, n_columns)),
        jnp.ones(2, bool),
    )
    return LearnedStrategy(candidate_scorer(config), params, config).save(path)


def test_where_the_proposers_agree_ppo_executes_their_pick(setup):
    env, tasks = setup
    config = _config()
    envs = jax.jit(lambda k: rollout.reset(env, k, tasks, config.num_envs))(jax.random.key(1))
    seen, rows = jax.jit(lambda k, e: ppo.observe(config, env, k, e))(jax.random.key(2), envs)
    assert seen.candidates.shape == (4, 2, len(env.features) + 5)
    assert np.all(np.asarray(seen.action_mask).sum(axis=1) == 1)  # one distinct pick
    net = network(HIDDEN, STATE_HIDDEN)
    params = net.init(jax.random.key(0), seen.state[0], seen.candidates[0], seen.action_mask[0])
    scores, _ = net.apply(params, seen.state, seen.candidates, seen.action_mask)
    for k in range(5):
        choice = jax.random.categorical(jax.random.key(10 + k), scores)
        chosen = np.asarray(ppo.env_action(rows, choice))
        margin = np.asarray(envs.obs.column("margin"))
        mask = np.asarray(envs.obs.action_mask)
        best = np.where(mask, margin, np.inf).argmin(axis=1)
        np.testing.assert_array_equal(
            np.asarray(envs.state.candidates)[range(4), chosen],
            np.asarray(envs.state.candidates)[range(4), best],
        )


@pytest.mark.slow  # out of CI's 20 minutes; run with -m slow
def test_a_run_started_from_a_policy_keeps_its_weights_at_zero_learning_rate(setup, tmp_path):
    env, tasks = setup
    path = _saved_policy(tmp_path / "start", env)
    start = LearnedStrategy.load(path)
    config = _config(init_policy=str(path))
    runner = jax.jit(lambda k: ppo.init(config, k, tasks, env))(jax.random.key(3))
    jax.tree.map(np.testing.assert_array_equal, ppo.policy_params(runner), start.params)
    step = jax.jit(lambda c, r: ppo.update(c, r, tasks, env))
    still, metrics = step(config.replace(lr=0.0), runner)
    jax.tree.map(np.testing.assert_array_equal, ppo.policy_params(still), start.params)
    assert np.isfinite(float(metrics["losses/policy_loss"]))
    moved, _ = step(config.replace(lr=1e-2), runner)
    diffs = jax.tree.leaves(
        jax.tree.map(
            lambda a, b: float(jnp.max(jnp.abs(a - b))), ppo.policy_params(moved), start.params
        )
    )
    assert max(diffs) > 0
    assert proposers_of({"proposers": list(config.proposers)}) == SAME_PICK


def test_a_policy_that_does_not_fit_the_run_is_refused_by_name(setup, tmp_path):
    env, _ = setup
    wide = _saved_policy(tmp_path / "wide", env, hidden=(16,))
    with pytest.raises(ValueError, match=r"init_policy .*wide.* its network is"):
        _config(init_policy=str(wide)).check()
    other = _saved_policy(tmp_path / "other", env, proposers=("margin", "random"))
    with pytest.raises(ValueError, match="its proposers are"):
        _config(init_policy=str(other)).check()
    noisy = _saved_policy(tmp_path / "noisy", env, state=("fit_error",))
    with pytest.raises(ValueError, match=r"its selector step columns are \['fit_error'\]"):
        _config(init_policy=str(noisy)).check()
    _config(init_policy=str(noisy), selector_state=("fit_error",)).check()  # it fits this one
    with pytest.raises(ValueError, match="cannot be read"):
        _config(init_policy=str(tmp_path / "missing")).check()
    with pytest.raises(ValueError, match="set n_candidates none"):
        _config(env=EnvConfig(budget=6, n_candidates=32)).check()
    with pytest.raises(ValueError, match="stateless deployable"):
        _config(proposers=("margin", "typiclust")).check()
