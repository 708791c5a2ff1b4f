"""Pooled model statistics: the observation an active-learning policy sees.

Pure functions of learner outputs and masks. Nothing depends on the raw
feature width or the class count, so a policy trained on some tasks reads any
other task: probabilities are summarised by normalised entropy, margin and
confidence; distances are scaled by the number of real features.

Candidate features (one row per candidate) are defined once, in the table
`FEATURES` (name, function of the step's `StepInputs`, bounds, and whether the
feature also enters as a z-score and a rank within the candidate set). The
columns are every raw feature in table order, then the z-scores, then the
ranks (0 = lowest, 1 = highest), because absolute values shift from task to
task while relative ones transfer. `candidate_feature_names()` lists them;
every `Observation` carries the names of its columns, so a policy selects the
columns it was trained on by name, and `register_feature` adds a feature
without changing what a saved policy reads:

    register_feature(CandidateFeature("far", lambda s: s.cand_dist_labeled, 0.0, np.inf))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


@struct.dataclass
class StepInputs:
    """What the observation of one AL step is computed from (C candidates, K classes, D features).

    The env and the scikit-activeml adapter fill it; every feature function reads it.
    """

    cand_member_probs: jnp.ndarray  # (M, C, K) the learner's (members') probabilities
    cand_X: jnp.ndarray  # (C, D) the candidates' standardised features
    cand_dist_labeled: jnp.ndarray  # (C,) Euclidean distance to the nearest labelled row
    cand_density: jnp.ndarray  # (C,) pool density (`pool_density`)
    cand_mask: jnp.ndarray  # (C,) bool: which candidates may be picked
    probe_probs: jnp.ndarray  # (P, K) probabilities on the probe rows
    probe_mask: jnp.ndarray  # (P,) bool: real probe rows
    labeled_class_counts: jnp.ndarray  # (K,) labels revealed per class
    class_mask: jnp.ndarray  # (K,) bool: real classes
    feature_mask: jnp.ndarray  # (D,) bool: real features
    budget_used: jnp.ndarray  # () queries spent / budget
    labeled_fraction: jnp.ndarray  # () labelled rows / pool rows
    val_score: jnp.ndarray  # () current validation accuracy
    val_gain_so_far: jnp.ndarray  # () validation accuracy minus its initial value
    # the current batch round (`EnvConfig.query_batch`): the picks made since the last refit
    cand_dist_round: jnp.ndarray  # (C,) distance to the nearest pick of this round; inf: none
    round_progress: jnp.ndarray  # () picks made so far in this round / query_batch, in [0, 1)

    @property
    def cand_probs(self) -> jnp.ndarray:
        """(C, K) mean probabilities over the members."""
        return self.cand_member_probs.mean(axis=0)

    @property
    def n_features(self) -> jnp.ndarray:
        """Number of real features D, as float32."""
        return jnp.sum(self.feature_mask).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class CandidateFeature:
    """One per-candidate feature: `compute(inputs) -> (C,)` and the bounds of its raw value."""

    name: str
    compute: Callable[[StepInputs], jnp.ndarray]
    low: float
    high: float
    zscore: bool = True
    """Also a column `z_<name>`: the z-score within the candidate set."""
    rank: bool = True
    """Also a column `rank_<name>`: the rank within the candidate set, scaled to [0, 1]."""
    doc: str = ""


def _entropy(s: StepInputs) -> jnp.ndarray:
    return uncertainty(s.cand_probs, s.class_mask)["entropy"]


def _margin(s: StepInputs) -> jnp.ndarray:
    return uncertainty(s.cand_probs, s.class_mask)["margin"]


def _least_confidence(s: StepInputs) -> jnp.ndarray:
    return uncertainty(s.cand_probs, s.class_mask)["least_confidence"]


def _dist_labeled(s: StepInputs) -> jnp.ndarray:
    return s.cand_dist_labeled / jnp.sqrt(2.0 * s.n_features)


def _egl(s: StepInputs) -> jnp.ndarray:
    return expected_gradient_length(s.cand_probs, s.cand_X, s.n_features)


def _class_share(s: StepInputs) -> jnp.ndarray:
    counts = s.labeled_class_counts
    share = counts / jnp.maximum(jnp.sum(counts), 1)
    return share[jnp.argmax(jnp.where(s.class_mask, s.cand_probs, -1.0), axis=-1)]


def _disagreement(s: StepInputs) -> jnp.ndarray:
    return mutual_information(s.cand_member_probs, s.class_mask)


def _round_similarity(s: StepInputs) -> jnp.ndarray:
    # exp(-inf) = 0: a round without picks yet (and every step when query_batch = 1)
    return jnp.exp(-jnp.square(s.cand_dist_round) / s.n_features)


def _round_progress(s: StepInputs) -> jnp.ndarray:
    return jnp.broadcast_to(jnp.asarray(s.round_progress, jnp.float32), s.cand_mask.shape)


#: The candidate-feature table, in column order (`register_feature` appends to it).
FEATURES: dict[str, CandidateFeature] = {
    f.name: f
    for f in (
        CandidateFeature("entropy", _entropy, 0.0, 1.0, doc="predictive entropy / log K"),
        CandidateFeature("margin", _margin, 0.0, 1.0, doc="p(top1) - p(top2)"),
        CandidateFeature(
            "least_confidence",
            _least_confidence,
            0.0,
            1.0,
            rank=False,
            doc="(1 - p(top1)) / (1 - 1/K)",
        ),
        CandidateFeature(
            "dist_labeled",
            _dist_labeled,
            0.0,
            np.inf,
            doc="distance to the nearest labelled sample / sqrt(2 D)",
        ),
        CandidateFeature(
            "density",
            lambda s: s.cand_density,
            0.0,
            1.0,
            doc="Gaussian-kernel density in the pool, scaled to max 1",
        ),
        CandidateFeature(
            "egl",
            _egl,
            0.0,
            np.inf,
            doc="expected gradient length of the logistic loss / sqrt(D + 1)",
        ),
        CandidateFeature(
            "class_share",
            _class_share,
            0.0,
            1.0,
            rank=False,
            doc="labelled share of the candidate's predicted class",
        ),
        CandidateFeature(
            "disagreement",
            _disagreement,
            0.0,
            1.0,
            doc="ensemble mutual information (BALD) / log K; 0 for single models",
        ),
        CandidateFeature(
            "round_similarity",
            _round_similarity,
            0.0,
            1.0,
            doc="exp(-d^2 / D), d the distance to the nearest pick of this batch round; "
            "0 while the round has no picks (always with query_batch 1)",
        ),
        CandidateFeature(
            "round_progress",
            _round_progress,
            0.0,
            1.0,
            zscore=False,
            rank=False,
            doc="picks made so far in this batch round / query_batch (the same for every "
            "candidate; always 0 with query_batch 1)",
        ),
    )
}

#: The batch-round features: built in, but newer than policy files without a feature list.
BATCH_ROUND_FEATURES = ("round_similarity", "round_progress")
_LEGACY_BUILTINS = tuple(f for f in FEATURES if f not in BATCH_ROUND_FEATURES)


def register_feature(feature: CandidateFeature) -> None:
    """Add `feature` to the table (its columns come after the existing ones of each group).

    Register features before building envs or adapters: each env fixes its
    columns when it is built. Policies saved before keep reading exactly the
    columns they were trained on.
    """
    if feature.name in FEATURES:
        raise ValueError(f"candidate feature {feature.name!r} is already registered")
    if feature.name.startswith(("z_", "rank_")):
        raise ValueError(
            f"candidate feature {feature.name!r}: the prefixes z_ and rank_ name derived "
            "columns; choose another name"
        )
    FEATURES[feature.name] = feature


def unregister_feature(name: str) -> None:
    """Remove a feature added by `register_feature` (the built-in ones stay)."""
    if name in BUILTIN_FEATURES:
        raise ValueError(f"{name!r} is a built-in candidate feature and cannot be removed")
    FEATURES.pop(name)


def candidate_feature_names() -> tuple[str, ...]:
    """The candidate columns of the current table: raw features, z-scores, then ranks."""
    return _columns(FEATURES.values())


def _columns(table) -> tuple[str, ...]:
    table = tuple(table)
    return (
        tuple(f.name for f in table)
        + tuple(f"z_{f.name}" for f in table if f.zscore)
        + tuple(f"rank_{f.name}" for f in table if f.rank)
    )


def parse_column(column: str) -> tuple[str, str]:
    """`(form, feature)` of a column name: form is `raw`, `z` or `rank` (`z_margin`: z, margin)."""
    for form, prefix in (("z", "z_"), ("rank", "rank_")):
        if column.startswith(prefix) and column[len(prefix) :] in FEATURES:
            return form, column[len(prefix) :]
    if column not in FEATURES:
        raise ValueError(
            f"unknown candidate feature column {column!r}; known: "
            f"{', '.join(candidate_feature_names())}"
        )
    return "raw", column


def column_bounds(names: tuple[str, ...], c: int) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of each column in `names` over a candidate set of `c`.

    A raw feature has its table bounds; a z-score among at most `c` values
    has |z| <= sqrt(c - 1); a rank lies in [0, 1].
    """
    low, high = [], []
    for name in names:
        form, feature = parse_column(name)
        if form == "raw":
            low.append(FEATURES[feature].low)
            high.append(FEATURES[feature].high)
        elif form == "z":
            low.append(-np.sqrt(c))
            high.append(np.sqrt(c))
        else:
            low.append(0.0)
            high.append(1.0)
    return np.float32(low), np.float32(high)


#: The built-in candidate features (`unregister_feature` keeps them).
BUILTIN_FEATURES = tuple(FEATURES)
#: The built-in candidate columns: what an env computes, and a new policy reads, by default.
DEFAULT_CANDIDATE_FEATURES = candidate_feature_names()
#: The columns a policy file without a feature list reads: the built-in ones before the
#: batch-round features (`round_similarity`, `round_progress`) joined the table.
LEGACY_CANDIDATE_FEATURES = _columns(FEATURES[f] for f in _LEGACY_BUILTINS)
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


#: Up to this many features, `squared_distances` unrolls its loop over them (XLA fuses it
#: into one pass); wider data loops with `lax.fori_loop`, so compile time stays flat.
UNROLL_MAX_FEATURES = 64


def squared_distances(XT: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
    """Squared Euclidean distance of every column of `XT` (D, N) to `x` (D,), as (N,).

    Summed one feature at a time over the long N axis: XLA vectorises that
    several times better than a reduction over a short minor feature axis, and
    unlike |X|^2 - 2 X x + |x|^2 it is exact for duplicate rows (their
    distances tie) and unchanged by zero-padded features. Both forms below
    keep those two properties.
    """
    if XT.shape[0] <= UNROLL_MAX_FEATURES:
        sq = jnp.zeros(XT.shape[1], XT.dtype)
        for d in range(XT.shape[0]):
            sq = sq + (XT[d] - x[d]) ** 2
        return sq
    return jax.lax.fori_loop(
        0, XT.shape[0], lambda d, sq: sq + (XT[d] - x[d]) ** 2, jnp.zeros(XT.shape[1], XT.dtype)
    )


def zscore(f: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """`f` (n,) as z-scores over the entries where `mask` holds; 0 elsewhere (a `z_` column)."""
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


def candidate_features(inputs: StepInputs, names: tuple[str, ...]) -> jnp.ndarray:
    """(C, len(names)) columns `names` of the candidates; rows outside `cand_mask` are zero."""
    mask = inputs.cand_mask
    parsed = [parse_column(name) for name in names]
    raw = {f: FEATURES[f].compute(inputs) for f in dict.fromkeys(f for _, f in parsed)}
    form = {"raw": lambda f: f, "z": lambda f: zscore(f, mask), "rank": lambda f: _rank(f, mask)}
    cols = [form[kind](raw[feature]) for kind, feature in parsed]
    feats = jnp.stack(cols, axis=-1).astype(jnp.float32)
    return jnp.where(mask[:, None], feats, 0.0)


def state_features(inputs: StepInputs) -> jnp.ndarray:
    """State vector: sorted confidences on the probe set, then `STATE_SUMMARY` in order."""
    probe_mask, class_mask = inputs.probe_mask, inputs.class_mask
    u = uncertainty(inputs.probe_probs, class_mask)
    n = jnp.maximum(jnp.sum(probe_mask), 1)

    def mean_std(x):
        m = jnp.sum(jnp.where(probe_mask, x, 0.0)) / n
        return m, jnp.sqrt(jnp.sum(jnp.where(probe_mask, (x - m) ** 2, 0.0)) / n)

    conf = _sort(jnp.where(probe_mask, u["confidence"], 1.0))
    k = jnp.maximum(jnp.sum(class_mask), 2).astype(jnp.float32)
    counts = inputs.labeled_class_counts
    share = counts / jnp.maximum(jnp.sum(counts), 1)
    label_entropy = -jnp.sum(jnp.where(share > 0, share * jnp.log(jnp.maximum(share, 1e-12)), 0))
    summary = jnp.stack(
        [
            *mean_std(u["entropy"]),
            *mean_std(u["margin"]),
            inputs.budget_used,
            inputs.labeled_fraction,
            inputs.val_score,
            inputs.val_gain_so_far,
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
    """What a policy sees: pooled state, per-candidate features and the action mask.

    `features` names the columns of `candidates` (static: it is part of the
    pytree's structure, so jitted code sees it at trace time and a policy
    selects its columns by name).
    """

    state: jnp.ndarray
    candidates: jnp.ndarray
    action_mask: jnp.ndarray
    features: tuple[str, ...] = struct.field(pytree_node=False, default=DEFAULT_CANDIDATE_FEATURES)

    def columns(self, names: tuple[str, ...] | list[str]) -> jnp.ndarray:
        """The candidate columns `names` (..., C, len(names)); a clear error if one is missing."""
        names = tuple(names)
        if names == self.features:
            return self.candidates
        missing = [n for n in names if n not in self.features]
        if missing:
            raise ValueError(
                f"the observation has no candidate feature {missing}; it has "
                f"{list(self.features)}. Register the feature (metaal.features.register_feature) "
                "before building the env"
            )
        return self.candidates[..., np.array([self.features.index(n) for n in names])]

    def column(self, name: str) -> jnp.ndarray:
        """The candidate column `name` (..., C)."""
        return self.columns((name,))[..., 0]


def observation(inputs: StepInputs, names: tuple[str, ...] | None = None) -> Observation:
    """The `Observation` of one AL step, shared by the env and the query adapter.

    `names` are the candidate columns to compute (default: the whole table).
    """
    names = candidate_feature_names() if names is None else tuple(names)
    return Observation(
        state=state_features(inputs),
        candidates=candidate_features(inputs, names),
        action_mask=inputs.cand_mask,
        features=names,
    )
