import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.datasets import make_classification

from metaal import features
from metaal.agents import checkpoint, rollout
from metaal.agents.imitation import (
    ImitationConfig,
    Samples,
    empty_buffer,
    expert_gains,
    make_episode,
    make_expert,
    make_fit,
    make_scorer,
    make_train,
    margin_shortlist,
    normalise_targets,
    policy_scores,
    ranking_loss,
)
from metaal.data import Task, make_split, pad_split, stack_splits
from metaal.envs.core import ActiveLearningEnv, EnvConfig, make_params
from metaal.policy_net import policy_config
from metaal.strategies.learned import LearnedStrategy

ENV = EnvConfig(budget=6, n_initial=3, n_candidates=None, probe_size=8)


def _task(seed, n=160, d=5, k=3):
    X, y = make_classification(
        n_samples=n,
        n_features=d,
        n_informative=3,
        n_redundant=0,
        n_classes=k,
        n_clusters_per_class=1,
        random_state=seed,
    )
    return Task(
        f"toy{seed}",
        X.astype(np.float64),
        y.astype(np.int32),
        tuple(f"c{i}" for i in range(k)),
        "test",
    )


@pytest.fixture(scope="module")
def params():
    return make_params(pad_split(make_split(_task(0), 0)))


@pytest.fixture(scope="module")
def learner_rollout(params):
    """One round-1 episode with beta = 0: the (untrained) learned policy acts at every step."""
    config = ImitationConfig(
        env=ENV, expert_set="val", shortlist=0, n_labels=6, n_policy_labels=2, beta_decay=0.0
    )
    episode = jax.jit(make_episode(config, make_scorer(config)))
    key = jax.random.key(3)
    net = make_scorer(config).init(jax.random.key(1))
    samples, stats = episode(key, net, params, 1)
    return key, samples, stats


def _pool_val_accuracy(env, params, state):
    """numpy accuracy of a learner on the pool rows unlabelled at `state` plus validation."""
    task = params.task
    rows = np.concatenate([np.asarray(task.pool_mask & ~state.labeled), np.asarray(task.val_mask)])
    X = jnp.concatenate([task.pool_X, task.val_X])
    y = np.concatenate([np.asarray(task.pool_y), np.asarray(task.val_y)])

    def accuracy(learner):
        pred = np.asarray(
            jnp.argmax(env.learner_step.predict_proba(learner, X, task.class_mask), -1)
        )
        return np.mean(pred[rows] == y[rows])

    return accuracy


def test_expert_gains_equal_the_validation_gain_of_stepping(params):
    env = ActiveLearningEnv(ENV)
    _, state = env.reset(jax.random.key(0), params)
    idx = jnp.asarray(np.nonzero(~np.asarray(state.labeled))[0][:12])
    gains = jax.jit(expert_gains, static_argnums=0)(
        env, state, params, idx, jnp.ones(idx.shape, bool)
    )
    for i, g in zip(np.asarray(idx), np.asarray(gains), strict=True):
        _, _, reward, _, _, info = env.step(jax.random.key(9), state, i, params)
        assert info["valid_action"]
        np.testing.assert_allclose(g, info["val_score"] - state.val_score, atol=1e-6)
        np.testing.assert_allclose(g, reward, atol=1e-6)
    assert np.ptp(np.asarray(gains)) > 0  # the check is not vacuous: candidates differ


def test_pool_expert_measures_accuracy_on_unlabelled_pool_and_validation(params):
    env = ActiveLearningEnv(ENV)
    _, state = env.reset(jax.random.key(0), params)
    idx = jnp.asarray(np.nonzero(~np.asarray(state.labeled))[0][:6])
    expert = jax.jit(make_expert(ImitationConfig(env=ENV)))
    gains = np.asarray(expert(state, params, idx, jnp.ones(idx.shape, bool)))
    accuracy = _pool_val_accuracy(env, params, state)
    for i, g in zip(np.asarray(idx), gains, strict=True):
        _, new, _, _, _, _ = env.step(jax.random.key(9), state, i, params)
        np.testing.assert_allclose(g, accuracy(new.learner) - accuracy(state.learner), atol=1e-6)
    assert np.ptp(gains) > 0


def test_multi_step_expert_follows_margin_after_the_candidate(params):
    """expert_horizon 3: label the candidate, then margin's two next picks, then score."""
    env = ActiveLearningEnv(ENV)
    _, state = env.reset(jax.random.key(0), params)
    idx = jnp.asarray(np.nonzero(~np.asarray(state.labeled))[0][:6])
    config = ImitationConfig(env=ENV, expert_horizon=3)
    every = jnp.ones(idx.shape, bool)
    gains = np.asarray(jax.jit(make_expert(config))(state, params, idx, every))
    one_step = np.asarray(jax.jit(make_expert(ImitationConfig(env=ENV)))(state, params, idx, every))
    accuracy = _pool_val_accuracy(env, params, state)
    task = params.task

    def margin_pick(s):  # numpy margin sampling over the state's candidates
        probs = np.asarray(
            env.learner_step.predict_proba(s.learner, task.pool_X[s.candidates], task.class_mask)
        )
        top = np.sort(probs, axis=-1)
        margin = np.where(np.asarray(s.candidate_mask), top[:, -1] - top[:, -2], np.inf)
        return int(np.argmin(margin))

    for i, g in zip(np.asarray(idx), gains, strict=True):
        _, new, _, _, _, _ = env.step(jax.random.key(9), state, i, params)
        for _ in range(2):
            _, new, _, _, _, info = env.step(jax.random.key(9), new, margin_pick(new), params)
            assert info["valid_action"]
        assert int(new.n_labeled) == int(state.n_labeled) + 3
        np.testing.assert_allclose(g, accuracy(new.learner) - accuracy(state.learner), atol=1e-6)
    assert np.ptp(gains) > 0
    assert not np.allclose(gains, one_step)  # the horizon changes the targets


def test_teacher_expert_weights_the_two_likeliest_labels_by_a_full_pool_fit(params):
    """expert_label teacher: the gains with the teacher's two likeliest labels, averaged."""
    env = ActiveLearningEnv(ENV)
    _, state = env.reset(jax.random.key(0), params)
    idx = jnp.asarray(np.nonzero(~np.asarray(state.labeled))[0][:6])
    every = jnp.ones(idx.shape, bool)
    gains = np.asarray(
        jax.jit(make_expert(ImitationConfig(env=ENV, expert_label="teacher")))(
            state, params, idx, every
        )
    )
    learner_weighted = np.asarray(
        jax.jit(make_expert(ImitationConfig(env=ENV, expert_label="expected")))(
            state, params, idx, every
        )
    )
    accuracy = _pool_val_accuracy(env, params, state)
    task = params.task
    teacher = env.learner_step.fit(
        state.learner,
        task.pool_X,
        task.pool_y,
        task.pool_mask.astype(jnp.float32),
        task.class_mask,
    )
    for i, g in zip(np.asarray(idx), gains, strict=True):
        row = int(state.candidates[i])
        probs = np.asarray(
            env.learner_step.predict_proba(teacher, task.pool_X[row][None], task.class_mask)[0]
        )
        labels = np.argsort(-probs, kind="stable")[:2]
        by_label = []
        for y in labels:
            told = params.replace(task=task.replace(pool_y=task.pool_y.at[row].set(int(y))))
            _, new, _, _, _, _ = env.step(jax.random.key(9), state, i, told)
            by_label.append(accuracy(new.learner) - accuracy(state.learner))
        want = np.dot(probs[labels], by_label) / probs[labels].sum()
        np.testing.assert_allclose(g, want, atol=1e-5)
    assert np.ptp(gains) > 0
    assert not np.allclose(gains, learner_weighted)  # the teacher's weights are not the learner's


def test_dagger_stores_expert_gains_at_states_the_learner_visits(params, learner_rollout):
    key, samples, stats = learner_rollout
    env = ActiveLearningEnv(ENV)
    gains_of = jax.jit(expert_gains, static_argnums=0)
    _, state = env.reset(jax.random.split(key)[0], params)
    executed, expert = np.asarray(stats["executed"]), np.asarray(stats["expert"])
    # the learner, not the expert, chose the executed actions
    assert np.any(executed != expert)
    for t in range(ENV.budget):
        idx, mask = samples.index[t], samples.mask[t]
        np.testing.assert_allclose(
            samples.gains[t], gains_of(env, state, params, idx, mask), atol=1e-6
        )
        # the expert's choice is a best labelled candidate: that is the stored target's argmax
        best = np.max(np.where(mask, samples.gains[t], -np.inf))
        assert samples.gains[t][list(np.asarray(idx)).index(expert[t])] == best
        assert not state.labeled[executed[t]]
        _, state, _, _, _, _ = env.step(jax.random.key(0), state, executed[t], params)
    # the executed trajectory is the learner's: the replay labelled exactly those rows
    np.testing.assert_array_equal(np.asarray(state.labeled_idx[ENV.n_initial :]), executed)


def test_stored_observations_are_the_labelled_candidates_rows(params, learner_rollout):
    key, samples, _ = learner_rollout
    env = ActiveLearningEnv(ENV)
    obs, _ = env.reset(jax.random.split(key)[0], params)
    np.testing.assert_allclose(samples.candidates[0], obs.candidates[samples.index[0]])
    np.testing.assert_allclose(samples.state[0], obs.state)


def test_normalised_targets():
    gains = jnp.array([[0.0, 0.1, 0.3, 9.0], [0.2, 0.2, 0.2, 0.0]])
    mask = jnp.array([[True, True, True, False], [True, True, True, True]])
    z, w = normalise_targets(gains, mask, "zscore")
    np.testing.assert_allclose(
        z[0, :3], (np.array([0, 0.1, 0.3]) - 0.4 / 3) / np.std([0, 0.1, 0.3]), rtol=1e-5
    )
    assert z[0, 3] == 0 and w[0] == 1
    mm, w = normalise_targets(gains, mask, "minmax")
    np.testing.assert_allclose(mm[0, :3], [0, 1 / 3, 1], rtol=1e-5)
    np.testing.assert_allclose(mm[1], [1, 1, 1, 0])
    _, w = normalise_targets(jnp.zeros((1, 4)), jnp.ones((1, 4), bool), "zscore")
    assert w[0] == 0  # all-equal gains teach nothing and get no weight


@pytest.mark.parametrize("loss", ["listwise", "pairwise", "regression"])
def test_ranking_losses_prefer_the_target_order(loss):
    config = ImitationConfig(env=ENV, loss=loss)
    gains = jnp.array([[0.0, 0.1, 0.3, 0.2]])
    samples = Samples(
        state=jnp.zeros((1, 1)),
        candidates=jnp.zeros((1, 4, 1)),
        mask=jnp.ones((1, 4), bool),
        gains=gains,
        index=jnp.zeros((1, 4), jnp.int32),
        scale=jnp.ones((1,)),
    )
    z, _ = normalise_targets(gains, samples.mask, "zscore")
    right = ranking_loss(2 * z, samples, config)
    wrong = ranking_loss(-2 * z, samples, config)
    assert right < wrong


def test_imitation_learns_to_pick_the_best_candidate_on_a_probe():
    """Gains equal one candidate feature (among random others): the fit must find it."""
    config = ImitationConfig(
        env=ENV, n_labels=16, updates_per_round=400, batch_size=64, learning_rate=3e-3
    )
    n_state = features.n_state_features(ENV.probe_size)
    column = features.DEFAULT_CANDIDATE_FEATURES.index("density")

    def probe(key, n):
        k1, k2, k3 = jax.random.split(key, 3)
        cand = jax.random.normal(k1, (n, 16, len(features.DEFAULT_CANDIDATE_FEATURES)))
        mask = jax.random.uniform(k2, (n, 16)) < 0.8
        return Samples(
            state=jax.random.normal(k3, (n, n_state)),
            candidates=cand,
            mask=mask,
            gains=jnp.where(mask, cand[..., column], 0.0),
            index=jnp.zeros((n, 16), jnp.int32),
            scale=jnp.ones((n,)),
        )

    train, test = probe(jax.random.key(0), 1024), probe(jax.random.key(1), 512)
    scorer = make_scorer(config)
    optimiser = optax.adam(config.learning_rate)
    net = scorer.init(jax.random.key(2))
    fit = jax.jit(make_fit(config, scorer, optimiser))
    net, _, losses = fit(net, optimiser.init(net), train, 1024, jax.random.key(3))
    assert losses[-20:].mean() < losses[:20].mean()
    scores = scorer.apply(net, test.state, test.candidates, test.mask)
    picked = jnp.argmax(scores, -1)
    best = jnp.argmax(jnp.where(test.mask, test.gains, -jnp.inf), -1)
    assert float(jnp.mean(picked == best)) >= 0.95


@pytest.mark.slow  # out of CI's 20 minutes; run with -m slow
def test_train_runs_dagger_rounds_and_is_reproducible():
    splits = [make_split(_task(s, d=4 + s), s) for s in range(2)]
    tasks = rollout.training_tasks(None, jax.vmap(make_params)(stack_splits(splits)))
    config = ImitationConfig(
        env=ENV,
        n_rounds=2,
        n_envs=2,
        first_policy="oracle",
        shortlist=4,
        n_labels=4,
        n_policy_labels=4,
        updates_per_round=5,
        batch_size=8,
    )
    train = make_train(config)
    runner, metrics = train(jax.random.key(0), tasks)
    runner2, _ = train(jax.random.key(0), tasks)
    a_leaves = jax.tree.leaves(checkpoint.keys_as_data(runner))
    b_leaves = jax.tree.leaves(checkpoint.keys_as_data(runner2))
    for a, b in zip(a_leaves, b_leaves, strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(runner.update) == 2 and metrics["losses/ranking_loss"].shape == (2,)
    # round 0 is the expert's: every executed action is the expert's choice
    assert metrics["charts/expert_share"][0] == 1.0
    agreement = metrics["charts/oracle_agreement"]
    assert np.all((agreement >= 0) & (agreement <= 1))
    # both rounds' states are in the buffer, nothing beyond
    per_round = config.n_envs * ENV.budget
    assert runner.buffer.mask.shape[0] == 2 * per_round
    assert np.all(np.asarray(runner.buffer.mask).any(axis=1))
    assert empty_buffer(config, 3).candidates.shape == (
        3,
        4,
        len(features.DEFAULT_CANDIDATE_FEATURES),
    )


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="loss"):
        ImitationConfig(loss="hinge")
    with pytest.raises(ValueError, match="n_candidates"):
        ImitationConfig(
            env=dataclasses.replace(ENV, n_candidates=4), shortlist=8, n_labels=8, n_policy_labels=8
        )
    with pytest.raises(ValueError, match="shortlist"):
        ImitationConfig(shortlist=8, n_labels=16, n_policy_labels=16)
    with pytest.raises(ValueError, match="expert_horizon must be at least 1"):
        ImitationConfig(expert_horizon=0)
    with pytest.raises(ValueError, match="below the budget"):
        ImitationConfig(env=ENV, expert_horizon=ENV.budget)


def test_margin_shortlist_is_the_k_most_uncertain_candidates(params):
    env = ActiveLearningEnv(ENV)
    obs, _ = env.reset(jax.random.key(0), params)
    chosen = np.asarray(margin_shortlist(obs, 5))
    margin = np.asarray(obs.candidates[:, features.DEFAULT_CANDIDATE_FEATURES.index("margin")])
    valid = np.asarray(obs.action_mask)
    assert chosen.sum() == 5 and not np.any(chosen & ~valid)
    assert margin[chosen].max() <= margin[valid & ~chosen].min()


@pytest.mark.parametrize("hidden", [(8,), ()])
def test_saved_policy_scores_like_the_trained_scorer(tmp_path, params, hidden):
    config = ImitationConfig(env=ENV, hidden=hidden, shortlist=4, n_labels=4, n_policy_labels=4)
    scorer = make_scorer(config)
    net = scorer.init(jax.random.key(0))
    net = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(1), x.shape), net)
    obs, _ = ActiveLearningEnv(ENV).reset(jax.random.key(0), params)
    exported = policy_config(hidden, config.state_hidden, ENV.probe_size, agent="imitation")
    policy = checkpoint.policy_of(net, exported, config.shortlist)
    loaded = LearnedStrategy.load(policy.save(tmp_path / "p.msgpack"))
    expected = policy_scores(scorer, net, obs, config.shortlist)
    np.testing.assert_allclose(loaded.apply(loaded.params, obs), expected, rtol=1e-5)
    assert int(jnp.sum(expected > -1e8)) == 4
