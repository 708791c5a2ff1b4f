"""Observation features against brute-force and scikit-learn peers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from envs.core import ActiveLearningEnv, EnvConfig, make_params
from metaal import features
from metaal.data import load_task, make_split, pad_split


@pytest.mark.parametrize("n_labeled", [1, 2, 7, 30])
def test_inserting_labels_one_by_one_keeps_the_k_nearest_as_sklearn_finds_them(n_labeled):
    rng = np.random.default_rng(n_labeled)
    pool = rng.normal(size=(60, 5)).astype(np.float32)
    order = rng.permutation(60)[:n_labeled]  # labelling order
    k = features.KNN
    near_dist = jnp.full((k, 60), jnp.inf)
    near_slot = jnp.zeros((k, 60), jnp.int32)
    for slot, i in enumerate(order):
        dist = jnp.sqrt(features.squared_distances(jnp.asarray(pool.T), jnp.asarray(pool[i])))
        near_dist, near_slot = features.insert_neighbour(near_dist, near_slot, dist, slot)

    m = min(k, n_labeled)
    nn = NearestNeighbors(n_neighbors=m).fit(pool[order])
    expect_dist, expect_slot = nn.kneighbors(pool)
    np.testing.assert_array_equal(np.asarray(near_slot).T[:, :m], expect_slot)
    np.testing.assert_allclose(np.asarray(near_dist).T[:, :m], expect_dist, atol=1e-5)
    assert np.all(np.isinf(np.asarray(near_dist).T[:, m:]))


def test_a_tie_keeps_the_earlier_labelled_sample_first():
    near_dist, near_slot = features.insert_neighbour(
        jnp.asarray([[1.0], [2.0], [jnp.inf]]), jnp.asarray([[0], [1], [0]]), jnp.asarray([1.0]), 2
    )
    np.testing.assert_array_equal(np.asarray(near_slot)[:, 0], [0, 2, 1])
    np.testing.assert_array_equal(np.asarray(near_dist)[:, 0], [1.0, 1.0, 2.0])


def test_neighbourhood_shares_count_only_valid_neighbours():
    neighbours = features.Neighbours(
        y=jnp.asarray([[1, 1, 0], [0, 1, 1]]),
        wrong=jnp.asarray([[True, False, False], [False, True, True]]),
        valid=jnp.asarray([[True, True, True], [True, True, False]]),
    )
    near = features.neighbourhood(neighbours, jnp.asarray([0, 0]))
    np.testing.assert_allclose(np.asarray(near["knn_disagreement"]), [2 / 3, 1 / 2])
    np.testing.assert_allclose(np.asarray(near["knn_error"]), [1 / 3, 1 / 2])


def test_env_neighbour_features_match_a_brute_force_knn():
    split = make_split(load_task("keel/wine"), 0, max_pool=120, max_val=40, max_test=40)
    params = make_params(pad_split(split))
    env = ActiveLearningEnv(EnvConfig(budget=12, n_initial=3, n_candidates=16, probe_size=8))
    obs, state = env.reset(jax.random.key(0), params)
    for t in range(12):
        action = t % 16
        obs, state, *_ = env.step(jax.random.key(t + 1), state, action, params)
    col = features.CANDIDATE_FEATURES.index
    n_lab = int(state.n_labeled)
    lab = np.asarray(state.labeled_idx)[:n_lab]
    X, y = split.pool_X, split.pool_y
    cand = np.asarray(state.candidates)
    nearest = NearestNeighbors(n_neighbors=features.KNN).fit(X[lab]).kneighbors(X[cand])[1]
    probs = env.learner_step.predict_proba(state.learner, jnp.asarray(X), jnp.ones(3, bool))
    predicted = np.asarray(jnp.argmax(probs, axis=-1))
    near_y = y[lab][nearest]
    disagree = (near_y != predicted[cand][:, None]).mean(axis=1)
    error = (near_y != predicted[lab][nearest]).mean(axis=1)
    mask = np.asarray(obs.action_mask)
    np.testing.assert_allclose(
        np.asarray(obs.candidates[:, col("knn_disagreement")])[mask], disagree[mask], atol=1e-6
    )
    np.testing.assert_allclose(
        np.asarray(obs.candidates[:, col("knn_error")])[mask], error[mask], atol=1e-6
    )
    dist = np.asarray(state.dist_labeled)
    expect = NearestNeighbors(n_neighbors=1).fit(X[lab]).kneighbors(X)[0][:, 0]
    np.testing.assert_allclose(dist[: len(y)], expect, atol=1e-4)
