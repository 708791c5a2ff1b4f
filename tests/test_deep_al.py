"""The deep-AL regime: batch rounds, cold starts, ProbCover and DropQuery against brute force."""

import dataclasses
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skactiveml.pool import ProbCover
from sklearn.cluster import KMeans
from test_strategies import make_ctx, obs_for

from metaal.data import Task, make_split, pad_split
from metaal.data.synthetic import make_synthetic_task
from metaal.envs.core import ActiveLearningEnv, EnvConfig, make_params
from metaal.experiments.benchmarks.reference_env import pool_density
from metaal.learners import make_learner
from metaal.policy_net import LINEAR_SCORER, linear_params, linear_scorer
from metaal.strategies import get_strategy, select
from metaal.strategies.adapter import standardise
from metaal.strategies.distribution import _probcover, purity_radius
from metaal.strategies.hybrid import (
    DROPQUERY_DRAWS,
    DROPQUERY_RATE,
    dropout_inconsistency,
    dropquery_members,
)
from metaal.strategies.learned import LearnedStrategy

CONFIG = EnvConfig(budget=10, n_initial=3, n_candidates=16, probe_size=8)


@pytest.fixture(scope="module")
def params():
    task = make_synthetic_task(3, n_samples=300, n_features=6, n_classes=3)
    return make_params(pad_split(make_split(task, 0, max_pool=150, max_val=60, max_test=60)))


@functools.cache
def make_env(config):
    """One env per config, so tests of one config share its compiled reset and step."""
    return ActiveLearningEnv(config)


def run(config, params, seed=0, observations=None):
    """The episode's (state before, state after, reward, info) per step; the last valid pick.

    `observations`, a list, receives the observation at reset and after every step.
    """
    env = make_env(config)
    obs, state = env.reset(jax.random.key(seed), params)
    steps = []
    for t in range(config.budget):
        if observations is not None:
            observations.append(obs)
        before = state
        action = jnp.argmax(jnp.where(obs.action_mask, jnp.arange(obs.action_mask.shape[0]), -1))
        obs, state, reward, term, _, info = env.step(jax.random.key(100 + t), state, action, params)
        steps.append((before, state, float(reward), info))
    if observations is not None:
        observations.append(obs)
    return steps


def test_batch_rounds_refit_and_reward_once_per_round_and_rewards_telescope(params):
    b = 4
    steps = run(dataclasses.replace(CONFIG, query_batch=b), params)
    refits = [bool(info["refit"]) for _, _, _, info in steps]
    assert refits == [(t + 1) % b == 0 or t + 1 == CONFIG.budget for t in range(CONFIG.budget)]
    round_start = steps[0][0].val_score
    for t, (before, after, reward, info) in enumerate(steps):
        assert int(info["n_labeled"]) == CONFIG.n_initial + t + 1  # the labels follow the picks
        if not refits[t]:
            assert reward == 0.0
            old, new = jax.tree.leaves(before.learner), jax.tree.leaves(after.learner)
            for x, y in zip(old, new, strict=True):
                np.testing.assert_array_equal(x, y)  # no refit inside a round
            np.testing.assert_array_equal(before.class_counts, after.class_counts)
            # ... but the set features move: the pick joins the labelled set's distances
            assert float(jnp.sum(after.dist_labeled)) < float(jnp.sum(before.dist_labeled))
        else:
            # a round's rewards sum to its validation gain
            gained = sum(r for _, _, r, _ in steps[t - (t % b) : t + 1])
            assert gained == pytest.approx(float(after.val_score) - float(round_start), abs=1e-6)
            round_start = after.val_score
            labels = np.asarray(after.labeled_y)[: int(after.n_labeled)]
            np.testing.assert_array_equal(
                np.asarray(after.class_counts), np.bincount(labels, minlength=3)
            )


def test_round_features_follow_the_picks_of_the_current_round_by_brute_force(params):
    b = 4
    config = dataclasses.replace(CONFIG, query_batch=b)
    observations = []
    steps = run(config, params, observations=observations)
    X = np.asarray(params.task.pool_X)
    d = int(np.sum(params.task.feature_mask))
    picks = [int(info["pool_index"]) for _, _, _, info in steps]
    refits = [bool(info["refit"]) for _, _, _, info in steps]
    # after s picks: the picks since the last refit (rounds end every b picks and at the budget)
    assert refits == [(t + 1) % b == 0 or t + 1 == CONFIG.budget for t in range(CONFIG.budget)]
    progress = []
    for s, obs in enumerate(observations):
        state = steps[s - 1][1] if s else steps[0][0]
        start = max((t + 1 for t in range(s) if refits[t]), default=0)
        round_picks = picks[start:s]
        mask = np.asarray(obs.action_mask)
        cand = np.asarray(state.candidates)
        if round_picks:
            sq = ((X[:, None] - X[round_picks][None]) ** 2).sum(-1).min(axis=1)
            np.testing.assert_allclose(np.asarray(state.dist_round), np.sqrt(sq), atol=1e-4)
            expect = np.exp(-sq[cand] / d)
        else:  # a round without picks yet: right after reset and after every refit
            assert np.all(np.isinf(np.asarray(state.dist_round)))
            expect = np.zeros(len(cand))
        similarity = np.asarray(obs.column("round_similarity"))
        np.testing.assert_allclose(similarity[mask], expect[mask], rtol=1e-4, atol=1e-6)
        assert np.all(similarity[~mask] == 0.0)
        values = set(np.asarray(obs.column("round_progress"))[mask].tolist())
        assert len(values) == 1  # the same for every candidate
        progress.append(values.pop())
    assert progress == [0.0, 0.25, 0.5, 0.75, 0.0, 0.25, 0.5, 0.75, 0.0, 0.25, 0.0]
    assert max(observations[2].column("round_similarity")) > 0  # the round's picks are seen
    assert "z_round_similarity" in observations[0].features
    assert "rank_round_similarity" in observations[0].features


def test_query_fills_the_round_features_with_the_earlier_picks_of_its_batch():
    # a linear policy reading only the round columns: its utilities are the features
    names = ("round_similarity", "round_progress")
    config = {"scorer": LINEAR_SCORER, "probe_size": 8, "features": list(names)}
    weights = {"round_similarity": -1.0, "round_progress": 1.0}
    policy = LearnedStrategy(linear_scorer(config), linear_params(weights, names), config)
    rng = np.random.default_rng(4)
    X = rng.normal(size=(40, 3))
    y = np.full(40, np.nan)
    y[:6] = [0, 1, 2, 0, 1, 2]
    batch = 4
    picks, utilities = policy.query(X, y, batch_size=batch, return_utilities=True)
    Xs = np.asarray(standardise(X))
    free = np.isnan(y)
    for b in range(batch):
        if b:
            sq = ((Xs[:, None] - Xs[picks[:b]][None]) ** 2).sum(-1).min(axis=1)
            similarity = np.exp(-sq / X.shape[1])
        else:  # the batch has no pick yet
            similarity = np.zeros(len(X))
        selectable = free.copy()
        selectable[picks[:b]] = False
        np.testing.assert_allclose(
            utilities[b][selectable], b / batch - similarity[selectable], rtol=1e-4, atol=1e-5
        )
        assert np.all(np.isnan(utilities[b][~selectable]))
    assert len(set(picks.tolist())) == batch


def test_query_batch_one_refits_every_step(params):
    observations = []
    steps = run(CONFIG, params, observations=observations)
    assert all(bool(info["refit"]) for _, _, _, info in steps)
    for obs in observations:  # every round is one pick: no earlier pick, no progress
        assert np.all(np.asarray(obs.column("round_similarity")) == 0.0)
        assert np.all(np.asarray(obs.column("round_progress")) == 0.0)
    assert all(np.all(np.isinf(np.asarray(after.dist_round))) for _, after, _, _ in steps)
    assert sum(r for _, _, r, _ in steps) == pytest.approx(
        float(steps[-1][1].val_score) - float(steps[0][0].val_score), abs=1e-6
    )


def _blobs(seed, k=4, per=40):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, 5)) * 12
    X = np.concatenate([c + rng.normal(size=(per, 5)) for c in centres])
    y = np.repeat(np.arange(k), per) % 2  # labels unrelated to the blobs
    return Task("blobs", X, y.astype(np.int32), ("a", "b"), "test"), np.repeat(np.arange(k), per)


@pytest.mark.parametrize("init", ["random", "centroids"])
def test_label_free_initial_sets_use_no_labels(init):
    task, _ = _blobs(0)
    split = make_split(task, 0, max_pool=100, max_val=30, max_test=30)
    flipped = dataclasses.replace(split, pool_y=1 - split.pool_y)
    env = ActiveLearningEnv(dataclasses.replace(CONFIG, init=init, n_initial=4))
    sets = [
        np.asarray(env.reset(jax.random.key(1), make_params(pad_split(s)))[1].labeled_idx[:4])
        for s in (split, flipped)
    ]
    np.testing.assert_array_equal(*sets)
    assert len(set(sets[0].tolist())) == 4


def test_centroid_start_takes_one_row_of_every_blob():
    task, blob = _blobs(1)
    # here the label is the blob (the start reads no label, so it may say which blob a row is in)
    task = Task("blobs", task.X, blob.astype(np.int32), ("a", "b", "c", "d"), "test")
    split = make_split(task, 0, max_pool=100, max_val=30, max_test=30)
    env_params = make_params(pad_split(split))
    blobs_hit = {}
    for init in ("centroids", "random"):
        env = ActiveLearningEnv(dataclasses.replace(CONFIG, init=init, n_initial=4))
        blobs_hit[init] = [
            len(set(np.asarray(env.reset(jax.random.key(seed), env_params)[1].labeled_y[:4])))
            for seed in range(8)
        ]
    assert blobs_hit["centroids"] == [4] * 8  # one row of every blob, every seed
    assert min(blobs_hit["random"]) < 4  # random starts miss a blob at least once


def test_purity_radius_is_the_largest_pure_radius_by_brute_force():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    cluster = (X[:, 0] > 0).astype(np.int32) + (X[:, 1] > 0.5)
    mask = np.ones(80, bool)
    mask[-5:] = False
    sq = ((X[:, None] - X[None]) ** 2).sum(-1)
    delta = float(purity_radius(jnp.asarray(sq), jnp.asarray(cluster), jnp.asarray(mask), 0.9))
    real = np.flatnonzero(mask)
    dist = np.sqrt(sq[np.ix_(real, real)])
    impure = cluster[real][:, None] != cluster[real][None]

    def purity(r):
        return 1 - np.mean(np.any((dist < r) & impure, axis=1))

    assert purity(delta) >= 0.9 > purity(delta * (1 + 1e-5))


def test_probcover_gains_match_scikit_activemls_greedy_coverage():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(50, 2))
    labeled = np.zeros(50, bool)
    labeled[[3, 17]] = True
    delta = 0.7  # no pair of rows at exactly this distance
    ctx = make_ctx(X, np.full((50, 2), 0.5), labeled)
    sq = ((X[:, None] - X[None]) ** 2).sum(-1)
    memory = {"ball": jnp.asarray(sq < delta**2), "delta": delta}
    ours, _ = _probcover(jax.random.key(0), obs_for(ctx), ctx, memory)
    y = np.where(labeled, 0, np.nan)
    with warnings.catch_warnings():  # one given delta: it warns that it measured no purity
        warnings.simplefilter("ignore", UserWarning)
        _, theirs = ProbCover(deltas=[delta], random_state=0).query(
            X, y, batch_size=1, return_utilities=True
        )
    free = ~labeled
    np.testing.assert_array_equal(np.asarray(ours)[free], theirs[0][free])


def test_dropquery_inconsistency_matches_a_numpy_recount(params):
    env = ActiveLearningEnv(dataclasses.replace(CONFIG, n_candidates=None))
    obs, state = env.reset(jax.random.key(0), params)
    ctx = env.context(state, params)
    key = jax.random.key(5)
    share = np.asarray(dropout_inconsistency(key, ctx))
    keep = np.asarray(
        jax.random.bernoulli(key, 1 - DROPQUERY_RATE, (DROPQUERY_DRAWS, *ctx.cand_X.shape))
    )
    W, b = np.asarray(state.learner["W"]), np.asarray(state.learner["b"])
    k = int(np.sum(np.asarray(params.task.class_mask)))
    X = np.asarray(ctx.cand_X)

    def predicted(Z):
        return np.argmax((Z @ W + b)[:, :k], axis=1)

    changed = [predicted(np.where(m, X / (1 - DROPQUERY_RATE), 0)) != predicted(X) for m in keep]
    np.testing.assert_allclose(share, np.mean(changed, axis=0))
    assert 0 < share.mean() < 1  # dropout at this rate does move some predictions


@pytest.mark.parametrize(("b", "n_inconsistent"), [(3, 7), (6, 2)])
def test_dropquery_members_follow_scikit_activemls_rule(b, n_inconsistent):
    # scikit-activeml: the max(#{share > 1/2}, b) candidates of highest share (no ties here)
    rng = np.random.default_rng(b)
    share = np.concatenate(
        [np.linspace(0.55, 1.0, n_inconsistent), np.linspace(0.0, 0.5, 20 - n_inconsistent)]
    )
    share = rng.permutation(share)
    mask = np.ones(20, bool)
    mask[rng.choice(20, 3, replace=False)] = False
    masked = np.nonzero(mask)[0]
    count = max(int(np.sum(share[mask] > 0.5)), b)
    expected = set(masked[np.argsort(share[mask])[-count:]])
    ours = dropquery_members(jax.random.key(0), jnp.asarray(share), jnp.asarray(mask), b)
    assert set(np.nonzero(np.asarray(ours))[0]) == expected


def _dropquery_blobs_ctx():
    """Three tight, separated blobs and a linear learner that dropout flips in each blob."""
    rng = np.random.default_rng(0)
    # class 1 off the origin; a row with both features dropped predicts class 0
    centres = np.array([[0.0, 0.0], [0.0, 8.0], [-8.0, 0.0]])
    X = np.concatenate([c + 0.3 * rng.normal(size=(25, 2)) for c in centres])
    W = jnp.asarray([[1.0, -1.0], [-1.0, 1.0]], jnp.float32)

    def predict_proba(W, X, class_mask):
        return jax.nn.softmax(X @ W, axis=-1)

    ctx = make_ctx(X, predict_proba(W, jnp.asarray(X, jnp.float32), None), np.zeros(75, bool))
    return X, ctx.replace(learner_params=W, predict_proba=predict_proba)


@pytest.mark.parametrize("b", [1, 3])
def test_a_dropquery_round_takes_the_member_nearest_each_kmeans_centre(b):
    X, ctx = _dropquery_blobs_ctx()
    ctx = ctx.replace(query_batch=b)
    strategy = get_strategy("dropquery")
    score = jax.jit(strategy.score)
    key = jax.random.key(7)
    memory = strategy.init(jax.random.key(0), ctx)
    labeled = np.zeros(75, bool)
    picks = []
    for j in range(b):
        step_ctx = ctx.replace(labeled=jnp.asarray(labeled), round_pos=jnp.int32(j))
        obs = obs_for(step_ctx)
        scores, memory = score(key, obs, step_ctx, memory)
        picks.append(int(select(scores, obs.action_mask, jax.random.key(j))))
        labeled[picks[-1]] = True
    # brute force: the inconsistent rows under the round's dropout key, scikit-learn's
    # k-means on them, the member nearest each centre
    share = np.asarray(dropout_inconsistency(jax.random.split(key, 3)[0], ctx))
    members = np.nonzero(share > 0.5)[0]
    blob = members // 25
    assert len(set(blob)) == 3 and len(members) >= 6  # every blob has members: a real check
    centres = KMeans(b, n_init=10, random_state=0).fit(X[members]).cluster_centers_
    d2 = ((X[members][:, None] - centres[None]) ** 2).sum(-1)
    expected = set(members[np.argmin(d2, axis=0)])
    assert set(picks) == expected
    if b == 3:
        assert sorted(blob[np.isin(members, picks)]) == [0, 1, 2]  # one pick per blob


@pytest.mark.parametrize("spec", ["mlp:steps=20", "ensemble:members=3,steps=20"])
def test_neural_learners_are_padding_invariant_from_their_first_weights(spec):
    learner = make_learner(spec)
    rng = np.random.default_rng(0)
    d, k, pad_d, pad_k = 4, 3, 3, 2
    X = rng.normal(size=(40, d)).astype(np.float32)
    y = rng.integers(0, k, 40)
    w = (np.arange(40) < 25).astype(np.float32)
    Xp = np.concatenate([X, np.zeros((40, pad_d), np.float32)], axis=1)
    key = jax.random.key(3)

    def run(X, d_all, k_all, feature_mask):
        class_mask = jnp.arange(k_all) < k
        params = learner.init(key, d_all, k_all, feature_mask)
        params = jax.jit(learner.fit)(params, X, jnp.asarray(y), jnp.asarray(w), class_mask)
        return np.asarray(learner.predict_proba(params, X, class_mask))[:, :k]

    plain = run(X, d, k, jnp.ones(d, bool))
    padded = run(Xp, d + pad_d, k + pad_k, jnp.arange(d + pad_d) < d)
    np.testing.assert_allclose(padded, plain, rtol=1e-5, atol=1e-6)
    assert plain.std() > 0.01  # the fit moved away from uniform predictions


def test_bad_batch_and_init_settings_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"query_batch \(12\) exceeds the budget \(10\)"):
        EnvConfig(budget=10, query_batch=12)
    with pytest.raises(ValueError, match="unknown init 'kmeans'"):
        EnvConfig(init="kmeans")
    with pytest.raises(ValueError, match="query_batch must be a positive count"):
        EnvConfig(query_batch=0)


def test_evaluates_init_flag_names_the_method_and_points_a_size_to_n_initial():
    import argparse

    from metaal.experiments.evaluate import _init_method

    assert _init_method("centroids") == "centroids"
    with pytest.raises(argparse.ArgumentTypeError, match="its size is --n-initial 5"):
        _init_method("5")
    with pytest.raises(argparse.ArgumentTypeError, match="choose one of stratified, random"):
        _init_method("kmeans")


# --- TypiClust inside batch rounds ---------------------------------------------------------


def _typiclust_rounds(config, params):
    """Picks of TypiClust run in the env (as `metaal evaluate` runs it) and its clusters."""
    env = make_env(config)
    strategy = get_strategy("typiclust")
    _, state = env.reset(jax.random.key(0), params)
    cluster = strategy.init(jax.random.key(1), env.context(state, params))

    @jax.jit
    def step(key, state):
        k_score, k_select, k_env = jax.random.split(key, 3)
        obs = env.observe(state, params)
        scores, _ = strategy.score(k_score, obs, env.context(state, params), cluster)
        action = select(scores, obs.action_mask, k_select)
        _, after, _, _, _, info = env.step_env(k_env, state, action, params)
        return after, info

    states, picks, refits = [state], [], []
    for t in range(config.budget):
        state, info = step(jax.random.key(10 + t), state)
        states.append(state)
        picks.append(int(info["pool_index"]))
        refits.append(bool(info["refit"]))
    return np.asarray(cluster), states, picks, refits


def test_typiclust_spreads_a_batch_rounds_picks_over_the_largest_unlabelled_clusters():
    # 10 far-apart blobs of distinct sizes: k-means with budget = 10 clusters finds the blobs
    rng = np.random.default_rng(5)
    sizes = np.array([30, 27, 24, 21, 18, 15, 12, 10, 8, 6])
    centres = rng.normal(size=(10, 4)) * 40
    X = np.concatenate([c + rng.normal(size=(m, 4)) for c, m in zip(centres, sizes, strict=True)])
    y = (np.repeat(np.arange(10), sizes) % 2).astype(np.int32)
    split = make_split(
        Task("blobs", X, y, ("a", "b"), "test"), 0, max_pool=131, max_val=20, max_test=20
    )
    params = make_params(pad_split(split))
    b = 4
    config = EnvConfig(budget=10, n_initial=3, n_candidates=None, probe_size=8, query_batch=b)
    cluster, states, picks, refits = _typiclust_rounds(config, params)
    n = len(split.pool_y)
    pool = split.pool_X

    # the clusters: an independent k-means (scikit-learn, 10 restarts) of the pool into budget
    # clusters gives the same partition
    theirs = KMeans(config.budget, n_init=10, random_state=0).fit_predict(pool)
    ours = cluster[:n]
    assert len(set(ours.tolist())) == config.budget
    pairs = set(zip(ours.tolist(), theirs.tolist(), strict=True))
    assert len(pairs) == config.budget  # a bijection between the two labellings

    # every pick: the most typical row (numpy pool density) of the cluster with the fewest
    # labels (the round's earlier picks included), ties to the largest; the whole pool is offered
    density = pool_density(pool)
    size = np.bincount(ours, minlength=config.budget)
    for t, pick in enumerate(picks):
        labeled = np.asarray(states[t].labeled)[:n]
        labels = np.bincount(ours[labeled], minlength=config.budget)
        open_ = np.bincount(ours[~labeled], minlength=config.budget) > 0
        key = np.where(open_, labels * (n + 1) - size, np.iinfo(np.int64).max)
        targets = np.flatnonzero(key == key.min())  # equal sizes tie: any of them
        assert ours[pick] in targets, t
        members = np.flatnonzero((ours == ours[pick]) & ~labeled)
        assert pick == members[np.argmax(density[members])], t

    # hence the b picks of a round go to b distinct clusters, the largest ones without a label
    assert refits == [(t + 1) % b == 0 or t + 1 == config.budget for t in range(config.budget)]
    initial = np.asarray(states[0].labeled_idx)[: config.n_initial]
    unlabelled = np.setdiff1d(np.arange(config.budget), ours[initial])
    by_size = np.sort(size[unlabelled])[::-1]
    assert len(unlabelled) >= b + 1  # enough for the first round and part of the second
    rounds = [picks[:b], picks[b : 2 * b], picks[2 * b :]]
    for r in rounds:
        assert len(set(ours[r].tolist())) == len(r)  # distinct clusters within every round
    np.testing.assert_array_equal(size[ours[rounds[0]]], by_size[:b])
    rest = min(len(unlabelled) - b, b)  # the second round takes the uncovered rest first
    np.testing.assert_array_equal(size[ours[rounds[1][:rest]]], by_size[b : b + rest])
    covered = np.concatenate([ours[initial], ours[picks]])
    assert len(set(covered.tolist())) == config.budget  # every cluster got a label
