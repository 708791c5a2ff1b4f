"""Any metaal strategy (learned ones included) behind scikit-activeml's query contract.

    qs = QueryStrategy("margin", random_state=0)
    idx = qs.query(X, y)                       # y: labels, np.nan where unlabelled
    idx, utilities = qs.query(X, y, batch_size=5, return_utilities=True)

`query(X, y, clf=None, candidates=None, batch_size=1, return_utilities=False)`
follows scikit-activeml's `SingleAnnotatorPoolQueryStrategy.query`:
unlabelled entries of `y` are `np.nan`; `candidates` is None (every
unlabelled row) or indices into `X`; the result indexes rows of `X`;
utilities have shape (batch_size, n_samples), NaN where a row is not
selectable (labelled, not a candidate, or picked earlier in the batch);
ties are broken at random from `random_state` (default 0: the same call
gives the same picks in every process; None draws fresh OS entropy, so picks
then differ between runs, as scikit-activeml's default does).

Refused with a `ValueError` (the checks `metaal query` runs, with the same
messages): infinite values or a column without any value in `X`
(`metaal.data.task.check_features`; NaN elsewhere is imputed), fewer than two
labelled classes when our learner is fitted (`check_labelled`), a batch
larger than the selectable rows.

How the strategy sees the data, mirroring the environment:
- features are imputed (column medians) and standardised over all rows of
  `X`, as a split's pool is;
- probabilities come from our JAX learner (`learner`, `fit_steps` optimiser
  steps from scratch) fitted on the labelled rows, or, when `clf` is given,
  from `clf.predict_proba(X)` on the raw `X` (an unfitted `clf` is cloned and
  fitted on the labelled rows first);
- the observation is built by `metaal.features.observation`, the env's own
  code. There is no validation set outside the env: the state's validation
  score is the learner's 5-fold cross-validated accuracy on the labelled
  rows (computed only for learned strategies; heuristics never read it);
- batches are greedy: after each pick the pick joins the labelled set
  (label unknown, no refit), so distances to the labelled set, BADGE's
  k-means++ centres and TypiClust's cluster counts move and batches spread.

A `QueryStrategy` is one AL episode: the first call fixes the probe rows,
the initial labelled count and the strategy's memory (ALBL's bandit), and
later calls continue it. Call `reset()` to start a new episode; a different
number of rows in `X` starts one too. Pass the same `X` (labels filled in)
to every call of an episode.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metaal import features
from metaal.data.task import check_features, fit_scaler
from metaal.learners import make_learner
from metaal.strategies.base import Context, Strategy, initial_memory, select

#: Folds of the cross-validated accuracy that stands in for the validation score.
CV_FOLDS = 5


def check_labelled(y: np.ndarray) -> None:
    """Refuse labels (NaN = unlabelled) covering fewer than two classes: nothing to fit."""
    labelled = ~np.isnan(y)
    n_classes = len(np.unique(y[labelled]))
    if n_classes < 2:
        raise ValueError(
            f"only {int(labelled.sum())} labelled row(s) covering {n_classes} class(es): the "
            "learner needs labelled rows of at least two classes; label a few more rows first"
        )


def standardise(X: np.ndarray) -> np.ndarray:
    """Impute column medians and scale to zero mean, unit variance over all rows, as a pool is."""
    return fit_scaler(X)(X)


def _distances(X: jnp.ndarray, rows: jnp.ndarray) -> jnp.ndarray:
    """(n, len(rows)) Euclidean distances from every row of X to X[rows] (one matmul)."""
    R = X[rows]
    sq = jnp.sum(X**2, axis=1)[:, None] + jnp.sum(R**2, axis=1)[None, :] - 2.0 * X @ R.T
    return jnp.sqrt(jnp.maximum(sq, 0.0))


class CompiledLearner(NamedTuple):
    """A learner's functions, jitted once per (learner, steps) and shared by every adapter."""

    init: Callable
    fit: Callable
    member_proba: Callable
    predict_proba: Callable  # the un-jitted function: strategies call it inside their trace
    refit: Callable  # the un-jitted fit, warm from given params (look-ahead strategies)
    cv_correct: Callable  # (key, X, y, folds, class_mask) -> correct held-out predictions


@functools.cache
def _compiled_learner(name: str, steps: int) -> CompiledLearner:
    learner = make_learner(name, steps=steps)

    def fit(params, X, y, weights, class_mask):
        if not learner.semi_supervised:
            return learner.fit(params, X, y, weights, class_mask)
        # every row of X that is not labelled is an unlabelled row of the pool
        return learner.fit(params, X, y, weights, class_mask, X, 1.0 - weights)

    def cv_correct(key, X, y, folds, class_mask):
        def fold_correct(f):
            train = ((folds >= 0) & (folds != f)).astype(jnp.float32)
            params = learner.init(key, X.shape[1], class_mask.shape[0])
            params = fit(params, X, y, train, class_mask)
            pred = jnp.argmax(learner.predict_proba(params, X, class_mask), axis=-1)
            return jnp.sum((pred == y) & (folds == f))

        return jnp.sum(jax.vmap(fold_correct)(jnp.arange(CV_FOLDS)))

    return CompiledLearner(
        learner.init,
        jax.jit(fit),
        jax.jit(learner.member_proba),
        learner.predict_proba,
        fit,
        jax.jit(cv_correct),
    )


@functools.cache
def _compiled_score(strategy: Strategy) -> Callable:
    return jax.jit(strategy.score)  # keyed by the params-free strategy (arrays do not hash)


# the column names are static: a feature registered later retraces instead of misreading
_observation = jax.jit(features.observation, static_argnums=1)


class QueryStrategy:
    """scikit-activeml's `query` for a metaal `Strategy` (see the module docstring).

    Args:
        strategy: a `Strategy` or a registered name (`metaal.strategies.STRATEGIES`).
        random_state: an int (default 0), a `np.random.RandomState`, or None
            for fresh OS entropy (picks differ from run to run): tie-breaking,
            the probe rows, the strategy's own randomness.
        learner: our learner when no `clf` is passed (`logreg`, `mlp`, `ensemble`).
        budget: queries planned for the episode: the strategy's horizon (ALBL,
            TypiClust's cluster count) and the observation's budget progress.
        fit_steps: optimiser steps of each fit of our learner.
        probe_size: probe rows of the state vector (a learned policy's training value).
    """

    def __init__(
        self,
        strategy: Strategy | str,
        random_state: int | np.random.RandomState | None = 0,
        learner: str = "logreg",
        budget: int = 100,
        fit_steps: int = 200,
        probe_size: int = 32,
    ) -> None:
        if isinstance(strategy, str):
            from metaal.strategies import get_strategy

            strategy = get_strategy(strategy)
        if not strategy.deployable:
            raise ValueError(
                f"strategy {strategy.name!r} is a reference that reads held-out labels and "
                "only runs inside the environment; choose a deployable strategy"
            )
        if budget < 1:
            raise ValueError(f"budget must be a positive number of queries, got {budget}")
        self.strategy = strategy
        self.random_state = random_state
        self.learner = _compiled_learner(strategy.learner or learner, fit_steps)
        self.budget = budget
        self.probe_size = probe_size
        self._rng = (
            random_state
            if isinstance(random_state, np.random.RandomState)
            else np.random.RandomState(random_state)
        )
        self._score = _compiled_score(strategy.without_params())
        self._episode: dict | None = None

    def reset(self) -> None:
        """Forget the episode: the next call starts a new one."""
        self._episode = None

    # -- pieces ------------------------------------------------------------------------

    def _key(self) -> jax.Array:
        return jax.random.key(self._rng.randint(2**31 - 1))

    def _check(self, X, y, candidates, batch_size, clf):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (samples, features), got shape {X.shape}")
        check_features(X, "X")
        try:
            y = np.asarray(y, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(
                "y must hold numeric labels with np.nan for unlabelled samples; "
                "encode string labels as integers first"
            ) from err
        if y.shape != (len(X),):
            raise ValueError(f"y must have one entry per row of X: {y.shape} vs {len(X)} rows")
        if clf is None:  # a given classifier brings its own classes
            check_labelled(y)
        unlabelled = np.isnan(y)
        if candidates is None:
            selectable = unlabelled.copy()
        else:
            cand = np.asarray(candidates)
            if cand.ndim != 1 or not np.issubdtype(cand.dtype, np.integer):
                raise ValueError(
                    "candidates must be None or a 1-D array of row indices into X; "
                    "candidate samples outside X are not supported: append them to X "
                    "with label np.nan and pass their indices"
                )
            if cand.size and (cand.min() < 0 or cand.max() >= len(X)):
                raise ValueError(f"candidate indices must lie in [0, {len(X)})")
            selectable = np.zeros(len(X), bool)
            selectable[cand] = True
            selectable &= unlabelled
        if not isinstance(batch_size, int | np.integer) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if batch_size > selectable.sum():
            raise ValueError(
                f"batch_size {batch_size} exceeds the {int(selectable.sum())} selectable "
                "(unlabelled candidate) samples; lower batch_size"
            )
        return X, y, unlabelled, selectable

    def _probabilities(self, X, Xs, y, labelled, clf):
        """Member probabilities (M, n, K), class indices (-1: unlabelled), class mask, params.

        The params are our learner's fitted ones, None when `clf` predicts.
        """
        if clf is not None:
            if not hasattr(clf, "classes_"):
                # a scikit-learn estimator: scikit-learn is there (metaal's base install lacks it)
                from sklearn.base import clone

                clf = clone(clf).fit(X[labelled], y[labelled])
            classes = np.asarray(clf.classes_, dtype=np.float64)
            probs = np.asarray(clf.predict_proba(X), dtype=np.float32)
            labels = np.where(labelled, np.searchsorted(classes, np.where(labelled, y, 0)), -1)
            mask = jnp.ones(len(classes), bool)
            return jnp.asarray(probs)[None], labels.astype(np.int32), mask, None
        classes = np.unique(y[labelled])
        # With fewer than two classes labelled, a padded class keeps the shapes valid.
        class_mask = jnp.arange(max(len(classes), 2)) < max(len(classes), 1)
        labels = np.where(labelled, np.searchsorted(classes, np.where(labelled, y, 0)), -1)
        params = self.learner.init(self._key(), Xs.shape[1], class_mask.shape[0])
        weights = jnp.asarray(labelled, jnp.float32)
        params = self.learner.fit(
            params, Xs, jnp.asarray(np.maximum(labels, 0)), weights, class_mask
        )
        member = self.learner.member_proba(params, Xs, class_mask)
        return member, labels.astype(np.int32), class_mask, params

    def _cv_accuracy(self, Xs, labels, class_mask) -> float:
        """Cross-validated accuracy of our learner on the labelled rows (validation stand-in)."""
        labelled = labels >= 0
        n_lab = int(labelled.sum())
        if n_lab < 2:
            return 0.0
        folds = np.full(len(labels), -1)
        folds[labelled] = self._rng.permutation(n_lab) % CV_FOLDS
        y = jnp.asarray(np.maximum(labels, 0))
        correct = self.learner.cv_correct(self._key(), Xs, y, jnp.asarray(folds), class_mask)
        return float(correct) / n_lab

    # -- the contract ------------------------------------------------------------------

    def query(self, X, y, clf=None, candidates=None, batch_size=1, return_utilities=False):
        """Indices of the `batch_size` rows of `X` to label next (and utilities if asked)."""
        X, y, unlabelled, selectable = self._check(X, y, candidates, batch_size, clf)
        n, d = X.shape
        labelled = ~unlabelled
        Xs = standardise(X)
        Xs = jnp.asarray(Xs)
        member, labels, class_mask, learner_params = self._probabilities(X, Xs, y, labelled, clf)
        probs = member.mean(axis=0)
        k = class_mask.shape[0]
        lab_rows = np.nonzero(labelled)[0]
        if lab_rows.size:
            dist = jnp.min(_distances(Xs, jnp.asarray(lab_rows)), axis=1)
        else:
            dist = jnp.full(n, jnp.inf)  # nothing labelled: every row is infinitely far
        episode = self._start_or_continue(Xs, labels, k)
        learned = self.strategy.family == "learned"
        val = self._cv_accuracy(Xs, labels, class_mask) if learned else 0.0
        if episode["initial_val"] is None:
            episode["initial_val"] = val
        step0 = max(len(lab_rows) - episode["n_initial"], 0)

        labelled_now = labelled.copy()
        order = np.concatenate([lab_rows, np.zeros(n - len(lab_rows), int)]).astype(np.int32)
        n_labelled = len(lab_rows)
        memory = episode["memory"]
        counts = jnp.asarray(np.bincount(labels[labels >= 0], minlength=k), jnp.float32)
        picks = np.zeros(batch_size, int)
        utilities = np.full((batch_size, n), np.nan)
        # this batch is the round of the env's `query_batch`: its earlier picks are the round's
        dist_round = jnp.full(n, jnp.inf)
        for b in range(batch_size):
            mask = jnp.asarray(selectable)
            finite_dist = jnp.where(jnp.isfinite(dist), dist, 0.0)
            if learned:
                inputs = features.StepInputs(
                    cand_member_probs=member,
                    cand_X=Xs,
                    cand_dist_labeled=finite_dist,
                    cand_density=episode["density"],
                    cand_mask=mask,
                    probe_probs=probs[episode["probe"]],
                    probe_mask=jnp.ones(self.probe_size, bool),
                    labeled_class_counts=counts,
                    class_mask=class_mask,
                    feature_mask=jnp.ones(d, bool),
                    budget_used=jnp.float32(min((step0 + b) / self.budget, 1.0)),
                    labeled_fraction=jnp.float32(n_labelled / n),
                    val_score=jnp.float32(val),
                    val_gain_so_far=jnp.float32(val - episode["initial_val"]),
                    cand_dist_round=dist_round,
                    round_progress=jnp.float32(b / batch_size),
                )
                names = self.strategy.features or features.candidate_feature_names()
                obs = _observation(inputs, names)
            else:  # heuristics read only the action mask of the observation
                obs = features.Observation(
                    state=jnp.zeros(0), candidates=jnp.zeros((n, 0)), action_mask=mask, features=()
                )
            ctx = Context(
                cand_X=Xs,
                cand_probs=probs,
                cand_member_probs=member,
                cand_index=jnp.arange(n, dtype=jnp.int32),
                pool_X=Xs,
                pool_mask=jnp.ones(n, bool),
                labeled=jnp.asarray(labelled_now),
                pool_probs=probs,
                labels=jnp.asarray(labels),
                labeled_idx=jnp.asarray(order),
                n_labeled=jnp.int32(n_labelled),
                dist_labeled=dist,
                density=episode["density"],
                class_mask=class_mask,
                feature_mask=jnp.ones(d, bool),
                step=jnp.int32(step0 + b),
                budget=self.budget,
                learner_params=learner_params,
                predict_proba=None if learner_params is None else self.learner.predict_proba,
                refit=None if learner_params is None else self.learner.refit,
                round_pos=jnp.int32(b),
                query_batch=batch_size,
            )
            scores, memory = self._score(self._key(), obs, ctx, memory)
            pick = int(select(scores, mask, self._key()))
            utilities[b] = np.where(selectable, np.asarray(scores, np.float64), np.nan)
            picks[b] = pick
            selectable[pick] = False
            labelled_now[pick] = True
            order[n_labelled] = pick
            n_labelled += 1
            dist_pick = _distances(Xs, jnp.asarray([pick]))[:, 0]
            dist = jnp.minimum(dist, dist_pick)
            dist_round = jnp.minimum(dist_round, dist_pick)
        episode["memory"] = memory
        return (picks, utilities) if return_utilities else picks

    def _start_or_continue(self, Xs: jnp.ndarray, labels: np.ndarray, k: int) -> dict:
        """The episode's fixed parts, created on its first call."""
        n = Xs.shape[0]
        if self._episode is not None and self._episode["n_rows"] == n:
            return self._episode
        # pool_density takes its references from the first rows; shuffle so that
        # sorted data does not bias them (the env's pools are shuffled by the split).
        perm = self._rng.permutation(n)
        density = jnp.zeros(n).at[perm].set(features.pool_density(Xs[perm], jnp.ones(n, bool)))
        probe = self._rng.choice(n, self.probe_size, replace=n < self.probe_size)
        labelled = labels >= 0
        lab_rows = np.nonzero(labelled)[0]
        ctx = Context(
            cand_X=Xs,
            cand_probs=jnp.full((n, k), 1.0 / k),
            cand_member_probs=jnp.full((1, n, k), 1.0 / k),
            cand_index=jnp.arange(n, dtype=jnp.int32),
            pool_X=Xs,
            pool_mask=jnp.ones(n, bool),
            labeled=jnp.asarray(labelled),
            pool_probs=jnp.full((n, k), 1.0 / k),
            labels=jnp.asarray(labels),
            labeled_idx=jnp.zeros(n, jnp.int32).at[: len(lab_rows)].set(lab_rows),
            n_labeled=jnp.int32(len(lab_rows)),
            dist_labeled=jnp.zeros(n),
            density=density,
            class_mask=jnp.ones(k, bool),
            feature_mask=jnp.ones(Xs.shape[1], bool),
            step=jnp.int32(0),
            budget=self.budget,
        )
        self._episode = {
            "n_rows": n,
            "density": density,
            "probe": jnp.asarray(probe),
            "n_initial": len(lab_rows),
            "initial_val": None,
            "memory": initial_memory(self.strategy, self._key(), ctx),
        }
        return self._episode
