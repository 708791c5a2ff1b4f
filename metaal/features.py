"""Pooled model statistics: the observation an active-learning policy sees.

Pure functions of learner outputs and masks. Nothing depends on the raw
feature width or the class count, so a policy trained on some tasks reads any
other task: probabilities are summarised by normalised entropy, margin and
confidence; distances are scaled by the number of real features.

Candidate features (`CANDIDATE_FEATURES`, one row per candidate) come in
three groups: absolute values, z-scores within the candidate set, and ranks
within the candidate set (0 = lowest, 1 = highest), because absolute values
shift from task to task while relative ones transfer.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct

#: Absolute per-candidate features, in column order.
BASE_FEATURES = (
    "entropy",  # predictive entropy / log K
    "margin",  # p(top1) - p(top2)
    "least_confidence",  # (1 - p(top1)) / (1 - 1/K)
    "dist_labeled",  # distance to the nearest labelled sample / sqrt(2 D)
    "density",  # Gaussian-kernel density in the pool, scaled to max 1
    "egl",  # expected gradient length of the logistic loss / sqrt(D + 1)
    "class_share",  # labelled share of the candidate's predicted class
    "disagreement",  # ensemble mutual information (BALD) / log K; 0 for single models
)
RANKED = ("entropy", "margin", "dist_labeled", "density", "egl", "disagreement")
CANDIDATE_FEATURES = (
    BASE_FEATURES + tuple(f"z_{f}" for f in BASE_FEATURES) + tuple(f"rank_{f}" for f in RANKED)
)
N_CANDIDATE_FEATURES = len(CANDIDATE_FEATURES)

#: Pooled state features besides the sorted probe confidences, in order.
STATE_SUMMARY = (
    "mean_entropy",
    "std_entropy",
    "mean_margin",
    "std_margin",
    "budget_used",
    "labeled_fraction",
    "val_score",
    "val_gain_so_far",
    "label_entropy",
    "inv_classes",
)


def n_state_features(probe_size: int) -> int:
    """Length of the state vector for a probe set of `probe_size` pool samples."""
    return probe_size + len(STATE_SUMMARY)


def uncertainty(probs: jnp.ndarray, class_mask: jnp.ndarray) -> dict[str, jnp.ndarray]:
    """Normalised entropy, margin and least confidence of (n, K) probabilities."""
    k = jnp.maximum(jnp.sum(class_mask), 2).astype(jnp.float32)
    p = jnp.where(class_mask, probs, 0.0)
    ent = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.maximum(p, 1e-12)), 0.0), axis=-1)
    # the two largest by max / max-without-the-argmax: the same values as top_k(., 2),
    # several times cheaper on CPU
    q = jnp.where(class_mask, p, -1.0)
    top1 = jnp.max(q, axis=-1)
    first = jnp.argmax(q, axis=-1)[..., None] == jnp.arange(q.shape[-1])
    top2 = jnp.max(jnp.where(first, -1.0, q), axis=-1)
    return {
        "entropy": ent / jnp.log(k),
        "margin": top1 - top2,
        "least_confidence": (1.0 - top1) / (1.0 - 1.0 / k),
        "confidence": (top1 - 1.0 / k) / (1.0 - 1.0 / k),
    }


def mutual_information(member_probs: jnp.ndarray, class_mask: jnp.ndarray) -> jnp.ndarray:
    """BALD: entropy of the mean minus mean entropy of the members, / log K; (M, n, K) -> (n,)."""
    k = jnp.maximum(jnp.sum(class_mask), 2).astype(jnp.float32)

    def ent(p):
        return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.maximum(p, 1e-12)), 0.0), axis=-1)

    mi = ent(member_probs.mean(axis=0)) - ent(member_probs).mean(axis=0)
    return jnp.maximum(mi, 0.0) / jnp.log(k)


def expected_gradient_length(
    probs: jnp.ndarray, X: jnp.ndarray, n_features: jnp.ndarray
) -> jnp.ndarray:
    """Expected norm of the logistic-loss gradient if each label were revealed, scaled by sqrt(D+1).

    For label k the gradient w.r.t. (W, b) is (p - e_k) [x, 1]^T, of norm
    ||p - e_k|| * ||[x, 1]||; the expectation is over k ~ p.
    """
    sq = jnp.sum(probs**2, axis=-1, keepdims=True)
    norm_pk = jnp.sqrt(jnp.maximum(sq - 2 * probs + 1.0, 0.0))  # ||p - e_k|| for each k
    xnorm = jnp.sqrt(jnp.sum(X**2, axis=-1) + 1.0)
    return jnp.sum(probs * norm_pk, axis=-1) * xnorm / jnp.sqrt(n_features + 1.0)


def squared_distances(XT: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
    """Squared Euclidean distance of every column of `XT` (D, N) to `x` (D,), as (N,).

    Summed one feature at a time over the long N axis: XLA vectorises that
    several times better than a reduction over a short minor feature axis, and
    unlike |X|^2 - 2 X x + |x|^2 it is exact for duplicate rows (their
    distances tie) and unchanged by zero-padded features.
    """
    sq = jnp.zeros(XT.shape[1], XT.dtype)
    for d in range(XT.shape[0]):
        sq = sq + (XT[d] - x[d]) ** 2
    return sq


def _zscore(f: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    n = jnp.maximum(jnp.sum(mask), 1)
    mean = jnp.sum(jnp.where(mask, f, 0.0)) / n
    std = jnp.sqrt(jnp.sum(jnp.where(mask, (f - mean) ** 2, 0.0)) / n)
    return jnp.where(mask, (f - mean) / (std + 1e-6), 0.0)


#: Up to this many entries, ranks come from pairwise comparisons (n^2 work, no sort):
#: for a candidate set that is several times cheaper than XLA's CPU sort.
PAIRWISE_MAX = 128


def _stable_ranks(x: jnp.ndarray) -> jnp.ndarray:
    """Position of each entry of 1-D `x` in its stable ascending sort (ties by index)."""
    n = x.shape[0]
    if n > PAIRWISE_MAX:
        order = jnp.argsort(x)
        return jnp.zeros_like(order).at[order].set(jnp.arange(n))
    i = jnp.arange(n)
    before = (x[None, :] < x[:, None]) | ((x[None, :] == x[:, None]) & (i[None, :] < i[:, None]))
    return jnp.sum(before, axis=1)


def _sort(x: jnp.ndarray) -> jnp.ndarray:
    """`jnp.sort` of 1-D `x`, exact, by pairwise ranks for short inputs."""
    if x.shape[0] > PAIRWISE_MAX:
        return jnp.sort(x)
    slot = _stable_ranks(x)[:, None] == jnp.arange(x.shape[0])
    return jnp.sum(jnp.where(slot, x[:, None], 0.0), axis=0)


def _rank(f: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """Rank among valid entries scaled to [0, 1]; ties get distinct ranks by position."""
    ranks = _stable_ranks(jnp.where(mask, f, jnp.inf))
    n = jnp.maximum(jnp.sum(mask) - 1, 1)
    return jnp.where(mask, ranks / n, 0.0)


def candidate_features(
    probs: jnp.ndarray,
    member_probs: jnp.ndarray,
    X: jnp.ndarray,
    dist_labeled: jnp.ndarray,
    density: jnp.ndarray,
    labeled_class_counts: jnp.ndarray,
    class_mask: jnp.ndarray,
    feature_mask: jnp.ndarray,
    mask: jnp.ndarray,
) -> jnp.ndarray:
    """(C, N_CANDIDATE_FEATURES) features of C candidates; rows where `mask` is False are zero.

    `probs` (C, K) and `member_probs` (M, C, K) are the learner's predictions
    on the candidates' features `X` (C, D); `dist_labeled` and `density` are
    raw per-candidate values; `labeled_class_counts` (K,) counts labels so far.
    """
    d = jnp.sum(feature_mask).astype(jnp.float32)
    u = uncertainty(probs, class_mask)
    share = labeled_class_counts / jnp.maximum(jnp.sum(labeled_class_counts), 1)
    predicted = jnp.argmax(jnp.where(class_mask, probs, -1.0), axis=-1)
    base = {
        "entropy": u["entropy"],
        "margin": u["margin"],
        "least_confidence": u["least_confidence"],
        "dist_labeled": dist_labeled / jnp.sqrt(2.0 * d),
        "density": density,
        "egl": expected_gradient_length(probs, X, d),
        "class_share": share[predicted],
        "disagreement": mutual_information(member_probs, class_mask),
    }
    cols = [base[f] for f in BASE_FEATURES]
    cols += [_zscore(base[f], mask) for f in BASE_FEATURES]
    cols += [_rank(base[f], mask) for f in RANKED]
    feats = jnp.stack(cols, axis=-1).astype(jnp.float32)
    return jnp.where(mask[:, None], feats, 0.0)


def state_features(
    probe_probs: jnp.ndarray,
    probe_mask: jnp.ndarray,
    class_mask: jnp.ndarray,
    labeled_class_counts: jnp.ndarray,
    budget_used: jnp.ndarray,
    labeled_fraction: jnp.ndarray,
    val_score: jnp.ndarray,
    val_gain_so_far: jnp.ndarray,
) -> jnp.ndarray:
    """State vector: sorted confidences on the probe set, then `STATE_SUMMARY` in order."""
    u = uncertainty(probe_probs, class_mask)
    n = jnp.maximum(jnp.sum(probe_mask), 1)

    def mean_std(x):
        m = jnp.sum(jnp.where(probe_mask, x, 0.0)) / n
        return m, jnp.sqrt(jnp.sum(jnp.where(probe_mask, (x - m) ** 2, 0.0)) / n)

    conf = _sort(jnp.where(probe_mask, u["confidence"], 1.0))
    k = jnp.maximum(jnp.sum(class_mask), 2).astype(jnp.float32)
    share = labeled_class_counts / jnp.maximum(jnp.sum(labeled_class_counts), 1)
    label_entropy = -jnp.sum(jnp.where(share > 0, share * jnp.log(jnp.maximum(share, 1e-12)), 0))
    summary = jnp.stack(
        [
            *mean_std(u["entropy"]),
            *mean_std(u["margin"]),
            budget_used,
            labeled_fraction,
            val_score,
            val_gain_so_far,
            label_entropy / jnp.log(k),
            1.0 / k,
        ]
    )
    return jnp.concatenate([conf, summary]).astype(jnp.float32)


def pool_density(X: jnp.ndarray, mask: jnp.ndarray, n_reference: int = 512) -> jnp.ndarray:
    """Gaussian-kernel density of every pool row against (up to) `n_reference` pool rows, max 1.

    The bandwidth is the median squared distance among the references; rows
    outside `mask` get 0. The references are the first valid rows (pools are
    shuffled when split), so padding the pool changes nothing.
    """
    ref = X[:n_reference]
    ref_mask = mask[:n_reference]
    sq = jnp.sum(X**2, axis=1)[:, None] + jnp.sum(ref**2, axis=1)[None, :] - 2.0 * X @ ref.T
    sq = jnp.maximum(sq, 0.0)
    ref_sq = jnp.where(ref_mask[:, None] & ref_mask[None, :], sq[:n_reference], jnp.nan)
    h2 = jnp.nanmedian(ref_sq) + 1e-6
    k = jnp.where(ref_mask[None, :], jnp.exp(-sq / h2), 0.0)
    dens = jnp.sum(k, axis=1) / jnp.maximum(jnp.sum(ref_mask), 1)
    dens = jnp.where(mask, dens, 0.0)
    return dens / jnp.maximum(jnp.max(dens), 1e-12)


@struct.dataclass
class Observation:
    """What a policy sees: pooled state, per-candidate features and the action mask."""

    state: jnp.ndarray
    candidates: jnp.ndarray
    action_mask: jnp.ndarray


def observation(
    cand_member_probs: jnp.ndarray,
    cand_X: jnp.ndarray,
    cand_dist_labeled: jnp.ndarray,
    cand_density: jnp.ndarray,
    cand_mask: jnp.ndarray,
    probe_probs: jnp.ndarray,
    probe_mask: jnp.ndarray,
    labeled_class_counts: jnp.ndarray,
    class_mask: jnp.ndarray,
    feature_mask: jnp.ndarray,
    budget_used: jnp.ndarray,
    labeled_fraction: jnp.ndarray,
    val_score: jnp.ndarray,
    val_gain_so_far: jnp.ndarray,
) -> Observation:
    """The `Observation` of one AL step, shared by the env and the query adapter.

    `cand_member_probs` (M, C, K) are the learner's (members') predictions on
    the candidates; `probe_probs` its predictions on the probe rows.
    """
    cand = candidate_features(
        cand_member_probs.mean(axis=0),
        cand_member_probs,
        cand_X,
        cand_dist_labeled,
        cand_density,
        labeled_class_counts,
        class_mask,
        feature_mask,
        cand_mask,
    )
    state = state_features(
        probe_probs,
        probe_mask,
        class_mask,
        labeled_class_counts,
        budget_used,
        labeled_fraction,
        val_score,
        val_gain_so_far,
    )
    return Observation(state=state, candidates=cand, action_mask=cand_mask)
