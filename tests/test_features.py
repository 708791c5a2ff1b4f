"""Observation features against brute-force and scikit-learn peers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.metrics import pairwise_distances

from envs.core import ActiveLearningEnv, EnvConfig, make_params
from metaal import features
from metaal.data import load_task, make_split, pad_split


def test_squared_distances_match_sklearn_and_tie_exactly_for_duplicates():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 7)).astype(np.float32)
    X[5] = X[9]  # a duplicate row
    sq = np.asarray(features.squared_distances(jnp.asarray(X.T), jnp.asarray(X[3])))
    np.testing.assert_allclose(np.sqrt(sq), pairwise_distances(X, X[3:4])[:, 0], atol=1e-5)
    assert sq[5] == sq[9] and sq[3] == 0.0
    padded = np.concatenate([X, np.zeros((40, 5), np.float32)], axis=1)
    sq_padded = features.squared_distances(jnp.asarray(padded.T), jnp.asarray(padded[3]))
    np.testing.assert_array_equal(np.asarray(sq_padded), sq)  # zero features change nothing


def test_env_distance_to_the_labelled_set_matches_a_brute_force():
    split = make_split(load_task("keel/wine"), 0, max_pool=120, max_val=40, max_test=40)
    params = make_params(pad_split(split))
    env = ActiveLearningEnv(EnvConfig(budget=12, n_initial=3, n_candidates=16, probe_size=8))
    obs, state = env.reset(jax.random.key(0), params)
    for t in range(12):
        obs, state, *_ = env.step(jax.random.key(t + 1), state, t % 16, params)
    lab = np.asarray(state.labeled_idx)[: int(state.n_labeled)]
    X = split.pool_X
    expect = pairwise_distances(X, X[lab]).min(axis=1)
    np.testing.assert_allclose(np.asarray(state.dist_labeled)[: len(X)], expect, atol=1e-4)
    col = features.CANDIDATE_FEATURES.index("dist_labeled")
    cand = np.asarray(state.candidates)
    scaled = expect[cand] / np.sqrt(2 * X.shape[1])
    mask = np.asarray(obs.action_mask)
    np.testing.assert_allclose(np.asarray(obs.candidates[:, col])[mask], scaled[mask], atol=1e-5)
