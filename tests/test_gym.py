"""The Gymnasium adapters (envs.gym): API contract, agreement with the core, vector env."""

from __future__ import annotations

import warnings

import gymnasium as gym
import jax
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

from metaal import envs, features
from metaal.data import load_task
from metaal.envs.gym import ActiveLearningGymEnv, ActiveLearningVectorEnv, core_env

# Same settings (and shapes) as tests/test_env.py, so the compiled core is shared.
KW = dict(
    task="sklearn/iris",
    budget=8,
    n_initial=4,
    n_candidates=8,
    max_pool=150,
    max_val=50,
    max_test=50,
)
C = KW["n_candidates"]


@pytest.fixture(scope="module")
def env():
    return gym.make(envs.ENV_ID, **KW)


def rollout(env, seed, actions, options=None):
    """Observations, rewards and infos of one episode under a fixed action list."""
    obs, info = env.reset(seed=seed, options=options)
    obs_list, rewards, infos = [obs], [], [info]
    for a in actions:
        obs, r, terminated, truncated, info = env.step(a)
        obs_list.append(obs)
        rewards.append(r)
        infos.append(info)
    return obs_list, np.array(rewards), infos


ACTIONS = [0, 5, 3, 3, 7, 1, 2, 6]


def test_registered_with_string_entry_points():
    spec = gym.spec(envs.ENV_ID)
    assert spec.entry_point == "metaal.envs.gym:ActiveLearningGymEnv"
    assert spec.vector_entry_point == "metaal.envs.gym:ActiveLearningVectorEnv"


def test_check_env_passes(env):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    # dist_labeled and egl are honestly unbounded above; nothing else may warn
    messages = [str(w.message) for w in caught]
    assert all("maximum value is infinity" in m for m in messages), messages


def test_a_bare_make_runs_the_built_in_task_and_passes_check_env():
    bare = gym.make(envs.ENV_ID)
    assert bare.unwrapped.tasks.names == ("synthetic-default",)
    assert bare.action_space == gym.spaces.Discrete(32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(bare.unwrapped)
    messages = [str(w.message) for w in caught]
    assert all("maximum value is infinity" in m for m in messages), messages
    venv = gym.make_vec(envs.ENV_ID, num_envs=2, vectorization_mode="vector_entry_point")
    assert venv.unwrapped.tasks.names == ("synthetic-default",)


def test_spaces_and_python_return_types(env):
    space = env.observation_space
    assert isinstance(space, gym.spaces.Dict)
    assert set(space.spaces) == {"state", "candidates", "action_mask"}
    assert space["candidates"].shape == (C, len(features.DEFAULT_CANDIDATE_FEATURES))
    assert env.action_space == gym.spaces.Discrete(C)
    obs, info = env.reset(seed=0)
    assert space.contains(obs)
    assert isinstance(info["val_score"], float) and info["task"] == "sklearn/iris"
    env.action_space.seed(0)
    for _ in range(KW["budget"]):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert space.contains(obs)
        assert type(reward) is float and type(terminated) is bool and truncated is False
        assert type(info["val_score"]) is float and type(info["test_score"]) is float
        assert type(info["n_labeled"]) is int and type(info["pool_index"]) is int
        assert type(info["valid_action"]) is bool
    assert terminated


def test_terminates_at_budget_and_does_not_autoreset(env):
    env.reset(seed=1)
    flags = [env.step(0)[2] for _ in range(KW["budget"])]
    assert flags == [False] * (KW["budget"] - 1) + [True]
    with pytest.raises(gym.error.ResetNeeded, match="call reset"):
        env.step(0)


@pytest.mark.parametrize("action", [C, 99, -1, 2.7, "a", None, np.array([1, 2])])
def test_an_action_outside_the_space_is_an_error_naming_it(env, action):
    # Until issue 12 an out-of-range action was a penalised no-op and 2.7 was truncated to 2;
    # now anything outside Discrete(C) is refused, and the episode is left as it was.
    env.reset(seed=2)
    with pytest.raises(ValueError, match=rf"action .* is not in the action space Discrete\({C}\)"):
        env.step(action)
    assert env.unwrapped.state.step == 0


def test_an_already_labelled_action_is_a_penalised_noop():
    # the whole pool as candidates: a labelled row stays in the space, masked
    whole = gym.make(envs.ENV_ID, **{**KW, "n_candidates": None})
    obs, info0 = whole.reset(seed=2)
    row = int(np.nonzero(obs["action_mask"])[0][0])
    obs, _, _, _, first = whole.step(row)
    assert first["valid_action"] is True and obs["action_mask"][row] == 0
    obs, reward, terminated, truncated, info = whole.step(row)
    assert reward == -1.0
    assert info["valid_action"] is False
    assert info["n_labeled"] == first["n_labeled"] == KW["n_initial"] + 1
    assert whole.unwrapped.state.step == 2 and not terminated


def test_same_seed_same_episode_and_seedless_reset_continues(env):
    first = rollout(env, 11, ACTIONS)
    again = rollout(env, 11, ACTIONS)
    for a, b in zip(first[0], again[0], strict=True):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    np.testing.assert_array_equal(first[1], again[1])
    # a reset without a seed starts a new episode rather than repeating the last one
    env.reset(seed=11)
    nxt, _ = env.reset()
    assert not np.array_equal(nxt["candidates"], first[0][0]["candidates"])


def test_gym_adapter_equals_functional_core(env):
    """Same seed and actions: bit-identical observations and rewards from the core directly."""
    obs_list, rewards, infos = rollout(env, 5, ACTIONS)
    core = core_env(env.unwrapped.config)
    params = env.unwrapped.params
    chain = jax.random.key(5)
    chain, key = jax.random.split(chain)
    obs, state = core.reset(key, params)
    core_obs, core_rewards = [obs], []
    for a in ACTIONS:
        chain, key = jax.random.split(chain)
        obs, state, r, *_ = core.step(key, state, np.int32(a), params)
        core_obs.append(obs)
        core_rewards.append(float(r))
    np.testing.assert_array_equal(rewards, core_rewards)
    for mine, theirs in zip(obs_list, core_obs, strict=True):
        np.testing.assert_array_equal(mine["state"], np.asarray(theirs.state))
        np.testing.assert_array_equal(mine["candidates"], np.asarray(theirs.candidates))
        np.testing.assert_array_equal(mine["action_mask"], np.asarray(theirs.action_mask))
    assert [i["pool_index"] for i in infos[1:]] == [
        int(i) for i in np.asarray(state.labeled_idx)[KW["n_initial"] :]
    ]


def test_task_object_and_name_give_the_same_env(env):
    by_object = ActiveLearningGymEnv(**{**KW, "task": load_task("sklearn/iris")})
    a, b = rollout(by_object, 4, ACTIONS[:3]), rollout(env.unwrapped, 4, ACTIONS[:3])
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0][-1]["candidates"], b[0][-1]["candidates"])


def test_budget_too_large_for_the_pool_is_a_clear_error():
    with pytest.raises(ValueError, match="sklearn/iris: the pool has .* lower the budget"):
        ActiveLearningGymEnv(**{**KW, "budget": 500})


def test_suite_env_samples_tasks_and_padding_keeps_trajectories(env):
    suite = gym.make(envs.ENV_ID, **{**KW, "task": ["sklearn/iris", "keel/wine"]})
    seen = {suite.reset(seed=s)[1]["task"] for s in range(12)}
    assert seen == {"sklearn/iris", "keel/wine"}
    obs, info = suite.reset(seed=0, options={"task": "keel/wine"})
    assert info["task"] == "keel/wine" and suite.observation_space.contains(obs)
    # iris padded to wine's shapes behaves as iris alone
    padded = rollout(suite, 3, ACTIONS, options={"task": "sklearn/iris"})
    alone = rollout(env, 3, ACTIONS)
    np.testing.assert_allclose(padded[1], alone[1], atol=1e-5)
    assert [i["pool_index"] for i in padded[2][1:]] == [i["pool_index"] for i in alone[2][1:]]
    with pytest.raises(ValueError, match="not one of this env's tasks"):
        suite.reset(options={"task": "keel/pima"})


# --- vector env ---------------------------------------------------------------------------

N_ENVS = 4


@pytest.fixture(scope="module")
def venv():
    return gym.make_vec(envs.ENV_ID, num_envs=N_ENVS, vectorization_mode="vector_entry_point", **KW)


def test_make_vec_builds_the_jitted_vector_env(venv):
    assert isinstance(venv.unwrapped, ActiveLearningVectorEnv)
    assert venv.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert venv.num_envs == N_ENVS
    assert venv.observation_space["candidates"].shape == (
        N_ENVS,
        C,
        len(features.DEFAULT_CANDIDATE_FEATURES),
    )


def test_vector_rows_equal_single_envs_across_autoreset(venv, env):
    """Env i of a vector env reset with seed s is the single env reset with seed s + i."""
    rng = np.random.default_rng(0)
    n_steps = 2 * KW["budget"] + 1  # two full episodes, the second after an autoreset
    actions = rng.integers(0, C, size=(n_steps, N_ENVS))
    obs, info = venv.reset(seed=20)
    vec = [(obs, None, None, None, info)]
    for a in actions:
        vec.append(venv.step(a))
        assert venv.observation_space.contains(vec[-1][0])
    budget = KW["budget"]
    # step `budget` ends the episode; step `budget + 1` is the autoreset step
    assert vec[budget][2].all() and not vec[budget + 1][2].any()
    np.testing.assert_array_equal(vec[budget + 1][1], 0.0)
    np.testing.assert_array_equal(vec[budget + 1][4]["n_labeled"], KW["n_initial"])
    assert not vec[budget + 1][4]["_pool_index"].any() and vec[budget][4]["_pool_index"].all()
    assert not np.stack([v[3] for v in vec[1:]]).any()
    for i in range(N_ENVS):
        single = [env.reset(seed=20 + i)]
        for t, a in enumerate(actions[:, i], start=1):
            if t == budget + 1:
                single.append((env.reset()[0], 0.0, False, False, None))  # the autoreset
            else:
                single.append(env.step(a))
        for t in range(n_steps + 1):
            for k in ("state", "candidates", "action_mask"):
                np.testing.assert_allclose(
                    vec[t][0][k][i], single[t][0][k], atol=1e-5, err_msg=f"env {i} t {t} {k}"
                )
            if t:
                np.testing.assert_allclose(vec[t][1][i], single[t][1], atol=1e-5)
                if single[t][4] is not None:
                    assert vec[t][4]["pool_index"][i] == single[t][4]["pool_index"]


def test_vector_env_over_a_suite_runs_task_i_mod_n_in_env_i():
    suite_kw = {**KW, "task": ["sklearn/iris", "keel/wine"]}
    venv = gym.make_vec(
        envs.ENV_ID, num_envs=2, vectorization_mode="vector_entry_point", **suite_kw
    )
    single = gym.make(envs.ENV_ID, **suite_kw)
    obs, info = venv.reset(seed=7)
    np.testing.assert_array_equal(info["task_index"], [0, 1])
    actions = [[1, 2], [4, 0], [3, 3]]
    vec = [venv.step(a) for a in actions]
    for i in range(2):
        ref = rollout(single, 7 + i, [a[i] for a in actions], options={"task": i})
        np.testing.assert_allclose(obs["candidates"][i], ref[0][0]["candidates"], atol=1e-5)
        np.testing.assert_allclose([v[1][i] for v in vec], ref[1], atol=1e-5)
        assert [v[4]["pool_index"][i] for v in vec] == [r["pool_index"] for r in ref[2][1:]]
