"""PPO on a look-ahead policy, started from a saved one (issue 16's non-myopic credit).

A look-ahead policy's action set is margin's S most uncertain candidates, each with the
look-ahead columns: PPO must offer exactly those rows and execute one of them. While
`value_warmup` lasts only the value head learns, so the policy's layers keep the file's
weights exactly; after it, they move. Settings that cannot work are refused by name
before any compute, in the Python API as on the command line.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import datasets

from metaal.agents import ppo, rollout
from metaal.data import Task, make_split, pad_split
from metaal.envs.core import ActiveLearningEnv, EnvConfig, make_params
from metaal.experiments.configs import TrainSettings
from metaal.features import n_state_features
from metaal.policy_net import candidate_scorer, network, policy_config
from metaal.strategies.learned import LearnedStrategy
from metaal.strategies.lookahead import LOOKAHEAD_COLUMNS

ENV = EnvConfig(budget=6, n_initial=4, n_candidates=None)
SIZE = 4
HIDDEN, STATE_HIDDEN = (8,), 8


@pytest.fixture(scope="module")
def setup():
    bunch = datasets.load_wine()
    task = Task("wine", bunch.data, bunch.target.astype(np.int32), ("a", "b", "c"), "sklearn")
    env = ActiveLearningEnv(ENV)
    params = make_params(pad_split(make_split(task, 0, max_pool=80, max_val=40)))
    tasks = rollout.training_tasks(env, jax.tree.map(lambda x: x[None], params))
    return env, tasks


def _config(**fields) -> ppo.PPOConfig:
    base = dict(
        env=ENV,
        num_envs=2,
        num_steps=2,
        total_steps=8,
        num_minibatches=2,
        update_epochs=1,
        hidden=HIDDEN,
        state_hidden=STATE_HIDDEN,
        lookahead=SIZE,
    )
    return ppo.PPOConfig(**{**base, **fields})


def _saved_policy(path, env, lookahead=SIZE):
    config = policy_config(
        HIDDEN, STATE_HIDDEN, ENV.probe_size, features=env.features, lookahead=lookahead
    )
    net = network(HIDDEN, STATE_HIDDEN)
    params = net.init(
        jax.random.key(7),
        jnp.zeros((n_state_features(ENV.probe_size),)),
        jnp.zeros((SIZE, len(env.features) + len(LOOKAHEAD_COLUMNS))),
        jnp.ones(SIZE, bool),
    )
    return LearnedStrategy(candidate_scorer(config), params, config).save(path)


def test_ppo_offers_margins_shortlist_and_executes_one_of_it(setup):
    env, tasks = setup
    config = _config()
    envs = jax.jit(lambda k: rollout.reset(env, k, tasks, config.num_envs))(jax.random.key(1))
    seen, rows = jax.jit(lambda k, e: ppo.observe(config, env, k, e))(jax.random.key(2), envs)
    n_columns = len(env.features) + len(LOOKAHEAD_COLUMNS)
    assert seen.candidates.shape == (2, SIZE, n_columns)
    assert np.asarray(seen.action_mask).all()
    margin = np.asarray(envs.obs.column("margin"))
    mask = np.asarray(envs.obs.action_mask)
    for slot in range(2):
        order = np.argsort(np.where(mask[slot], margin[slot], np.inf), kind="stable")
        assert set(np.asarray(rows[slot]).tolist()) == set(order[:SIZE].tolist())
        # the look-ahead columns are filled (the statistics lie in [0, 2])
        stats = np.asarray(seen.candidates[slot, :, len(env.features) : len(env.features) + 3])
        assert np.all((stats >= 0) & (stats <= 2)) and np.any(stats > 0)
    for k in range(SIZE):
        chosen = np.asarray(ppo.env_action(rows, jnp.full(2, k)))
        np.testing.assert_array_equal(chosen, np.asarray(rows)[:, k])


def test_value_warmup_moves_the_value_head_alone(setup, tmp_path):
    env, tasks = setup
    path = _saved_policy(tmp_path / "start", env)
    start = LearnedStrategy.load(path).params
    config = _config(init_policy=str(path), value_warmup=1, lr=1e-2, anneal_lr=False)
    runner = jax.jit(lambda k: ppo.init(config, k, tasks, env))(jax.random.key(3))
    jax.tree.map(np.testing.assert_array_equal, ppo.policy_params(runner), start)
    step = jax.jit(lambda r: ppo.update(config, r, tasks, env))
    warm, _ = step(runner)
    moved: dict[str, bool] = {}
    for (where, before), now in zip(
        jax.tree_util.tree_leaves_with_path(start),
        jax.tree.leaves(ppo.policy_params(warm)),
        strict=True,
    ):
        layer = where[1].key  # params/<layer>/<kernel or bias>
        moved[layer] = moved.get(layer, False) or bool(np.any(np.asarray(before) != now))
    assert moved["value"] and moved["value_hidden"]
    assert not any(v for k, v in moved.items() if k not in ppo.VALUE_LAYERS)
    after, _ = step(warm)  # update 1: the warm-up is over, the policy's layers learn
    assert np.any(
        np.asarray(ppo.policy_params(after)["params"]["score"]["kernel"])
        != np.asarray(start["params"]["score"]["kernel"])
    )


def test_lookahead_settings_that_cannot_work_are_refused_by_name(setup, tmp_path):
    env, _ = setup
    other = _saved_policy(tmp_path / "other", env, lookahead=8)
    with pytest.raises(ValueError, match="its look-ahead shortlist is 8, this run's 4"):
        _config(init_policy=str(other)).check()
    plain = LearnedStrategy.load(_saved_policy(tmp_path / "fits", env))
    _config(init_policy=str(tmp_path / "fits")).check()  # it fits this one
    assert plain.config["lookahead"] == SIZE
    with pytest.raises(ValueError, match="set n_candidates none"):
        _config(env=EnvConfig(budget=6, n_candidates=32)).check()
    with pytest.raises(ValueError, match="without proposers"):
        _config(proposers=("margin", "random")).check()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        _config(temperature=0.0).check()
    with pytest.raises(ValueError, match="value_warmup must be"):
        _config(value_warmup=-1).check()
    with pytest.raises(ValueError, match="drop --shortlist"):
        TrainSettings(agent="ppo", config=_config(), shortlist=16)
    settings = TrainSettings(agent="ppo", config=_config())
    assert dataclasses.replace(settings, shortlist=0).shortlist == 0
