"""Observation features against brute-force and scikit-learn peers."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import pairwise_distances

from metaal import features
from metaal.data import load_task, make_split, pad_split
from metaal.envs.core import ActiveLearningEnv, EnvConfig, make_params
from metaal.policy_net import trained_features
from metaal.strategies.learned import LearnedStrategy


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
    col = features.DEFAULT_CANDIDATE_FEATURES.index("dist_labeled")
    cand = np.asarray(state.candidates)
    scaled = expect[cand] / np.sqrt(2 * X.shape[1])
    mask = np.asarray(obs.action_mask)
    np.testing.assert_allclose(np.asarray(obs.candidates[:, col])[mask], scaled[mask], atol=1e-5)


def test_the_feature_table_drives_the_columns_and_their_bounds():
    names = features.candidate_feature_names()
    assert names == features.DEFAULT_CANDIDATE_FEATURES and len(names) == 26
    assert names[:10] == features.BUILTIN_FEATURES
    assert features.BUILTIN_FEATURES[-2:] == ("round_similarity", "round_progress")
    assert [n for n in names if n.startswith("rank_")] == [
        "rank_entropy", "rank_margin", "rank_dist_labeled", "rank_density", "rank_egl",
        "rank_disagreement", "rank_round_similarity",
    ]  # fmt: skip
    assert "z_round_progress" not in names and "rank_round_progress" not in names
    # policy files without a feature list read the 22 columns of the table before the round
    # features, in their order of then
    legacy = features.LEGACY_CANDIDATE_FEATURES
    assert len(legacy) == 22 and set(legacy) < set(names)
    assert not any("round" in n for n in legacy)
    assert trained_features({}) == legacy
    low, high = features.column_bounds(names, 17)
    assert high[names.index("dist_labeled")] == np.inf and low[names.index("egl")] == 0.0
    assert high[names.index("z_margin")] == np.float32(np.sqrt(17))
    assert (low[names.index("rank_egl")], high[names.index("rank_egl")]) == (0.0, 1.0)
    with pytest.raises(ValueError, match="unknown candidate feature column 'nope'"):
        features.column_bounds(("nope",), 4)
    with pytest.raises(ValueError, match="prefixes z_ and rank_"):
        features.register_feature(features.CandidateFeature("z_x", lambda s: s.cand_density, 0, 1))
    with pytest.raises(ValueError, match="already registered"):
        features.register_feature(
            features.CandidateFeature("margin", lambda s: s.cand_density, 0, 1)
        )


def _query_default(X, y):
    policy = LearnedStrategy.load("default")
    return policy.query(X, y, batch_size=4, return_utilities=True)


def test_registering_a_feature_leaves_the_default_policy_scoring_exactly_as_before():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(90, 5))
    y = np.full(90, np.nan)
    y[:8] = rng.integers(0, 3, size=8)
    split = make_split(load_task("keel/wine"), 0, max_pool=120, max_val=40, max_test=40)
    params = make_params(pad_split(split))
    config = EnvConfig(budget=6, n_initial=3, n_candidates=16, probe_size=32)
    policy = LearnedStrategy.load("default")

    def env_scores():
        # as `metaal evaluate` runs a policy: its env computes the columns it was trained on
        env = ActiveLearningEnv(dataclasses.replace(config, features=policy.to_strategy().features))
        everything = ActiveLearningEnv(config).reset(jax.random.key(0), params)[0]
        obs, state = env.reset(jax.random.key(0), params)
        obs, *_ = env.step(jax.random.key(1), state, 2, params)
        return everything, np.asarray(jax.jit(policy.apply)(policy.params, obs))

    picks, utilities = _query_default(X, y)
    obs, scores = env_scores()
    # the default policy reads the columns of the table it was trained with, which has grown since
    assert policy.to_strategy().features == features.LEGACY_CANDIDATE_FEATURES
    assert obs.features == features.DEFAULT_CANDIDATE_FEATURES
    feature = features.CandidateFeature(
        "sq_dist", lambda s: s.cand_dist_labeled**2, 0.0, np.inf, rank=False
    )
    features.register_feature(feature)
    try:
        picks_after, utilities_after = _query_default(X, y)
        obs_after, scores_after = env_scores()
    finally:
        features.unregister_feature("sq_dist")
    # the new feature is really computed: a raw and a z-score column more
    assert len(obs_after.features) == len(obs.features) + 2
    assert "sq_dist" in obs_after.features and "z_sq_dist" in obs_after.features
    dist = np.asarray(obs_after.column("dist_labeled")) * np.sqrt(2 * split.pool_X.shape[1])
    mask = np.asarray(obs_after.action_mask)
    np.testing.assert_allclose(
        np.asarray(obs_after.column("sq_dist"))[mask], dist[mask] ** 2, rtol=1e-4
    )
    # ... and the saved policy reads exactly the columns it was trained on
    np.testing.assert_array_equal(obs_after.columns(obs.features), obs.candidates)
    np.testing.assert_array_equal(scores_after, scores)
    np.testing.assert_array_equal(picks_after, picks)
    np.testing.assert_array_equal(utilities_after, utilities)
