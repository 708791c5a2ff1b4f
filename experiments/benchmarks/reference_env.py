"""A numpy + scikit-learn AL env with the semantics of `envs.core`, as a speed baseline.

This is how an AL environment is usually written (LAL-RL's env is this
shape): one episode at a time, a scikit-learn `LogisticRegression` refitted
(warm start) after every label, validation and test accuracy recomputed, and
the same candidate and state features as `metaal.features` computed in numpy
(entropy, margin, least confidence, distance to the labelled set, pool
density, expected gradient length, class share, the batch-round features,
z-scores and ranks; sorted
probe confidences and summary statistics for the state).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from metaal import features
from metaal.data.task import Split

#: The columns, from the feature table; their values are computed here, in numpy, independently.
COLUMNS = features.DEFAULT_CANDIDATE_FEATURES


def pool_density(X: np.ndarray, n_reference: int = 512) -> np.ndarray:
    """Gaussian-kernel density against the first `n_reference` rows, bandwidth = median, max 1."""
    ref = X[:n_reference]
    sq = np.maximum((X**2).sum(1)[:, None] + (ref**2).sum(1)[None, :] - 2 * X @ ref.T, 0.0)
    h2 = np.median(sq[: len(ref)]) + 1e-6
    dens = np.exp(-sq / h2).mean(axis=1)
    return dens / max(dens.max(), 1e-12)


def uncertainty(probs: np.ndarray) -> dict[str, np.ndarray]:
    """Normalised entropy, margin, least confidence and confidence of (n, K) probabilities."""
    k = max(probs.shape[1], 2)
    p = np.clip(probs, 1e-12, 1.0)
    top2 = -np.sort(-probs, axis=1)[:, :2]
    return {
        "entropy": -(probs * np.log(p)).sum(1) / np.log(k),
        "margin": top2[:, 0] - top2[:, 1],
        "least_confidence": (1 - top2[:, 0]) / (1 - 1 / k),
        "confidence": (top2[:, 0] - 1 / k) / (1 - 1 / k),
    }


def _zscore(f: np.ndarray) -> np.ndarray:
    return (f - f.mean()) / (f.std() + 1e-6)


def _rank(f: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(f))
    ranks[np.argsort(f, kind="stable")] = np.arange(len(f))
    return ranks / max(len(f) - 1, 1)


class ReferenceEnv:
    """One episode at a time; `reset(seed) -> obs`, `step(action) -> obs, reward, done, info`."""

    def __init__(
        self,
        split: Split,
        budget: int = 100,
        n_initial: int = 5,
        n_candidates: int = 32,
        probe_size: int = 32,
        C: float = 1.0,
    ) -> None:
        self.split = split
        self.budget, self.n_initial, self.n_candidates = budget, n_initial, n_candidates
        self.probe_size, self.C = probe_size, C
        self.density = pool_density(split.pool_X)
        self.k = split.n_classes

    def _fit(self) -> None:
        idx = np.array(self.labeled_idx)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.clf.fit(self.split.pool_X[idx], self.split.pool_y[idx])

    def _proba(self, X: np.ndarray) -> np.ndarray:
        out = np.zeros((len(X), self.k))
        out[:, self.clf.classes_] = self.clf.predict_proba(X)
        return out

    def _sample_candidates(self) -> None:
        available = np.flatnonzero(~self.labeled)
        self.candidates = self.rng.choice(available, self.n_candidates, replace=False)

    def reset(self, seed: int) -> dict[str, np.ndarray]:
        """Stratified initial set, cold fit, first candidates."""
        s = self.split
        self.rng = np.random.default_rng(seed)
        order = self.rng.permutation(len(s.pool_y))
        firsts = [order[s.pool_y[order] == c][0] for c in np.unique(s.pool_y)]
        taken = set(firsts)
        rest = [i for i in order if i not in taken]
        self.labeled_idx = (firsts + rest)[: self.n_initial]
        self.labeled = np.zeros(len(s.pool_y), bool)
        self.labeled[self.labeled_idx] = True
        self.clf = LogisticRegression(C=self.C, warm_start=True, max_iter=100)
        self._fit()
        self.val_score = self.initial_val = self.clf.score(s.val_X, s.val_y)
        diff = s.pool_X[:, None, :] - s.pool_X[self.labeled_idx][None, :, :]
        self.dist = np.sqrt((diff**2).sum(-1)).min(axis=1)
        self.probe = self.rng.permutation(len(s.pool_y))[: self.probe_size]
        self.steps = 0
        self._sample_candidates()
        return self.observe()

    def observe(self) -> dict[str, np.ndarray]:
        """Candidate features (C, len(COLUMNS)) and the state vector, as in `metaal.features`."""
        s = self.split
        X = s.pool_X[self.candidates]
        probs = self._proba(X)
        u = uncertainty(probs)
        d = X.shape[1]
        counts = np.bincount(s.pool_y[self.labeled_idx], minlength=self.k)
        share = counts / max(counts.sum(), 1)
        norm_pk = np.sqrt(np.maximum((probs**2).sum(1, keepdims=True) - 2 * probs + 1, 0))
        egl = (probs * norm_pk).sum(1) * np.sqrt((X**2).sum(1) + 1) / np.sqrt(d + 1)
        base = {
            "entropy": u["entropy"],
            "margin": u["margin"],
            "least_confidence": u["least_confidence"],
            "dist_labeled": self.dist[self.candidates] / np.sqrt(2 * d),
            "density": self.density[self.candidates],
            "egl": egl,
            "class_share": share[probs.argmax(1)],
            "disagreement": np.zeros(len(X)),
            # every round is one pick (a refit after every label, query_batch 1): no earlier
            # pick in the round, exp(-inf) = 0, and no progress through it
            "round_similarity": np.zeros(len(X)),
            "round_progress": np.zeros(len(X)),
        }
        form = {"raw": lambda f: f, "z": _zscore, "rank": _rank}
        cols = [form[kind](base[f]) for kind, f in map(features.parse_column, COLUMNS)]
        probe = uncertainty(self._proba(s.pool_X[self.probe]))
        label_share = share[share > 0]
        state = np.concatenate(
            [
                np.sort(probe["confidence"]),
                [
                    probe["entropy"].mean(),
                    probe["entropy"].std(),
                    probe["margin"].mean(),
                    probe["margin"].std(),
                    self.steps / self.budget,
                    len(self.labeled_idx) / len(s.pool_y),
                    self.val_score,
                    self.val_score - self.initial_val,
                    -(label_share * np.log(label_share)).sum() / np.log(self.k),
                    1 / self.k,
                ],
            ]
        )
        return {
            "state": state.astype(np.float32),
            "candidates": np.stack(cols, 1).astype(np.float32),
            "action_mask": np.ones(self.n_candidates, bool),
        }

    def step(self, action: int) -> tuple[dict[str, np.ndarray], float, bool, dict]:
        """Label candidate `action`, refit (warm start), rescore; reward = validation gain."""
        s = self.split
        idx = int(self.candidates[action])
        self.labeled[idx] = True
        self.labeled_idx.append(idx)
        self._fit()
        val = self.clf.score(s.val_X, s.val_y)
        test = self.clf.score(s.test_X, s.test_y)
        self.dist = np.minimum(self.dist, np.sqrt(((s.pool_X - s.pool_X[idx]) ** 2).sum(1)))
        reward = val - self.val_score
        self.val_score = val
        self.steps += 1
        self._sample_candidates()
        info = {"val_score": val, "test_score": test, "pool_index": idx}
        return self.observe(), reward, self.steps >= self.budget, info
