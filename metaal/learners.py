"""Classifiers that live inside the active-learning environment: pure, jitted, warm-started.

Every learner is a `Learner` of three pure functions:

- `init(key, d, k, feature_mask=None) -> params` for `d` (padded) features and
  `k` (padded) classes; `feature_mask` (d,) marks the real features, so that
  random initial weights do not depend on the padding (see `make_mlp`);
- `fit(params, X, y, weights, class_mask) -> params`: minimises the weighted
  L2-regularised cross-entropy, starting from `params` (warm start); rows of
  weight 0 (unlabelled or padding) do not count. A semi-supervised learner
  (`semi_supervised=True`: `self_training`, `label_propagation`) also takes
  `unlabeled_X` (U, d) and `unlabeled_weights` (U,), the unlabelled pool rows
  (weight 0: labelled or padding), and adds pseudo-labelled rows from them;
- `predict_proba(params, X, class_mask) -> (n, k)` class probabilities, zero on
  padded classes; `member_proba` gives the (members, n, k) probabilities of an
  ensemble (one member for the others); `predict(params, X, class_mask) -> (n,)`
  the predicted classes (for single models the argmax of the masked logits,
  which skips the softmax the env would otherwise pay for every accuracy).

Padding is invisible: zero-valued padded features receive zero gradient, and
padded classes are masked out of the softmax, so a padded task gets the same
probabilities as the unpadded one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

Params = Any
NEG_INF = -1e9


class Learner(NamedTuple):
    """A classifier as pure functions (see the module docstring)."""

    name: str
    init: Callable[..., Params]
    fit: Callable[..., Params]
    predict_proba: Callable[..., jnp.ndarray]
    member_proba: Callable[..., jnp.ndarray]
    predict: Callable[..., jnp.ndarray]
    semi_supervised: bool = False
    """True when `fit` also reads the unlabelled rows (`unlabeled_X`, `unlabeled_weights`)."""


def _masked_softmax(logits: jnp.ndarray, class_mask: jnp.ndarray) -> jnp.ndarray:
    logits = jnp.where(class_mask, logits, NEG_INF)
    return jax.nn.softmax(logits, axis=-1) * class_mask


def _masked_argmax(logits: jnp.ndarray, class_mask: jnp.ndarray) -> jnp.ndarray:
    return jnp.argmax(jnp.where(class_mask, logits, NEG_INF), axis=-1)


def _single_model(name: str, init: Callable, fit: Callable, logits: Callable) -> Learner:
    """A `Learner` of one model whose predictions all come from `logits(params, X)`."""

    def predict_proba(params, X, class_mask):
        return _masked_softmax(logits(params, X), class_mask)

    def predict(params, X, class_mask):
        return _masked_argmax(logits(params, X), class_mask)

    return Learner(
        name, init, fit, predict_proba, lambda p, X, m: predict_proba(p, X, m)[None], predict
    )


def _cross_entropy(logits, y, weights, class_mask):
    logp = jax.nn.log_softmax(jnp.where(class_mask, logits, NEG_INF), axis=-1)
    nll = -jnp.take_along_axis(logp, y[:, None], axis=-1)[:, 0]
    return jnp.sum(weights * nll)


# --- multinomial logistic regression -------------------------------------------------


def _logreg_init(key: jax.Array, d: int, k: int, feature_mask: jnp.ndarray | None = None) -> Params:
    del key, feature_mask  # the convex problem starts from zero: no randomness needed
    # top eigenvector estimate of the Gram matrix, carried between warm fits
    v = jnp.ones((d + 1,), jnp.float32) / jnp.sqrt(d + 1.0)
    return {"W": jnp.zeros((d, k), jnp.float32), "b": jnp.zeros((k,), jnp.float32), "v": v}


def _binary_init(key: jax.Array, d: int, k: int, feature_mask: jnp.ndarray | None = None) -> Params:
    if k != 2:
        return _logreg_init(key, d, k, feature_mask)
    params = _logreg_init(key, d, k, feature_mask)
    # two classes: the logit difference s = X u + c (class 1's logit minus class 0's)
    return {"u": jnp.zeros((d,), jnp.float32), "c": jnp.zeros((), jnp.float32), "v": params["v"]}


def _logreg_logits(params: Params, X: jnp.ndarray) -> jnp.ndarray:
    if "u" in params:  # two classes: logits (-s/2, s/2) have the difference s
        s = X @ params["u"] + params["c"]
        return jnp.stack([-0.5 * s, 0.5 * s], axis=-1)
    # classes-first product, then transposed: faster on CPU for few classes (see `fit`)
    return jnp.einsum("dk,nd->kn", params["W"], X).T + params["b"]


def _nesterov(grad: Callable, start: tuple, steps: int, lr: jnp.ndarray) -> tuple:
    """`steps` Nesterov-accelerated gradient steps of size `lr` from `start` (the logreg fit).

    `grad(*x)` gives the gradient of each part of `x`; momentum t / (t + 3) at step t.
    """

    def step(carry, t):
        x, prev = carry
        momentum = t / (t + 3.0)
        look = tuple(a + momentum * (a - p) for a, p in zip(x, prev, strict=True))
        g = grad(*look)
        return (tuple(a - lr * d for a, d in zip(look, g, strict=True)), x), None

    (x, _), _ = jax.lax.scan(step, (start, start), jnp.arange(steps, dtype=jnp.float32))
    return x


def make_logreg(
    C: float = 1.0, steps: int = 10, power_iters: int = 2, binary: bool = True
) -> Learner:
    """Multinomial L2 logistic regression, the objective of scikit-learn's `LogisticRegression(C)`.

    Minimises `C * sum_i w_i CE_i + ||W||^2 / 2` (the intercept unpenalised)
    by `steps` iterations of Nesterov-accelerated gradient descent with step
    1/L. L bounds the curvature: 0.5 * the largest eigenvalue of the weighted
    Gram matrix of [X, 1] plus the L2 term. The eigenvector is estimated by
    `power_iters` power iterations started from the previous fit's estimate,
    so warm refits, which add one row at a time, need only one or two.

    `binary` (two padded classes only): fit the logit difference u = w_1 - w_0,
    c = b_1 - b_0 instead of both columns, half the work of a fit and of a
    prediction. From the zero start the multinomial iterates keep w_0 = -w_1
    (the two columns' gradients are opposite), so their difference follows
    gradient descent on `2C * sum_i w_i CE_i(u x_i + c) + ||u||^2 / 2`,
    binary L2 logistic regression with C doubled, with the same step size:
    the same iterates up to rounding (a test compares them step by step).
    """

    def fit(params, X, y, weights, class_mask):
        n = jnp.maximum(jnp.sum(weights), 1.0)
        reg = 1.0 / (C * n)

        def gram_times(v):
            u = (X @ v[:-1] + v[-1]) * weights
            return jnp.concatenate([X.T @ u, jnp.sum(u)[None]]) / n

        def power(v, _):
            v = gram_times(v)
            return v / (jnp.linalg.norm(v) + 1e-12), None

        v, _ = jax.lax.scan(power, params["v"], None, length=power_iters)
        lam = jnp.dot(v, gram_times(v))
        lr = 1.0 / (0.5 * 1.1 * lam + reg + 1e-6)
        # Classes lead (W^T, logits^T): the products then run along the long sample and
        # feature axes, which XLA's CPU code vectorises ~2x faster than a K-wide output.
        row_weight = weights / n
        if "u" in params:
            return _fit_difference(params, X, y, row_weight, reg, lr, v)
        Yt = jax.nn.one_hot(y, class_mask.shape[0]).T

        def grad(Wt, b):
            # a broadcast product and a sum, not a dot: XLA fuses it with the softmax, ~20%
            # faster than the (K, D) x (D, n) dot over a batch of envs
            logits = jnp.sum(Wt[:, None, :] * X[None], axis=-1) + b[:, None]
            P = jax.nn.softmax(jnp.where(class_mask[:, None], logits, NEG_INF), axis=0)
            G = (P - Yt) * row_weight
            return jnp.einsum("kn,nd->kd", G, X) + reg * Wt, jnp.sum(G, axis=1)

        Wt, b = _nesterov(grad, (params["W"].T, params["b"]), steps, lr)
        return {"W": Wt.T, "b": b, "v": v}

    def _fit_difference(params, X, y, row_weight, reg, lr, v):
        # the multinomial step on (w_0, w_1) = (-u/2, u/2), written for u: the columns'
        # gradients are g_1 = X^T G + reg u/2 and g_0 = -g_1, with G = (p_1 - y_1) * weight
        target = (y == 1).astype(jnp.float32)

        def grad(u, c):
            G = (jax.nn.sigmoid(X @ u + c) - target) * row_weight
            return 2.0 * (X.T @ G) + reg * u, 2.0 * jnp.sum(G)

        u, c = _nesterov(grad, (params["u"], params["c"]), steps, lr)
        return {"u": u, "c": c, "v": v}

    return _single_model("logreg", _binary_init if binary else _logreg_init, fit, _logreg_logits)


# --- small MLP ------------------------------------------------------------------------


class MLP(nn.Module):
    """One hidden tanh layer; the classifier of the `mlp` learner (`features` then `head`)."""

    hidden: int
    n_classes: int

    def setup(self) -> None:
        """The two layers."""
        self.body = nn.Dense(self.hidden, name="Dense_0")
        self.head = nn.Dense(self.n_classes, kernel_init=nn.initializers.zeros, name="Dense_1")

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """Logits for `x`."""
        return self.head(self.features(x))

    def features(self, x: jnp.ndarray) -> jnp.ndarray:
        """The hidden layer's activations (what dropout acts on)."""
        return nn.tanh(self.body(x))

    def logits_of(self, h: jnp.ndarray) -> jnp.ndarray:
        """Logits from hidden activations `h`."""
        return self.head(h)


def _is_first_kernel(path) -> bool:
    keys = [getattr(p, "key", None) for p in path]
    return keys[-2:] == ["Dense_0", "kernel"]


#: Key of the MC-dropout prediction masks (row i's draw t is the same in every fit).
MC_DROPOUT_SEED = 8191


def _dropout_masks(key: jax.Array, rate: float, shape: tuple[int, ...]) -> jnp.ndarray:
    """Inverted-dropout multipliers: 0 with probability `rate`, else 1 / (1 - rate)."""
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    return keep.astype(jnp.float32) / (1.0 - rate)


def make_mlp(
    hidden: int = 32,
    weight_decay: float = 1e-2,
    lr: float = 0.3,
    steps: int = 10,
    dropout: float = 0.2,
    mc_samples: int = 8,
    warm: bool = True,
) -> Learner:
    """A one-hidden-layer MLP head fitted by full-batch gradient descent with momentum.

    - `dropout`: rate on the hidden layer in training (a fresh mask per optimiser
      step) and, with `mc_samples` > 0, in prediction: MC dropout (Gal and
      Ghahramani 2016). `member_proba` gives the `mc_samples` dropout draws
      (BALD's disagreement, DropQuery), `predict_proba` their mean. The draws
      come from one fixed key (`MC_DROPOUT_SEED`), so predictions are
      deterministic and the masks cost nothing per episode, and act
      on the hidden layer only, so a draw costs a (n, hidden) x (hidden, K)
      product, not a pass over the features. `mc_samples` 0 (or `dropout` 0)
      predicts with the deterministic network.
    - `warm`: refits start from the previous fit; False restarts every fit from
      the initial weights (a cold refit).
    - `steps` full-batch steps (epochs) per fit, `weight_decay` the L2 weight.
    """
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"learner 'mlp': dropout must be in [0, 1), got {dropout}")
    if mc_samples < 0:
        raise ValueError(f"learner 'mlp': mc_samples must be >= 0, got {mc_samples}")
    samples = mc_samples if dropout > 0 else 0

    def init(key, d, k, feature_mask=None):
        net = MLP(hidden, k).init(key, jnp.zeros((1, d)))
        # LeCun-normal rows of the first layer drawn per feature index and scaled by the real
        # width, zero for padded features: a padded task starts from the unpadded weights
        mask = jnp.ones(d, bool) if feature_mask is None else feature_mask
        rows = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (hidden,)))(
            jnp.arange(d)
        )
        kernel = jnp.where(mask[:, None], rows, 0.0) / jnp.sqrt(jnp.maximum(jnp.sum(mask), 1))
        net = jax.tree_util.tree_map_with_path(
            lambda path, x: kernel if _is_first_kernel(path) else x, net
        )
        params = {"net": net, "key": jax.random.key_data(jax.random.fold_in(key, 2**20))}
        if not warm:
            params["start"] = net
        return params

    def module(params):
        return MLP(hidden, params["net"]["params"]["Dense_1"]["bias"].shape[0])

    def hidden_of(params, X):
        return module(params).apply(params["net"], X, method=MLP.features)

    def head(params, h):
        return module(params).apply(params["net"], h, method=MLP.logits_of)

    def member_logits(params, X):
        h = hidden_of(params, X)
        if samples == 0:
            return head(params, h)[None]
        # one fixed key for every fit, episode and task: the masks are constants of the
        # compiled program, shared by vmapped episodes instead of drawn per episode
        key = jax.random.key(MC_DROPOUT_SEED)
        masks = jax.vmap(lambda i: _dropout_masks(jax.random.fold_in(key, i), dropout, h.shape))(
            jnp.arange(samples)
        )
        return jax.vmap(lambda m: head(params, h * m))(masks)

    def fit(params, X, y, weights, class_mask):
        n = jnp.maximum(jnp.sum(weights), 1.0)
        key = jax.random.wrap_key_data(params["key"])
        # a new dropout stream per fit, fixed by the labelled count: same data, same fit
        key = jax.random.fold_in(key, jnp.sum(weights > 0))

        def loss(net, t):
            l2 = sum(jnp.sum(w**2) for w in jax.tree.leaves(net))
            h = module(params).apply(net, X, method=MLP.features)
            if dropout > 0:
                h = h * _dropout_masks(jax.random.fold_in(key, t), dropout, h.shape)
            logits = module(params).apply(net, h, method=MLP.logits_of)
            return _cross_entropy(logits, y, weights, class_mask) / n + 0.5 * weight_decay * l2

        grad = jax.grad(loss)

        def step(carry, t):
            net, vel = carry
            g = grad(net, t)
            vel = jax.tree.map(lambda v, gi: 0.9 * v - lr * gi, vel, g)
            return (jax.tree.map(jnp.add, net, vel), vel), None

        net = params["net"] if warm else params["start"]
        zeros = jax.tree.map(jnp.zeros_like, net)
        (net, _), _ = jax.lax.scan(step, (net, zeros), jnp.arange(steps))
        return {**params, "net": net}

    def member_proba(params, X, class_mask):
        return jax.vmap(lambda z: _masked_softmax(z, class_mask))(member_logits(params, X))

    def predict_proba(params, X, class_mask):
        return member_proba(params, X, class_mask).mean(axis=0)

    def predict(params, X, class_mask):
        if samples == 0:
            return _masked_argmax(member_logits(params, X)[0], class_mask)
        return _masked_argmax(predict_proba(params, X, class_mask), class_mask)

    return Learner("mlp", init, fit, predict_proba, member_proba, predict)


# --- deep ensemble --------------------------------------------------------------------


def make_ensemble(
    members: int = 5,
    hidden: int = 32,
    weight_decay: float = 1e-2,
    lr: float = 0.3,
    steps: int = 10,
) -> Learner:
    """An ensemble of `members` MLPs (`make_mlp`) with different random inits and bootstrap weights.

    `predict_proba` is the members' mean; `member_proba` feeds BALD-style
    disagreement features.
    """
    # deterministic members: the ensemble's own disagreement is its uncertainty
    inner = make_mlp(
        hidden=hidden, weight_decay=weight_decay, lr=lr, steps=steps, dropout=0.0, mc_samples=0
    )

    def init(key, d, k, feature_mask=None):
        keys = jax.random.split(key, members)
        params = jax.vmap(lambda kk: inner.init(kk, d, k, feature_mask))(keys)
        # Poisson(1) bootstrap weights by row index, fixed for the episode.
        boot_key = jax.random.fold_in(key, 1)
        return {"members": params, "boot_key": jax.random.key_data(boot_key)}

    def fit(params, X, y, weights, class_mask):
        boot_key = jax.random.wrap_key_data(params["boot_key"])
        boot = jax.random.poisson(boot_key, 1.0, (members, X.shape[0])).astype(jnp.float32)
        # at least one copy of every row in some member: keep weight 1 for member 0
        boot = boot.at[0].set(1.0)
        fitted = jax.vmap(lambda p, b: inner.fit(p, X, y, weights * b, class_mask))(
            params["members"], boot
        )
        return {"members": fitted, "boot_key": params["boot_key"]}

    def member_proba(params, X, class_mask):
        return jax.vmap(lambda p: inner.predict_proba(p, X, class_mask))(params["members"])

    def predict_proba(params, X, class_mask):
        return member_proba(params, X, class_mask).mean(axis=0)

    def predict(params, X, class_mask):
        return _masked_argmax(predict_proba(params, X, class_mask), class_mask)

    return Learner("ensemble", init, fit, predict_proba, member_proba, predict)


# --- semi-supervised wrappers ---------------------------------------------------------
#
# Both fit the base learner on the labelled rows plus at most `pseudo` pseudo-labelled
# unlabelled rows (a cap, so that a refit costs O(labelled + pseudo) and not O(pool)),
# each pseudo-label weighted `pseudo_weight` times its confidence. Pseudo-labels need two
# labelled classes: with fewer (a cold start may draw one class), none is added and the
# fit stays supervised.

SEMI_SUPERVISED_BASES = ("logreg", "mlp", "ensemble")


def _base_learner(name: str, base: str, steps: int, power_iters: int) -> Learner:
    if base not in SEMI_SUPERVISED_BASES:
        raise ValueError(
            f"learner {name!r}: base={base!r} is not a supervised learner; choose one of "
            f"{', '.join(SEMI_SUPERVISED_BASES)}"
        )
    settings: dict[str, Any] = {"steps": steps}
    if base == "logreg":
        settings["power_iters"] = power_iters
    return LEARNERS[base](**settings)


def _labelled_classes(y: jnp.ndarray, weights: jnp.ndarray, k: int) -> jnp.ndarray:
    return jnp.sum(jnp.zeros(k).at[y].max((weights > 0).astype(jnp.float32)))


def _pseudo_learner(name: str, base: Learner, pseudo_labels: Callable) -> Learner:
    """A `Learner` that refits `base` with the rows and weights `pseudo_labels` proposes.

    `pseudo_labels(params, X, y, weights, class_mask, U, u_weights) -> (start, rows,
    labels, row_weights)` returns the params the final fit starts from, a fixed number of
    unlabelled row indices, their labels and their weights (0: not used).
    """

    def fit(params, X, y, weights, class_mask, unlabeled_X=None, unlabeled_weights=None):
        if unlabeled_X is None:
            return base.fit(params, X, y, weights, class_mask)
        start, rows, labels, row_weights = pseudo_labels(
            params, X, y, weights, class_mask, unlabeled_X, unlabeled_weights
        )
        two_classes = _labelled_classes(y, weights, class_mask.shape[0]) >= 2
        row_weights = jnp.where(two_classes, row_weights, 0.0)
        X2 = jnp.concatenate([X, unlabeled_X[rows]])
        y2 = jnp.concatenate([y, labels.astype(y.dtype)])
        return base.fit(start, X2, y2, jnp.concatenate([weights, row_weights]), class_mask)

    return Learner(name, base.init, fit, base.predict_proba, base.member_proba, base.predict, True)


def make_self_training(
    base: str = "logreg",
    threshold: float = 0.9,
    pseudo: int = 256,
    pseudo_weight: float = 0.5,
    steps: int = 10,
    power_iters: int = 2,
) -> Learner:
    """Self-training (Yarowsky 1995; Lee 2013's pseudo-labels) around a supervised `base`.

    One refit: fit `base` on the labelled rows, predict the unlabelled rows, take the
    (at most `pseudo`) most confident ones whose top probability reaches `threshold`,
    and fit again (warm) on the labelled rows plus those rows with their predicted
    class, weighted `pseudo_weight * confidence`. `steps` optimiser steps per fit.
    """
    inner = _base_learner("self_training", base, steps, power_iters)

    def pseudo_labels(params, X, y, weights, class_mask, U, u_weights):
        fitted = inner.fit(params, X, y, weights, class_mask)
        probs = inner.predict_proba(fitted, U, class_mask)
        confidence = jnp.max(probs, axis=-1)
        eligible = (u_weights > 0) & (confidence >= threshold)
        score, rows = jax.lax.top_k(jnp.where(eligible, confidence, -1.0), min(pseudo, U.shape[0]))
        labels = jnp.argmax(probs[rows], axis=-1)
        return fitted, rows, labels, jnp.where(score >= 0, pseudo_weight * score, 0.0)

    return _pseudo_learner("self_training", inner, pseudo_labels)


def propagate_labels(
    X: jnp.ndarray,
    y: jnp.ndarray,
    weights: jnp.ndarray,
    class_mask: jnp.ndarray,
    U: jnp.ndarray,
    u_weights: jnp.ndarray,
    neighbors: int = 10,
    alpha: float = 0.99,
    iters: int = 20,
    pseudo: int = 256,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Label spreading (Zhou et al. 2004) from the labelled rows to `pseudo` unlabelled rows.

    The graph's nodes are the rows of X with weight > 0 and the first `pseudo` rows of U
    with weight > 0 in a fixed hash order of their index (so padding changes nothing).
    Each node joins its `neighbors` nearest by Euclidean distance, weighted
    exp(-d^2 / s^2) with s^2 the mean squared neighbour distance; the graph is made
    symmetric and normalised, S = D^-1/2 W D^-1/2, and `iters` steps of
    F <- alpha S F + (1 - alpha) Y spread the one-hot labels Y.

    Returns (rows, labels, confidence): the U indices of the unlabelled nodes, their argmax
    class and its share of the node's scores (0 for padding or a node no label reached).
    """
    k = class_mask.shape[0]
    n_u = min(pseudo, U.shape[0])
    # a fixed pseudo-random order of row indices (bijective hash): the unlabelled nodes
    order = jnp.arange(U.shape[0], dtype=jnp.uint32) * jnp.uint32(0x9E3779B1)
    order = (order ^ (order >> 15)).astype(jnp.float32)
    _, rows = jax.lax.top_k(jnp.where(u_weights > 0, order, -1.0), n_u)
    real_u = u_weights[rows] > 0
    nodes = jnp.concatenate([X, U[rows]])
    real = jnp.concatenate([weights > 0, real_u])
    sq = jnp.sum(nodes**2, axis=1)
    d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * nodes @ nodes.T, 0.0)
    n = nodes.shape[0]
    pair = real[:, None] & real[None, :] & ~jnp.eye(n, dtype=bool)
    d2 = jnp.where(pair, d2, jnp.inf)

    # each row's k smallest distances by k passes of a row minimum (a row-wise top_k
    # is ~15x slower on CPU); j is a neighbour of i when no farther than i's k-th
    def next_nearest(rest, _):
        nearest = jnp.min(rest, axis=1)
        return jnp.where(rest <= nearest[:, None], jnp.inf, rest), nearest

    _, near_d2 = jax.lax.scan(next_nearest, d2, None, length=min(neighbors, n - 1))
    finite = jnp.isfinite(near_d2)
    scale = jnp.sum(jnp.where(finite, near_d2, 0.0)) / jnp.maximum(jnp.sum(finite), 1)
    is_near = d2 <= near_d2[-1][:, None]
    is_near = (is_near | is_near.T) & pair
    W = jnp.where(is_near, jnp.exp(-d2 / jnp.maximum(scale, 1e-12)), 0.0)
    deg = jnp.sum(W, axis=1)
    inv_sqrt = jnp.where(deg > 0, 1.0 / jnp.sqrt(jnp.maximum(deg, 1e-12)), 0.0)
    S = W * inv_sqrt[:, None] * inv_sqrt[None, :]
    Y0 = jnp.concatenate([jax.nn.one_hot(y, k) * (weights > 0)[:, None], jnp.zeros((n_u, k))])
    Y0 = Y0 * class_mask

    def spread(F, _):
        return alpha * S @ F + (1.0 - alpha) * Y0, None

    F, _ = jax.lax.scan(spread, Y0, None, length=iters)
    F_u = F[X.shape[0] :]
    total = jnp.sum(F_u, axis=1)
    labels = jnp.argmax(jnp.where(class_mask, F_u, -1.0), axis=1)
    confidence = jnp.max(F_u, axis=1) / jnp.maximum(total, 1e-12)
    return rows, labels, jnp.where(real_u & (total > 0), confidence, 0.0)


def make_label_propagation(
    base: str = "logreg",
    neighbors: int = 10,
    alpha: float = 0.99,
    iters: int = 20,
    pseudo: int = 256,
    pseudo_weight: float = 0.5,
    steps: int = 10,
    power_iters: int = 2,
) -> Learner:
    """Label propagation over a kNN graph of the pool (`propagate_labels`), then `base` on it.

    Each of the graph's `pseudo` unlabelled nodes takes its propagated class, weighted
    `pseudo_weight` times its share of the scores, and `base` is fitted (warm) on the
    labelled plus propagated rows. Predictions are the base learner's, so the learner
    is inductive: it scores rows outside the graph (validation, new data).
    """
    inner = _base_learner("label_propagation", base, steps, power_iters)

    def pseudo_labels(params, X, y, weights, class_mask, U, u_weights):
        rows, labels, confidence = propagate_labels(
            X, y, weights, class_mask, U, u_weights, neighbors, alpha, iters, pseudo
        )
        return params, rows, labels, pseudo_weight * confidence

    return _pseudo_learner("label_propagation", inner, pseudo_labels)


LEARNERS: dict[str, Callable[..., Learner]] = {
    "logreg": make_logreg,
    "mlp": make_mlp,
    "ensemble": make_ensemble,
    "self_training": make_self_training,
    "label_propagation": make_label_propagation,
}


def parse_learner(spec: str) -> tuple[str, dict[str, Any]]:
    """`"name"` or `"name:key=value,key=value"` -> (name, settings), checked against the factory.

    Values are read as int, float or bool (`true`/`false`) as the factory's
    defaults are; an unknown name or setting is an error listing the known ones.

        parse_learner("mlp:hidden=64,weight_decay=0.001")  # ("mlp", {"hidden": 64, ...})
    """
    name, _, rest = str(spec).partition(":")
    name = name.strip()
    if name not in LEARNERS:
        raise ValueError(
            f"unknown learner {name!r}; known learners: {', '.join(sorted(LEARNERS))} "
            "(settings as name:key=value,key=value)"
        )
    defaults = learner_settings(name)
    settings: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in defaults:
            known = ", ".join(f"{k}={v}" for k, v in defaults.items())
            raise ValueError(
                f"learner {spec!r}: {item!r} is not a setting of {name!r}; its settings "
                f"(with defaults) are {known}"
            )
        settings[key] = _parse_value(value.strip(), defaults[key], f"learner {spec!r}: {key}")
    return name, settings


def _parse_value(text: str, default: Any, what: str) -> Any:
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            return text.lower() == "true"
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        return text
    except ValueError as err:
        raise ValueError(f"{what}: {text!r} is not a {type(default).__name__}") from err


def learner_settings(name: str) -> dict[str, Any]:
    """The settings of learner `name` that a spec may set, with their defaults."""
    params = inspect.signature(LEARNERS[name]).parameters.values()
    return {
        p.name: p.default
        for p in params
        if p.default is not inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD
    }


def make_learner(spec: str, **overrides: Any) -> Learner:
    """The learner of `spec` (`"logreg"`, `"mlp:hidden=64"`, ...; see `parse_learner`).

    `overrides` are set by the caller (e.g. the env's optimiser steps); a
    spec that sets one of them too is an error, so no setting is silently lost.
    """
    name, settings = parse_learner(spec)
    clash = sorted(set(settings) & set(overrides))
    if clash:
        raise ValueError(
            f"learner {spec!r}: {', '.join(clash)} is set by the environment config "
            "(fit_steps / init_fit_steps); drop it from the learner spec"
        )
    return LEARNERS[name](**settings, **overrides)
