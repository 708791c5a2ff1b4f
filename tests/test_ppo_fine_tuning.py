"""PPO as a strategy selector or a look-ahead policy, started from a saved policy.

(Issue 16's non-myopic lever: RL fine-tuning of an imitation start.) A selector's action
set is its proposers' picks: where every proposer picks the same candidate, PPO must
execute that candidate. A look-ahead policy's is margin's S most uncertain candidates with
the look-ahead columns. A run started from a policy file with a zero learning rate must end
with exactly the file's weights, and a positive one must move them; while `value_warmup`
lasts only the value head moves. A file or setting that does not fit the run is refused by
name before any compute, in the Python API as on the command line.
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
from metaal.experiments.configs import TrainSettings
from metaal.features import n_state_features
from metaal.policy_net import (
    VALUE_LAYERS,
    candidate_scorer,
    network,
    policy_config,
    proposers_of,
)
from metaal.strategies.learned import LearnedStrategy
from metaal.strategies.lookahead import LOOKAHEAD_COLUMNS, STATS, lookahead_columns

ENV = EnvConfig(budget=6, n_initial=4, n_candidates=None)
#: On a binary task margin and least confidence rank alike: the selector has one pick.
SAME_PICK = ("margin", "least_confidence")
HIDDEN, STATE_HIDDEN = (8,), 8
#: A look-ahead policy's shortlist.
SIZE = 4


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
    n_columns = len(env.features) + len(proposers) + 1 + (2 if state is None else len(state))
    return _save(path, config, n_columns)


def _save(path, config, n_columns):
    """A policy file of `config` with fresh weights for candidates of `n_columns` columns."""
    net = network(config["network"]["hidden"], STATE_HIDDEN)
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


def _lookahead_config(**fields) -> ppo.PPOConfig:
    small = {"num_envs": 2, "num_steps": 2, "total_steps": 8}  # each step refits 2 x SIZE times
    return _config(**{"proposers": (), "lookahead": SIZE, **small, **fields})


def _saved_lookahead(path, env, lookahead=SIZE, stats=STATS):
    extra = {"lookahead_stats": list(stats)} if stats != STATS else {}
    config = policy_config(
        HIDDEN, STATE_HIDDEN, ENV.probe_size, features=env.features, lookahead=lookahead, **extra
    )
    return _save(path, config, len(env.features) + len(lookahead_columns(stats)))


def test_ppo_offers_margins_shortlist_and_executes_one_of_it(setup):
    env, tasks = setup
    config = _lookahead_config()
    envs = jax.jit(lambda k: rollout.reset(env, k, tasks, config.num_envs))(jax.random.key(1))
    seen, rows = jax.jit(lambda k, e: ppo.observe(config, env, k, e))(jax.random.key(2), envs)
    n_columns = len(env.features) + len(LOOKAHEAD_COLUMNS)
    n = config.num_envs
    assert seen.candidates.shape == (n, SIZE, n_columns)
    assert np.asarray(seen.action_mask).all()
    margin = np.asarray(envs.obs.column("margin"))
    mask = np.asarray(envs.obs.action_mask)
    for slot in range(n):
        order = np.argsort(np.where(mask[slot], margin[slot], np.inf), kind="stable")
        assert set(np.asarray(rows[slot]).tolist()) == set(order[:SIZE].tolist())
        # the look-ahead columns are filled (the statistics lie in [0, 2])
        stats = np.asarray(seen.candidates[slot, :, len(env.features) : len(env.features) + 3])
        assert np.all((stats >= 0) & (stats <= 2)) and np.any(stats > 0)
    for k in range(SIZE):
        chosen = np.asarray(ppo.env_action(rows, jnp.full(n, k)))
        np.testing.assert_array_equal(chosen, np.asarray(rows)[:, k])


def test_value_warmup_moves_the_value_head_alone(setup, tmp_path):
    env, tasks = setup
    path = _saved_lookahead(tmp_path / "start", env)
    start = LearnedStrategy.load(path).params
    config = _lookahead_config(init_policy=str(path), value_warmup=1, lr=1e-2, anneal_lr=False)
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
    assert not any(v for k, v in moved.items() if k not in VALUE_LAYERS)
    after, _ = step(warm)  # update 1: the warm-up is over, the policy's layers learn
    assert np.any(
        np.asarray(ppo.policy_params(after)["params"]["score"]["kernel"])
        != np.asarray(start["params"]["score"]["kernel"])
    )


def test_lookahead_settings_that_cannot_work_are_refused_by_name(setup, tmp_path):
    env, _ = setup
    other = _saved_lookahead(tmp_path / "other", env, lookahead=8)
    with pytest.raises(ValueError, match="its look-ahead shortlist is 8, this run's 4"):
        _lookahead_config(init_policy=str(other)).check()
    wider = _saved_lookahead(tmp_path / "wider", env, stats=(*STATS, "fit_error"))
    with pytest.raises(ValueError, match=r"look-ahead statistics \[.*'fit_error'\].* PPO"):
        _lookahead_config(init_policy=str(wider)).check()
    plain = LearnedStrategy.load(_saved_lookahead(tmp_path / "fits", env))
    _lookahead_config(init_policy=str(tmp_path / "fits")).check()  # it fits this one
    assert plain.config["lookahead"] == SIZE
    with pytest.raises(ValueError, match="set n_candidates none"):
        _lookahead_config(env=EnvConfig(budget=6, n_candidates=32)).check()
    with pytest.raises(ValueError, match="without proposers"):
        _lookahead_config(proposers=("margin", "random")).check()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        _lookahead_config(temperature=0.0).check()
    with pytest.raises(ValueError, match="value_warmup must be"):
        _lookahead_config(value_warmup=-1).check()
    with pytest.raises(ValueError, match="drop --shortlist"):
        TrainSettings(agent="ppo", config=_lookahead_config(), shortlist=16)
