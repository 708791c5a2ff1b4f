"""Semi-supervised learners (`self_training`, `label_propagation`); the lazy refit of rounds.

Checked against independent computations: numpy recounts of the pseudo-label
rules, scikit-learn's `LabelSpreading` as a peer for the propagated labels, and
a plain `where` for `lazy_cond`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import make_moons
from sklearn.semi_supervised import LabelSpreading

from metaal.batching import lazy_cond
from metaal.data.batch import pad_split
from metaal.data.task import Task, make_split
from metaal.envs.core import ActiveLearningEnv, EnvConfig, make_params
from metaal.learners import make_learner, propagate_labels
from metaal.strategies.adapter import QueryStrategy
from metaal.strategies.uncertainty import MARGIN

# --- lazy_cond --------------------------------------------------------------------------


def _double(x, y):
    return {"a": 2.0 * x + y}


def _lazy(pred, x, y):
    return lazy_cond(pred, _double, {"a": x}, x, y)


@pytest.mark.parametrize("pred", [[True, False, True], [False, False, False], [True] * 3])
def test_lazy_cond_equals_a_select_under_vmap_and_nested_vmap(pred):
    x, y = jnp.arange(6.0).reshape(3, 2), jnp.float32(0.5)
    pred = jnp.array(pred)
    got = jax.jit(jax.vmap(_lazy, in_axes=(0, 0, None)))(pred, x, y)["a"]
    np.testing.assert_array_equal(got, np.where(np.asarray(pred)[:, None], 2 * x + 0.5, x))
    nested = jax.jit(jax.vmap(jax.vmap(_lazy, in_axes=(0, 0, None)), in_axes=(0, 0, None)))
    preds = jnp.stack([pred, ~pred])
    xs = jnp.stack([x, x + 10])
    want = np.where(np.asarray(preds)[..., None], 2 * xs + 0.5, xs)
    np.testing.assert_array_equal(nested(preds, xs, y)["a"], want)
    np.testing.assert_array_equal(_lazy(jnp.bool_(True), x[0], y)["a"], 2 * x[0] + 0.5)
    np.testing.assert_array_equal(_lazy(jnp.bool_(False), x[0], y)["a"], x[0])


def test_lazy_cond_skips_the_branch_when_no_row_needs_it():
    calls = []

    def counted(x):
        jax.debug.callback(lambda: calls.append(1))
        return x + 1.0

    f = jax.jit(jax.vmap(lambda p, x: lazy_cond(p, counted, x, x)))
    x = jnp.zeros(4)
    jax.block_until_ready(f(jnp.zeros(4, bool), x))
    assert calls == []  # a batched `cond` would have run the branch (as a select)
    jax.block_until_ready(f(jnp.array([False, True, False, False]), x))
    assert len(calls) == 1  # the branch ran once, for the whole batch


# --- the learners ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moons():
    """Two moons (a non-linear boundary), standardised; 3 labelled rows per class."""
    X, y = make_moons(300, noise=0.06, random_state=0)
    X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
    labelled = np.concatenate([np.flatnonzero(y == c)[:3] for c in (0, 1)])
    w = np.zeros(len(y), np.float32)
    w[labelled] = 1.0
    return X, y.astype(np.int32), w


def _fit(spec, X, y, w, U=None, uw=None, key=0):
    learner = make_learner(spec)
    class_mask = jnp.ones(2, bool)
    params = learner.init(jax.random.key(key), X.shape[1], 2)
    if U is None:
        return learner, learner.fit(params, X, y, w, class_mask)
    return learner, learner.fit(params, X, y, w, class_mask, U, uw)


def _labelled_only(X, y, w):
    keep = w > 0
    return X[keep], y[keep], w[keep]


def test_label_propagation_labels_agree_with_scikit_learn_label_spreading(moons):
    """The propagated classes of the graph's unlabelled nodes agree with scikit-learn's
    `LabelSpreading(kernel="knn")`, are nearly all right on the moons, and the base
    learner fitted on them beats the one fitted on the 6 labels alone."""
    X, y, w = moons
    XL, yL, wL = _labelled_only(X, y, w)
    U, uw = X, 1.0 - w  # the pool: every row, the labelled ones with weight 0
    rows, labels, confidence = map(
        np.asarray,
        propagate_labels(XL, yL, wL, jnp.ones(2, bool), U, uw, iters=200, pseudo=300),
    )
    used = confidence > 0
    assert set(rows[used]) == set(np.flatnonzero(uw > 0))  # pseudo >= 294: every row a node
    assert (labels[used] == y[rows[used]]).mean() >= 0.97
    spread = LabelSpreading(kernel="knn", n_neighbors=10, alpha=0.99, max_iter=1000, tol=1e-6)
    spread.fit(X, np.where(w > 0, y, -1))
    # scikit-learn's 0/1 kNN graph gets 96.7% of the moons right: agreement is that or more
    assert (spread.transduction_ == y).mean() >= 0.96
    assert (labels[used] == spread.transduction_[rows[used]]).mean() >= 0.95
    _, supervised = _fit("logreg:steps=200,power_iters=20", XL, yL, wL)
    _, semi = _fit("label_propagation:pseudo=300,steps=200,power_iters=20", XL, yL, wL, U, uw)
    lr = make_learner("logreg")
    acc = [
        (np.asarray(lr.predict(p, X, jnp.ones(2, bool))) == y).mean() for p in (supervised, semi)
    ]
    assert acc[1] >= acc[0] and acc[1] >= 0.8, acc


def test_self_training_adds_exactly_the_confident_rows(moons):
    """A numpy recount: the extra rows are the `pseudo` most confident unlabelled rows of
    the first (supervised) fit whose top probability reaches the threshold, labelled with
    its argmax and weighted pseudo_weight * confidence; the final fit starts from that fit."""
    X, y, w = moons
    XL, yL, wL = _labelled_only(X, y, w)
    U, uw = X, 1.0 - w
    spec = "self_training:threshold=0.7,pseudo=40,pseudo_weight=0.5,steps=30"
    learner, got = _fit(spec, XL, yL, wL, U, uw)
    base = make_learner("logreg:steps=30")
    class_mask = jnp.ones(2, bool)
    first = base.fit(base.init(None, 2, 2), XL, yL, wL, class_mask)
    probs = np.asarray(base.predict_proba(first, U, class_mask))
    conf = probs.max(1)
    eligible = np.flatnonzero((uw > 0) & (conf >= 0.7))
    chosen = eligible[np.argsort(-conf[eligible], kind="stable")[:40]]
    assert 0 < len(chosen) <= 40
    row_w = np.zeros(40, np.float32)
    row_w[: len(chosen)] = 0.5 * conf[chosen]
    rows = np.zeros(40, int)
    rows[: len(chosen)] = chosen
    want = base.fit(
        first,
        np.concatenate([XL, U[rows]]),
        np.concatenate([yL, probs[rows].argmax(1)]).astype(np.int32),
        np.concatenate([wL, row_w]),
        class_mask,
    )
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("spec", ["self_training:threshold=0.5", "label_propagation"])
def test_one_labelled_class_adds_no_pseudo_label(moons, spec):
    """With labelled rows of one class (a cold start can draw them) the learner adds no
    pseudo-labelled row: its fit equals the base fit on the labelled rows alone."""
    X, y, w = moons
    one = (w > 0) & (y == 0)
    XL, yL, wL = X[one], y[one], np.ones(one.sum(), np.float32)
    _, got = _fit(spec, XL, yL, wL, X, (~one).astype(np.float32))
    learner = make_learner(spec)
    zero = np.zeros(1, np.float32)
    # the same call with no unlabelled row that could be used (weights all 0)
    _, want = _fit(spec, XL, yL, wL, X[:1], zero)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert learner.semi_supervised


@pytest.mark.parametrize("spec", ["self_training:threshold=0.6", "label_propagation"])
def test_padding_changes_no_prediction(moons, spec):
    """Padded pool rows (weight 0) and padded features leave the predictions unchanged."""
    X, y, w = moons
    XL, yL, wL = _labelled_only(X, y, w)
    U, uw = X[:200], (1.0 - w)[:200]
    learner, small = _fit(spec, XL, yL, wL, U, uw)
    pad = lambda A, rows, cols: np.pad(A, ((0, rows), (0, cols)))  # noqa: E731
    big_U, big_uw = pad(U, 37, 3), np.pad(uw, (0, 37))
    big_XL = pad(XL, 4, 3)
    big_yL, big_wL = np.pad(yL, (0, 4)), np.pad(wL, (0, 4))
    _, big = _fit(spec, big_XL, big_yL, big_wL, big_U, big_uw)
    mask = jnp.ones(2, bool)
    np.testing.assert_allclose(
        learner.predict_proba(big, pad(X, 0, 3), mask),
        learner.predict_proba(small, X, mask),
        atol=1e-5,
    )


def test_a_bad_base_learner_is_a_clear_error():
    with pytest.raises(ValueError, match="base='self_training' is not a supervised learner"):
        make_learner("self_training:base=self_training")


# --- in the env and the adapter -----------------------------------------------------------


@pytest.fixture(scope="module")
def blob_params():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 4, (3, 6))
    y = np.repeat(np.arange(3), 120)
    X = centres[y] + rng.normal(0, 1, (len(y), 6))
    split = make_split(Task("blobs", X, y, ("a", "b", "c")), 0, max_pool=240, max_val=60)
    return make_params(pad_split(split))


def test_self_training_in_the_env_uses_the_pool_and_refits_once_a_round(blob_params):
    """In the env the semi-supervised fit differs from the supervised one (it reads the
    pool), and with query_batch = 4 the learner changes only at a round's end."""
    cfg = EnvConfig(budget=8, n_initial=3, query_batch=4, learner="self_training:threshold=0.6")
    env = ActiveLearningEnv(cfg)
    sup = ActiveLearningEnv(EnvConfig(budget=8, n_initial=3, query_batch=4))
    _, state = env.reset(jax.random.key(0), blob_params)
    _, state_sup = sup.reset(jax.random.key(0), blob_params)
    assert not np.allclose(state.learner["W"], state_sup.learner["W"])
    before = state.learner
    for t in range(8):
        _, state, _, _, _, info = env.step(jax.random.key(t), state, 0, blob_params)
        changed = not np.array_equal(state.learner["W"], before["W"])
        assert changed == bool(info["refit"]) == (t in (3, 7)), t
        before = state.learner


def test_vmapped_batch_rounds_equal_each_episode_alone(blob_params):
    """The lazy refit under vmap: episodes run together give each one's own trajectory."""
    env = ActiveLearningEnv(EnvConfig(budget=6, n_initial=3, query_batch=3, n_candidates=8))

    def episode(key):
        obs, state = env.reset_env(key, blob_params)

        def body(carry, k):
            obs, state = carry
            action = jnp.argmax(jnp.where(obs.action_mask, obs.candidates[:, 0], -jnp.inf))
            obs, state, reward, _, _, info = env.step_env(k, state, action, blob_params)
            return (obs, state), (reward, info["val_score"])

        return jax.lax.scan(body, (obs, state), jax.random.split(key, 6))[1]

    keys = jax.random.split(jax.random.key(5), 3)
    together = jax.jit(jax.vmap(episode))(keys)
    alone = [jax.jit(episode)(k) for k in keys]
    for i, (rewards, vals) in enumerate(alone):
        np.testing.assert_allclose(together[0][i], rewards, atol=1e-6)
        np.testing.assert_allclose(together[1][i], vals, atol=1e-6)


def test_query_with_a_semi_supervised_learner_uses_the_unlabelled_rows(moons):
    """`metaal query`'s adapter passes the unlabelled rows: margin's picks move."""
    X, y, w = moons
    labels = np.where(w > 0, y, np.nan)
    picks = {
        spec: QueryStrategy(MARGIN, learner=spec, random_state=0).query(X, labels, batch_size=5)
        for spec in ("logreg", "self_training:threshold=0.6")
    }
    assert not np.array_equal(picks["logreg"], picks["self_training:threshold=0.6"])
    one = np.where((w > 0) & (y == 0), 0.0, np.nan)
    with pytest.raises(ValueError, match="at least two classes"):
        QueryStrategy(MARGIN, learner="self_training").query(X, one)
