"""Classifiers that live inside the active-learning environment: pure, jitted, warm-started.

Every learner is a `Learner` of three pure functions:

- `init(key, d, k, feature_mask=None) -> params` for `d` (padded) features and
  `k` (padded) classes; `feature_mask` (d,) marks the real features, so that
  random initial weights do not depend on the padding (see `make_mlp`);
- `fit(params, X, y, weights, class_mask) -> params`: minimises the weighted
  L2-regularised cross-entropy, starting from `params` (warm start); rows of
  weight 0 (unlabelled or padding) do not count;
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
    return {
        "W": jnp.zeros((d, k), jnp.float32),
        "b": jnp.zeros((k,), jnp.float32),
        # top eigenvector estimate of the Gram matrix, carried between warm fits
        "v": jnp.ones((d + 1,), jnp.float32) / jnp.sqrt(d + 1.0),
    }


def _logreg_logits(params: Params, X: jnp.ndarray) -> jnp.ndarray:
    # classes-first product, then transposed: faster on CPU for few classes (see `fit`)
    return jnp.einsum("dk,nd->kn", params["W"], X).T + params["b"]


def make_logreg(C: float = 1.0, steps: int = 10, power_iters: int = 2) -> Learner:
    """Multinomial L2 logistic regression, the objective of scikit-learn's `LogisticRegression(C)`.

    Minimises `C * sum_i w_i CE_i + ||W||^2 / 2` (the intercept unpenalised)
    by `steps` iterations of Nesterov-accelerated gradient descent with step
    1/L. L bounds the curvature: 0.5 * the largest eigenvalue of the weighted
    Gram matrix of [X, 1] plus the L2 term. The eigenvector is estimated by
    `power_iters` power iterations started from the previous fit's estimate,
    so warm refits, which add one row at a time, need only one or two.
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
        Yt = jax.nn.one_hot(y, class_mask.shape[0]).T
        row_weight = weights / n

        def grad(Wt, b):
            # a broadcast product and a sum, not a dot: XLA fuses it with the softmax, ~20%
            # faster than the (K, D) x (D, n) dot over a batch of envs
            logits = jnp.sum(Wt[:, None, :] * X[None], axis=-1) + b[:, None]
            P = jax.nn.softmax(jnp.where(class_mask[:, None], logits, NEG_INF), axis=0)
            G = (P - Yt) * row_weight
            return jnp.einsum("kn,nd->kd", G, X) + reg * Wt, jnp.sum(G, axis=1)

        def step(carry, t):
            W, b, W_prev, b_prev = carry
            momentum = t / (t + 3.0)
            W_look, b_look = W + momentum * (W - W_prev), b + momentum * (b - b_prev)
            gW, gb = grad(W_look, b_look)
            return (W_look - lr * gW, b_look - lr * gb, W, b), None

        Wt, b = params["W"].T, params["b"]
        (Wt, b, _, _), _ = jax.lax.scan(step, (Wt, b, Wt, b), jnp.arange(steps, dtype=jnp.float32))
        return {"W": Wt.T, "b": b, "v": v}

    return _single_model("logreg", _logreg_init, fit, _logreg_logits)


# --- small MLP ------------------------------------------------------------------------


class MLP(nn.Module):
    """One hidden tanh layer; the classifier of the `mlp` learner."""

    hidden: int
    n_classes: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """Logits for `x`."""
        x = nn.tanh(nn.Dense(self.hidden)(x))
        return nn.Dense(self.n_classes, kernel_init=nn.initializers.zeros)(x)


def _is_first_kernel(path) -> bool:
    keys = [getattr(p, "key", None) for p in path]
    return keys[-2:] == ["Dense_0", "kernel"]


def make_mlp(
    hidden: int = 32, weight_decay: float = 1e-2, lr: float = 0.3, steps: int = 10
) -> Learner:
    """A one-hidden-layer MLP fitted by full-batch gradient descent with momentum (warm start)."""

    def init(key, d, k, feature_mask=None):
        params = MLP(hidden, k).init(key, jnp.zeros((1, d)))
        # LeCun-normal rows of the first layer drawn per feature index and scaled by the real
        # width, zero for padded features: a padded task starts from the unpadded weights
        mask = jnp.ones(d, bool) if feature_mask is None else feature_mask
        rows = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (hidden,)))(
            jnp.arange(d)
        )
        kernel = jnp.where(mask[:, None], rows, 0.0) / jnp.sqrt(jnp.maximum(jnp.sum(mask), 1))
        return jax.tree_util.tree_map_with_path(
            lambda path, x: kernel if _is_first_kernel(path) else x, params
        )

    def logits(params, X):
        return MLP(hidden, params["params"]["Dense_1"]["bias"].shape[0]).apply(params, X)

    def fit(params, X, y, weights, class_mask):
        n = jnp.maximum(jnp.sum(weights), 1.0)

        def loss(p):
            l2 = sum(jnp.sum(w**2) for w in jax.tree.leaves(p))
            ce = _cross_entropy(logits(p, X), y, weights, class_mask) / n
            return ce + 0.5 * weight_decay * l2

        grad = jax.grad(loss)

        def step(carry, _):
            p, vel = carry
            g = grad(p)
            vel = jax.tree.map(lambda v, gi: 0.9 * v - lr * gi, vel, g)
            return (jax.tree.map(jnp.add, p, vel), vel), None

        zeros = jax.tree.map(jnp.zeros_like, params)
        (params, _), _ = jax.lax.scan(step, (params, zeros), None, length=steps)
        return params

    return _single_model("mlp", init, fit, logits)


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
    inner = make_mlp(hidden=hidden, weight_decay=weight_decay, lr=lr, steps=steps)

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


LEARNERS: dict[str, Callable[..., Learner]] = {
    "logreg": make_logreg,
    "mlp": make_mlp,
    "ensemble": make_ensemble,
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
