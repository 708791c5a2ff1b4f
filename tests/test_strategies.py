"""Tests for metaal.strategies: registry, each heuristic's choice, the query adapter and its peers.

Scores are checked on hand-built `Context`s (no env, cheap to compile); the
scikit-activeml peer checks go through `QueryStrategy`, the adapter.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skactiveml.base import SkactivemlClassifier
from skactiveml.pool import CoreSet, UncertaintySampling

from metaal import features
from metaal.policy_net import linear_params, linear_scorer
from metaal.strategies import HEURISTICS, STRATEGIES, Context, get_strategy, select
from metaal.strategies.adapter import QueryStrategy, standardise
from metaal.strategies.hybrid import ALBL_DELTA, ALBL_EXPERTS, _albl_constants
from metaal.strategies.learned import LearnedStrategy
from metaal.strategies.reference import ORACLE_CANDIDATES


def make_ctx(X, probs, labeled, member=None, labels=None, budget=10, lookahead=None, density=None):
    """A Context where every pool row is a candidate."""
    X = jnp.asarray(X, jnp.float32)
    n, d = X.shape
    probs = jnp.asarray(probs, jnp.float32)
    labeled = jnp.asarray(labeled, bool)
    lab_rows = np.nonzero(np.asarray(labeled))[0]
    dist = jnp.min(
        jnp.linalg.norm(X[:, None] - X[None], axis=-1), axis=1, where=labeled, initial=jnp.inf
    )
    labels = jnp.where(labeled, 0, -1) if labels is None else jnp.asarray(labels)
    return Context(
        cand_X=X,
        cand_probs=probs,
        cand_member_probs=probs[None] if member is None else jnp.asarray(member, jnp.float32),
        cand_index=jnp.arange(n, dtype=jnp.int32),
        pool_X=X,
        pool_mask=jnp.ones(n, bool),
        labeled=labeled,
        pool_probs=probs,
        labels=labels,
        labeled_idx=jnp.zeros(n, jnp.int32).at[: len(lab_rows)].set(lab_rows),
        n_labeled=jnp.int32(len(lab_rows)),
        dist_labeled=dist,
        density=features.pool_density(X, jnp.ones(n, bool)) if density is None else density,
        class_mask=jnp.ones(probs.shape[1], bool),
        feature_mask=jnp.ones(d, bool),
        step=jnp.int32(0),
        budget=budget,
        lookahead=lookahead,
    )


def obs_for(ctx):
    return features.Observation(
        state=jnp.zeros(0), candidates=jnp.zeros((ctx.cand_X.shape[0], 0)), action_mask=~ctx.labeled
    )


def pick(name, ctx, key=0, memory=None):
    strategy = get_strategy(name)
    k_init, k_score, k_select = jax.random.split(jax.random.key(key), 3)
    memory = strategy.init(k_init, ctx) if memory is None else memory
    obs = obs_for(ctx)
    scores, memory = jax.jit(strategy.score)(k_score, obs, ctx, memory)
    return int(select(scores, obs.action_mask, k_select)), scores, memory


@pytest.fixture(scope="module")
def blobs():
    """Three separated 2-D blobs of 30, 20 and 10 points; one labelled point in the first."""
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    X = np.concatenate(
        [c + 0.5 * rng.normal(size=(m, 2)) for c, m in zip(centres, (30, 20, 10), strict=True)]
    )
    labeled = np.zeros(len(X), bool)
    labeled[0] = True
    probs = np.full((len(X), 2), 0.5)
    return X.astype(np.float32), probs, labeled


# --- registry --------------------------------------------------------------------------


def test_registry_and_unknown_name():
    assert set(HEURISTICS) == set(STRATEGIES) - {"oracle"}
    assert len(HEURISTICS) == 16
    assert not STRATEGIES["oracle"].deployable
    assert STRATEGIES["bald"].learner == "ensemble"
    with pytest.raises(ValueError, match="unknown strategy 'marginn'.*margin.*coreset"):
        get_strategy("marginn")


# --- heuristics on hand-built contexts ------------------------------------------------


def test_uncertainty_scores_pick_the_expected_candidate():
    X = np.eye(4, 2)
    labeled = [True, False, False, False]
    probs = np.array([[0.9, 0.05, 0.05], [0.5, 0.45, 0.05], [0.4, 0.3, 0.3], [0.34, 0.33, 0.33]])
    ctx = make_ctx(X, probs, labeled)
    # row 3 is the most uncertain by every measure
    for name in ("margin", "entropy", "least_confidence"):
        assert pick(name, ctx)[0] == 3
    probs[3] = [0.6, 0.1, 0.3]
    ctx = make_ctx(X, probs, labeled)
    assert pick("margin", ctx)[0] == 1  # smallest top-2 gap: 0.05
    assert pick("least_confidence", ctx)[0] == 2  # lowest top probability: 0.4
    assert pick("entropy", ctx)[0] == 2  # flattest distribution


def test_bald_picks_disagreement_and_degenerates_without_ensemble():
    member = np.array(
        [
            [[0.5, 0.5], [0.9, 0.1], [0.5, 0.5]],
            [[0.5, 0.5], [0.1, 0.9], [0.5, 0.5]],
        ]
    )
    ctx = make_ctx(np.eye(3, 2), member.mean(axis=0), [False, False, False], member=member)
    ctx = ctx.replace(labeled_idx=jnp.zeros(3, jnp.int32), n_labeled=jnp.int32(0))
    assert pick("bald", ctx)[0] == 1  # the members disagree only on row 1
    single = make_ctx(np.eye(3, 2), member.mean(axis=0), [False, False, False])
    _, scores, _ = pick("bald", single)
    np.testing.assert_allclose(scores, 0.0, atol=1e-7)


def test_coreset_density_info_density_and_egl(blobs):
    X, probs, labeled = blobs
    ctx = make_ctx(X, probs, labeled)
    dist = np.linalg.norm(X - X[0], axis=1)
    assert pick("coreset", ctx)[0] == int(np.argmax(np.where(labeled, -1, dist)))
    dens = np.asarray(ctx.density)
    assert pick("density", ctx)[0] == int(np.argmax(np.where(labeled, -1, dens)))
    # info density with equal uncertainty everywhere = density
    assert pick("info_density", ctx)[0] == pick("density", ctx)[0]
    _, scores, _ = pick("egl", ctx)
    expected = features.expected_gradient_length(ctx.cand_probs, ctx.cand_X, jnp.float32(2))
    np.testing.assert_allclose(scores, expected, rtol=1e-6)


def test_typiclust_queries_the_largest_unlabelled_cluster(blobs):
    X, probs, labeled = blobs
    ctx = make_ctx(X, probs, labeled, budget=3)  # 3 clusters: the 3 blobs
    first, scores, memory = pick("typiclust", ctx)
    assert 30 <= first < 50  # blob 2 (20 points) is the largest without labels
    blob2 = np.arange(30, 50)
    assert first == blob2[np.argmax(np.asarray(ctx.density)[blob2])]  # its most typical point
    labeled2 = labeled.copy()
    labeled2[first] = True
    second, _, _ = pick("typiclust", make_ctx(X, probs, labeled2, budget=3), memory=memory)
    assert second >= 50  # then blob 3, the only cluster left without a label


def test_badge_samples_proportional_to_squared_gradient_distance():
    # One labelled row; candidates' gradient embeddings differ only by their x scale.
    X = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 0.0]], np.float32)
    probs = np.array([[0.8, 0.2]] * 4, np.float32)
    ctx = make_ctx(X, probs, [True, False, False, False])
    # a = p - e_yhat = (-0.2, 0.2) for all; x~ = [x, 1]; D^2 to row 0 = ||a||^2 ||x_c - x_0||^2
    d2 = 0.08 * np.array([0.0, 1.0, 4.0, 0.0])
    strategy = get_strategy("badge")
    keys = jax.random.split(jax.random.key(0), 4000)
    mask = jnp.array([False, True, True, True])

    def draw(key):
        k1, k2 = jax.random.split(key)
        scores, _ = strategy.score(k1, obs_for(ctx), ctx, ())
        return select(scores, mask, k2)

    counts = np.bincount(np.asarray(jax.vmap(draw)(keys)), minlength=4)
    assert counts[0] == 0 and counts[3] == 0  # zero distance: never drawn
    np.testing.assert_allclose(counts / counts.sum(), d2 / d2.sum(), atol=0.03)


def test_albl_exp4p_update_matches_libact_formula(blobs):
    X, _, labeled = blobs
    n = len(X)
    probs = np.tile([[0.7, 0.3]], (n, 1))  # predicts class 0 everywhere
    labels = np.where(labeled, 0, -1)
    labels[5] = 0  # row 5 was queried and is predicted right
    lab = labeled.copy()
    lab[5] = True
    ctx = make_ctx(X, probs, lab, labels=labels, budget=100)
    strategy = get_strategy("albl")
    memory = strategy.init(jax.random.key(0), ctx)
    k, p_min, explore = _albl_constants(ctx)
    assert k == len(ALBL_EXPERTS) + 1
    assert p_min == pytest.approx(np.sqrt(np.log(k) / (k * 100)))
    assert explore == pytest.approx(np.sqrt(np.log(k / ALBL_DELTA) / (k * 100)))
    assert _albl_constants(ctx.replace(budget=5))[1] == pytest.approx(0.5 / k)  # capped
    last_p = np.array([0.4, 0.15, 0.15, 0.15, 0.15])
    advice = np.array([1.0, 0.0, 1.0, 0.0, 1.0 / 59])
    memory = memory | {
        "queried": memory["queried"].at[0].set(5),
        "inv_prob": memory["inv_prob"].at[0].set(2.5),
        "n_queried": jnp.int32(1),
        "last_advice": jnp.asarray(advice, jnp.float32),
        "last_prob": jnp.float32(0.4),
        "last_p": jnp.asarray(last_p, jnp.float32),
    }
    _, _, new = pick("albl", ctx, memory=memory)
    reward = 2.5 / (n * 100)  # importance-weighted accuracy: one right, weight 1 / 0.4
    expected = p_min / 2 * (reward * advice / 0.4 + explore / last_p)
    np.testing.assert_allclose(new["log_w"], expected - expected.max(), rtol=1e-5, atol=1e-7)
    assert int(new["n_queried"]) == 2
    # the new query is recorded with the inverse of the probability it was drawn with
    assert 1.0 <= float(new["inv_prob"][1]) <= n / p_min


def test_oracle_takes_the_best_lookahead_in_its_subset():
    n = 100
    X = np.zeros((n, 2))
    probs = np.full((n, 2), 0.5)
    ctx = make_ctx(X, probs, np.arange(n) == 0, lookahead=lambda a: -jnp.abs(a - 7.0))
    chosen, scores, _ = pick("oracle", ctx)
    finite = np.isfinite(np.asarray(scores))
    assert finite.sum() == ORACLE_CANDIDATES  # looked ahead over a random subset only
    assert chosen == np.flatnonzero(finite)[np.argmax(np.asarray(scores)[finite])]
    small = make_ctx(X[:20], probs[:20], np.arange(20) == 0, lookahead=lambda a: -jnp.abs(a - 7.0))
    assert pick("oracle", small)[0] == 7  # every candidate seen when C <= 32


# --- the query adapter against scikit-activeml -----------------------------------------


class FixedProbabilities(SkactivemlClassifier):
    """A fitted classifier whose predict_proba returns stored probabilities for stored rows."""

    def __init__(self, X=None, probs=None, classes=None, missing_label=np.nan):
        super().__init__(classes=classes, missing_label=missing_label)
        self.X = X
        self.probs = probs
        self.classes_ = np.asarray(classes)
        self._row = {row.tobytes(): i for i, row in enumerate(np.asarray(X))}

    def fit(self, X, y, sample_weight=None):
        return self

    def predict_proba(self, X):
        return self.probs[[self._row[row.tobytes()] for row in np.asarray(X)]]


@pytest.fixture(scope="module")
def peer_data():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 4))
    X = (X - X.mean(axis=0)) / X.std(axis=0)  # already standardised: our scaling is a no-op
    y = np.full(60, np.nan)
    y[:6] = [0, 1, 2, 0, 1, 2]
    probs = rng.dirichlet(np.ones(3), size=60).astype(np.float32).astype(np.float64)
    clf = FixedProbabilities(X, probs, classes=[0, 1, 2])
    return X, y, clf


@pytest.mark.parametrize(
    "ours, theirs",
    [
        ("margin", "margin_sampling"),
        ("entropy", "entropy"),
        ("least_confidence", "least_confident"),
    ],
)
def test_uncertainty_agrees_with_scikit_activeml(peer_data, ours, theirs):
    X, y, clf = peer_data
    qs = QueryStrategy(ours, random_state=0)
    peer = UncertaintySampling(method=theirs, random_state=0)
    for batch in (1, 5):
        idx, util = qs.query(X, y, clf=clf, batch_size=batch, return_utilities=True)
        p_idx, p_util = peer.query(
            X, y, clf=clf, fit_clf=False, batch_size=batch, return_utilities=True
        )
        np.testing.assert_array_equal(idx, p_idx)
        assert util.shape == p_util.shape == (batch, len(X))
        np.testing.assert_array_equal(np.isnan(util), np.isnan(p_util))
        ok = ~np.isnan(util[0])
        # same ordering of the utilities (ours are monotone transforms of theirs)
        np.testing.assert_array_equal(np.argsort(util[0][ok]), np.argsort(p_util[0][ok]))


def test_coreset_agrees_with_scikit_activeml(peer_data):
    X, y, _ = peer_data
    idx, util = QueryStrategy("coreset", random_state=0).query(
        X, y, batch_size=6, return_utilities=True
    )
    p_idx, p_util = CoreSet(random_state=0).query(X, y, batch_size=6, return_utilities=True)
    np.testing.assert_array_equal(idx, p_idx)
    np.testing.assert_array_equal(np.isnan(util), np.isnan(p_util))
    np.testing.assert_allclose(util, p_util, rtol=1e-4, atol=1e-5)


def test_adapter_contract_candidates_nan_and_errors(peer_data):
    X, y, _ = peer_data
    qs = QueryStrategy("badge", random_state=1)
    idx, util = qs.query(X, y, candidates=np.arange(10, 30), batch_size=4, return_utilities=True)
    assert len(set(idx.tolist())) == 4 and all(10 <= i < 30 for i in idx)
    for b in range(4):
        selectable = np.zeros(len(X), bool)
        selectable[10:30] = True
        selectable[idx[:b]] = False
        np.testing.assert_array_equal(~np.isnan(util[b]), selectable)
    # same random_state, same answer
    again = QueryStrategy("badge", random_state=1).query(
        X, y, candidates=np.arange(10, 30), batch_size=4
    )
    np.testing.assert_array_equal(idx, again)
    with pytest.raises(ValueError, match="batch_size 60 exceeds the 54 selectable"):
        qs.query(X, y, batch_size=60)
    with pytest.raises(ValueError, match="row indices"):
        qs.query(X, y, candidates=X[:3])
    with pytest.raises(ValueError, match="only runs inside the environment"):
        QueryStrategy("oracle")


def test_adapter_runs_a_learned_policy_like_its_heuristic(peer_data):
    X, y, _ = peer_data
    # a linear policy scoring -margin is margin sampling read from the observation
    policy = LearnedStrategy(
        linear_scorer({}), linear_params({"margin": -1.0}), {"scorer": "x:y"}
    ).to_strategy()
    ours = QueryStrategy(policy, random_state=0).query(X, y, batch_size=3)
    margin = QueryStrategy("margin", random_state=0).query(X, y, batch_size=3)
    np.testing.assert_array_equal(ours, margin)


def test_standardise_matches_split_scaling():
    X = np.array([[1.0, 5.0], [np.nan, 5.0], [3.0, 5.0]])
    Z = standardise(X)
    # the median 2 is imputed; std (ddof 0) of 1, 2, 3 is sqrt(2/3)
    np.testing.assert_allclose(Z[:, 0], [-np.sqrt(1.5), 0.0, np.sqrt(1.5)], rtol=1e-6)
    np.testing.assert_allclose(Z[:, 1], 0.0)  # constant column


# --- learned policies: files ------------------------------------------------------------


def test_learned_policy_save_load_roundtrip(tmp_path):
    params = linear_params({"margin": -1.0, "z_density": 0.5})
    policy = LearnedStrategy(
        linear_scorer({}),
        params,
        {"scorer": "metaal.strategies.learned:linear_scorer", "probe_size": 16},
    )
    path = policy.save(tmp_path / "p.msgpack")
    back = LearnedStrategy.load(path)
    assert back.config == policy.config and back.probe_size == 16
    np.testing.assert_array_equal(back.params["w"], params["w"])
    obs = features.Observation(
        state=jnp.zeros(3),
        candidates=jax.random.normal(
            jax.random.key(0), (5, len(features.DEFAULT_CANDIDATE_FEATURES))
        ),
        action_mask=jnp.ones(5, bool),
    )
    np.testing.assert_allclose(back.apply(back.params, obs), policy.apply(params, obs))
    bad = LearnedStrategy(policy.apply, params, {"scorer": "os:system"})
    with pytest.raises(ValueError, match="inside one of"):
        bad.save(tmp_path / "bad.msgpack")
    (tmp_path / "junk.msgpack").write_bytes(b"not a policy")
    with pytest.raises(ValueError, match="not a metaal policy file"):
        LearnedStrategy.load(tmp_path / "junk.msgpack")


def test_ensemble_averages_standardised_member_scores_and_survives_a_file(tmp_path):
    config = {"scorer": "metaal.strategies.learned:linear_scorer"}
    a = LearnedStrategy(linear_scorer({}), linear_params({"margin": -1.0}), config)
    # b scores by density at 10x the scale: standardising keeps it from drowning a
    b = LearnedStrategy(linear_scorer({}), linear_params({"density": 10.0}), config)
    both = LearnedStrategy.ensemble([a, b])
    obs = features.Observation(
        state=jnp.zeros(3),
        candidates=jax.random.normal(
            jax.random.key(1), (6, len(features.DEFAULT_CANDIDATE_FEATURES))
        ),
        action_mask=jnp.asarray([True, True, True, True, True, False]),
    )

    def z(s):
        s = np.asarray(s)[:5]
        return (s - s.mean()) / (s.std() + 1e-6)

    expect = (z(a.apply(a.params, obs)) + z(b.apply(b.params, obs))) / 2
    scores = np.asarray(both.apply(both.params, obs))
    np.testing.assert_allclose(scores[:5], expect, rtol=1e-5, atol=1e-5)
    assert scores[5] <= -1e8  # masked stays masked
    back = LearnedStrategy.load(both.save(tmp_path / "ens.msgpack"))
    np.testing.assert_allclose(np.asarray(back.apply(back.params, obs)), scores, rtol=1e-6)
    assert [m["scorer"] for m in back.config["members"]] == [config["scorer"]] * 2
    net = {"scorer": "metaal.policy_net:candidate_scorer", "network": {"hidden": [4]}}
    with pytest.raises(ValueError, match="must share scorer"):
        LearnedStrategy.ensemble([a, LearnedStrategy(linear_scorer({}), a.params, net)])


def test_a_shortlist_lets_a_policy_or_vote_rerank_only_margins_most_uncertain(tmp_path):
    config = {"scorer": "metaal.strategies.learned:linear_scorer"}
    a = LearnedStrategy(linear_scorer({}), linear_params({"density": 1.0}), config)
    b = LearnedStrategy(linear_scorer({}), linear_params({"dist_labeled": 1.0}), config)
    candidates = jax.random.normal(jax.random.key(2), (6, len(features.DEFAULT_CANDIDATE_FEATURES)))
    # margin ranks of the 5 valid candidates, as the env writes them: rank / (n_valid - 1)
    ranks = jnp.asarray([3.0, 0.0, 4.0, 1.0, 2.0, 0.0]) / 4
    candidates = candidates.at[:, features.DEFAULT_CANDIDATE_FEATURES.index("rank_margin")].set(
        ranks
    )
    mask = jnp.asarray([True, True, True, True, True, False])
    obs = features.Observation(state=jnp.zeros(3), candidates=candidates, action_mask=mask)
    in_shortlist = np.array([False, True, False, True, False, False])  # margin ranks 0 and 1

    single = a.with_shortlist(2)
    scores = np.asarray(single.apply(single.params, obs))
    np.testing.assert_allclose(
        scores[in_shortlist], np.asarray(a.apply(a.params, obs))[in_shortlist]
    )
    assert np.all(scores[~in_shortlist] <= -1e8)

    vote = LearnedStrategy.ensemble([a, b]).with_shortlist(2)
    back = LearnedStrategy.load(vote.save(tmp_path / "vote.msgpack"))
    assert back.config["shortlist"] == 2
    scores = np.asarray(back.apply(back.params, obs))
    assert np.all(scores[~in_shortlist] <= -1e8) and np.all(scores[in_shortlist] > -1e8)

    def z(policy):  # each member standardised over the shortlisted candidates only
        s = np.asarray(policy.apply(policy.params, obs))[in_shortlist]
        return (s - s.mean()) / (s.std() + 1e-6)

    np.testing.assert_allclose(scores[in_shortlist], (z(a) + z(b)) / 2, rtol=1e-5, atol=1e-5)
    unrestricted = back.with_shortlist(0)
    expect = LearnedStrategy.ensemble([a, b])
    np.testing.assert_allclose(
        unrestricted.apply(unrestricted.params, obs), expect.apply(expect.params, obs), rtol=1e-6
    )
    with pytest.raises(ValueError, match="shortlist must be >= 0"):
        a.with_shortlist(-1)
