"""Agents: GAE, replay buffer, env slots, checkpoints, export, and learning on probe envs."""

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from probe_env import ProbeEnv, ProbeParams, probe_tasks  # noqa: E402

from metaal.agents import checkpoint, dqn, ppo, rollout  # noqa: E402
from metaal.policy_net import network, policy_config  # noqa: E402
from metaal.strategies.learned import LearnedStrategy  # noqa: E402

ENV = ProbeEnv(n_candidates=8, n_features=22, state_size=6, budget=4)
TASKS = probe_tasks(3)

#: Env steps within which each agent must find the probe's optimal policy.
PPO_STEPS = 8_192
DQN_STEPS = 4_096
OPTIMAL_SHARE = 0.95


def optimal_share(net, params, key, n=2000):
    """Share of fresh probe observations on which the greedy policy picks the best candidate."""

    @jax.jit
    def share(params, key):
        obs = jax.vmap(ENV.observe)(jax.random.split(key, n))
        scores = net.apply(params, obs.state, obs.candidates, obs.action_mask)[0]
        return jnp.mean(jnp.argmax(scores, axis=-1) == ProbeEnv.best_action(obs))

    return float(share(params, key))


# --- GAE ------------------------------------------------------------------------------


def gae_reference(reward, value, done, last_value, gamma, lam):
    """CleanRL's plain loop over time."""
    T = reward.shape[0]
    adv = np.zeros_like(reward)
    last = np.zeros_like(last_value)
    for t in reversed(range(T)):
        next_value = last_value if t == T - 1 else value[t + 1]
        not_done = 1.0 - done[t]
        delta = reward[t] + gamma * next_value * not_done - value[t]
        last = delta + gamma * lam * not_done * last
        adv[t] = last
    return adv, adv + value


def test_gae_matches_plain_loop():
    rng = np.random.default_rng(0)
    T, N = 11, 5
    reward = rng.normal(size=(T, N)).astype(np.float32)
    value = rng.normal(size=(T, N)).astype(np.float32)
    done = rng.uniform(size=(T, N)) < 0.25
    last = rng.normal(size=N).astype(np.float32)
    adv, target = ppo.compute_gae(
        jnp.asarray(reward), jnp.asarray(value), jnp.asarray(done), jnp.asarray(last), 0.9, 0.8
    )
    ref_adv, ref_target = gae_reference(reward, value, done.astype(np.float32), last, 0.9, 0.8)
    np.testing.assert_allclose(adv, ref_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(target, ref_target, rtol=1e-5, atol=1e-5)


def test_gae_does_not_bootstrap_past_a_terminal_step():
    reward = jnp.array([[1.0], [2.0]])
    value = jnp.zeros((2, 1))
    done = jnp.array([[True], [False]])
    adv, _ = ppo.compute_gae(reward, value, done, jnp.array([100.0]), 1.0, 1.0)
    assert float(adv[0, 0]) == 1.0  # neither step 1's reward nor the bootstrap leaks back
    assert float(adv[1, 0]) == 102.0


# --- replay buffer --------------------------------------------------------------------


@jax.jit
def filled_buffer():
    """A 4-slot buffer after 6 vector steps of 3 envs; step t's observations have state[0] = t."""
    obs0 = jax.vmap(ENV.observe)(jax.random.split(jax.random.key(0), 3))
    buffer = dqn.empty_buffer(obs0, length=4)
    for t in range(6):
        obs = obs0.replace(state=obs0.state.at[:, 0].set(float(t)))
        buffer = dqn.add(buffer, obs, jnp.full(3, t), jnp.full(3, float(t)), jnp.zeros(3, bool))
    return buffer


def test_replay_buffer_pairs_each_step_with_the_next_observation():
    buffer = filled_buffer()
    assert int(buffer.size) == 4 and int(buffer.pos) == 2
    obs, action, reward, _, next_obs = jax.jit(dqn.sample, static_argnums=2)(
        buffer, jax.random.key(1), 500
    )
    t = np.asarray(obs.state[:, 0])
    # stored: steps 2..5; step 5 (the newest) has no next observation yet
    assert set(t.tolist()) == {2.0, 3.0, 4.0}
    np.testing.assert_array_equal(np.asarray(next_obs.state[:, 0]), t + 1)
    np.testing.assert_array_equal(np.asarray(action), t.astype(int))
    np.testing.assert_array_equal(np.asarray(reward), t)


def test_epsilon_decays_linearly_then_stays():
    config = dqn.DQNConfig(total_steps=1000, exploration_fraction=0.5, eps_end=0.1)
    eps = [float(dqn.epsilon(config, jnp.float32(s))) for s in (0, 250, 500, 900)]
    np.testing.assert_allclose(eps, [1.0, 0.55, 0.1, 0.1], atol=1e-6)


# --- env slots ------------------------------------------------------------------------


def test_slots_sample_every_task_and_reset_after_the_budget():
    tasks = rollout.TrainingTasks(
        params=ProbeParams(offset=jnp.array([0.0, 10.0, 20.0])),
        reward_scale=jnp.array([1.0, 2.0, 4.0]),
    )
    envs = jax.jit(lambda k: rollout.reset(ENV, k, tasks, 300))(jax.random.key(0))
    counts = np.bincount(np.asarray(envs.task), minlength=3)
    assert counts.min() > 70  # uniform over 3 tasks: 100 each
    np.testing.assert_array_equal(envs.params.offset, tasks.params.offset[envs.task])

    step = jax.jit(lambda k, e, a: rollout.step(ENV, k, e, a, tasks, "task"))
    total = np.zeros(300)
    for t in range(ENV.budget):
        task_before = np.asarray(envs.task)
        best = ProbeEnv.best_action(envs.obs)
        envs, out = step(jax.random.key(t + 1), envs, best)
        # rewards (feature 0 in [0, 1] plus the task's offset) divided by the task's scale
        low = np.asarray(tasks.params.offset / tasks.reward_scale)[task_before]
        high = np.asarray((tasks.params.offset + 1) / tasks.reward_scale)[task_before]
        assert np.all((np.asarray(out.reward) >= low) & (np.asarray(out.reward) <= high))
        total += np.asarray(out.reward)
        assert bool(np.all(np.asarray(out.done))) == (t == ENV.budget - 1)
    np.testing.assert_allclose(np.asarray(out.episode_return), total, rtol=1e-5)
    assert np.all(np.asarray(envs.episode_length) == 0)
    assert np.all(np.asarray(envs.state.step) == 0)  # every slot started a new episode
    assert not np.array_equal(np.asarray(envs.task), task_before)  # on a new random task


def test_explained_variance_is_cleanrls_formula():
    rng = np.random.default_rng(3)
    returns = rng.normal(size=(6, 4)).astype(np.float32)
    values = (returns + 0.5 * rng.normal(size=(6, 4))).astype(np.float32)
    got = float(ppo.explained_variance(jnp.asarray(values), jnp.asarray(returns)))
    want = 1.0 - np.var(returns - values) / np.var(returns)
    assert got == pytest.approx(want, rel=1e-5)
    assert 0.0 < got < 1.0  # noisy values still explain part of the returns
    assert float(ppo.explained_variance(jnp.asarray(returns), jnp.asarray(returns))) == 1.0
    mean = jnp.full_like(jnp.asarray(returns), returns.mean())
    assert float(ppo.explained_variance(mean, jnp.asarray(returns))) == pytest.approx(0.0, abs=1e-6)
    flat = jnp.ones((3, 2))
    assert np.isnan(float(ppo.explained_variance(flat * 0.5, flat)))  # returns that never vary


def test_ppo_logs_its_step_size_and_explained_variance_per_update():
    config = ppo.PPOConfig(
        num_envs=4, num_steps=4, total_steps=64, num_minibatches=2, update_epochs=2,
        hidden=(8,), state_hidden=8, lr=1e-3,
    )  # fmt: skip
    _, metrics = ppo.make_train(config, ENV)(jax.random.key(0), TASKS)
    np.testing.assert_allclose(
        metrics["charts/learning_rate"], 1e-3 * np.array([1.0, 0.75, 0.5, 0.25]), rtol=1e-6
    )  # linear annealing over the 4 updates, constant within one
    ev = np.asarray(metrics["losses/explained_variance"])
    assert ev.shape == (4,) and np.isfinite(ev).all() and (ev <= 1.0).all()
    flat = config.replace(anneal_lr=False)
    _, metrics = ppo.make_train(flat, ENV)(jax.random.key(0), TASKS)
    np.testing.assert_allclose(metrics["charts/learning_rate"], np.full(4, 1e-3), rtol=1e-6)


# --- learning on the probe env --------------------------------------------------------


@pytest.fixture(scope="module")
def ppo_run():
    config = ppo.PPOConfig(
        num_envs=16, num_steps=8, total_steps=PPO_STEPS, num_minibatches=2, hidden=(32, 32),
        state_hidden=16, lr=3e-3, ent_coef=0.0, gamma=0.0,
    )  # fmt: skip
    runner, metrics = ppo.make_train(config, ENV)(jax.random.key(0), TASKS)
    return config, runner, metrics


@pytest.fixture(scope="module")
def dqn_run():
    config = dqn.DQNConfig(
        num_envs=16, total_steps=DQN_STEPS, buffer_size=2048, batch_size=64, learning_starts=256,
        hidden=(32, 32), state_hidden=16, lr=3e-3, gamma=0.0, exploration_fraction=0.3,
    )  # fmt: skip
    runner, metrics = dqn.make_train(config, ENV)(jax.random.key(0), TASKS)
    return config, runner, metrics


def test_ppo_finds_the_optimal_policy_of_the_probe(ppo_run):
    config, runner, metrics = ppo_run
    share = optimal_share(
        network(config.hidden, config.state_hidden), ppo.policy_params(runner), jax.random.key(7)
    )
    assert share >= OPTIMAL_SHARE, f"PPO picks the best candidate {share:.1%} of the time"
    # the episodic return rises from random choice towards the optimum
    returns = np.asarray(metrics["episode_return_sum"] / np.maximum(metrics["episodes"], 1))
    assert returns[-10:].mean() > returns[:10].mean() + 0.5


def test_dqn_finds_the_optimal_policy_of_the_probe(dqn_run):
    config, runner, metrics = dqn_run
    share = optimal_share(
        network(config.hidden, config.state_hidden), dqn.policy_params(runner), jax.random.key(7)
    )
    assert share >= OPTIMAL_SHARE, f"DQN picks the best candidate {share:.1%} of the time"
    assert float(np.asarray(metrics["losses/td_loss"])[-1]) < 0.01
    assert float(np.asarray(metrics["charts/epsilon"])[-1]) == pytest.approx(config.eps_end)


# --- checkpoints and export -----------------------------------------------------------


def test_checkpoint_restores_the_runner_bit_for_bit(dqn_run, tmp_path):
    config, runner, _ = dqn_run
    saved = rollout.detach_params(runner)
    checkpoint.save(tmp_path, 7, saved, {"agent": "dqn"})
    template = jax.eval_shape(lambda: saved)
    restored = checkpoint.restore(checkpoint.latest(tmp_path), template)
    for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(restored), strict=True):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    attached = rollout.attach_params(restored, TASKS)
    np.testing.assert_array_equal(attached.envs.params.offset, runner.envs.params.offset)
    assert checkpoint.read_meta(checkpoint.latest(tmp_path))["updates"] == 7


def test_checkpoints_keep_only_the_newest(tmp_path):
    runner = {"w": jnp.arange(3.0)}
    for updates in (2, 4, 6):
        checkpoint.save(tmp_path, updates, runner, {})
    names = [p.name for p in checkpoint.list_checkpoints(tmp_path)]
    assert names == [f"{u:010d}" for u in (4, 6)][-checkpoint.KEEP :]


@pytest.mark.parametrize("damage", ["corrupt", "version", "no_meta", "other_shapes"])
def test_bad_checkpoints_give_clear_errors(tmp_path, damage):
    template = {"w": jnp.zeros(3), "key": jax.random.key(0)}
    folder = checkpoint.save(tmp_path, 2, template, {})
    expected = {"corrupt": "corrupt", "version": "format version", "no_meta": "missing",
                "other_shapes": "another config"}[damage]  # fmt: skip
    if damage == "corrupt":
        (folder / checkpoint.STATE_FILE).write_bytes(b"\x00not msgpack")
    elif damage == "version":
        meta = json.loads((folder / checkpoint.META_FILE).read_text())
        meta["format_version"] = checkpoint.FORMAT_VERSION + 1
        (folder / checkpoint.META_FILE).write_text(json.dumps(meta))
    elif damage == "no_meta":
        (folder / checkpoint.META_FILE).unlink()
    else:
        template = {"w": jnp.zeros(4), "key": jax.random.key(0)}
    with pytest.raises(checkpoint.CheckpointError, match=expected) as err:
        checkpoint.read_meta(folder)
        checkpoint.restore(folder, template)
    assert str(folder) in str(err.value)


def test_latest_explains_a_folder_without_a_run(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="no such folder"):
        checkpoint.latest(tmp_path / "absent")
    with pytest.raises(checkpoint.CheckpointError, match="holds no training run"):
        checkpoint.latest(tmp_path)


def test_exported_policy_loads_as_the_same_scorer(ppo_run, tmp_path):
    config, runner, _ = ppo_run
    params = ppo.policy_params(runner)
    meta = policy_config(config.hidden, config.state_hidden, probe_size=4, agent="ppo")
    path = checkpoint.export_policy(tmp_path / "policy", params, meta)
    policy = LearnedStrategy.load(path)
    assert policy.config["agent"] == "ppo" and policy.probe_size == 4
    obs = jax.jit(jax.vmap(ENV.observe))(jax.random.split(jax.random.key(3), 5))
    net = network(config.hidden, config.state_hidden)
    expected = jax.jit(lambda p, o: net.apply(p, o.state, o.candidates, o.action_mask)[0])
    loaded = jax.jit(policy.apply)  # the network reads a batch of observations as well
    np.testing.assert_array_equal(loaded(policy.params, obs), expected(params, obs))


# --- per-task reward scale ------------------------------------------------------------


def test_reward_scale_is_the_achievable_gain_floored():
    from metaal.data import Task, make_split, stack_splits
    from metaal.envs.core import ActiveLearningEnv, EnvConfig, make_params

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 100)
    easy = Task("easy", rng.normal(size=(200, 3)) + 10.0 * y[:, None], y, ("a", "b"))
    hard_X = rng.normal(size=(200, 3))
    hard_y = (hard_X[:, 0] + 0.3 * rng.normal(size=200) > 0).astype(int)
    hard = Task("hard", hard_X, hard_y, ("a", "b"))
    splits = [make_split(t, 0, max_pool=60, max_val=60) for t in (easy, hard)]
    params = jax.jit(jax.vmap(make_params))(stack_splits(splits))
    env = ActiveLearningEnv(EnvConfig(budget=4, n_initial=2, n_candidates=4, probe_size=4))
    scale = np.asarray(rollout.reward_scales(env, params, jax.random.key(0)))
    # the easy task is solved by the initial labels: no gain to normalise by, so the floor
    assert scale[0] == pytest.approx(rollout.MIN_REWARD_SCALE)
    assert rollout.MIN_REWARD_SCALE < scale[1] <= 1.0
    tasks = rollout.training_tasks(env, params, "none")
    np.testing.assert_array_equal(tasks.reward_scale, [1.0, 1.0])
