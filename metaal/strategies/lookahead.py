"""Look-ahead strategies: what labelling a candidate would do to the learner, label unknown.

For a candidate x and each of its `N_LABELS` likeliest labels k under the
current learner, the learner is refitted (warm, the env's own refit) with
(x, k) added to the labelled rows and predicts the unlabelled pool again.
Averaged over k, weighted by the learner's probabilities of those labels
(renormalised), `lookahead_stats` gives per candidate:

- `change`: the mean L1 change of the pool's predicted probabilities
  (expected model output change, EMOC: Freytag, Rodner & Denzler 2014);
- `error`: the mean of 1 - max probability over the pool after the refit,
  the learner's own estimate of its 0/1 error (expected error reduction,
  EER: Roy & McCallum 2001);
- `entropy`: the mean normalised predictive entropy over the pool after the
  refit (EER with the log loss).

`EXTRA_STATS`, which a look-ahead policy may read besides those three
(`lookahead_stats` in its config), say what the expectation hides:

- `error_spread`, `change_spread`: how far `error` and `change` differ
  between the likeliest labels (max - min over them): a pick whose worth
  hinges on its label is a gamble that the mean does not show;
- `flip`: the expected share of unlabelled pool rows whose predicted class
  the refit changes (EMOC counted in decisions, not probabilities);
- `fit_error`: the expected mean 1 - p(label) of the labelled rows after the
  refit: how much the candidate's label would contradict what is already
  labelled (a label-noise and outlier signal that no pool statistic carries).

No label is read: the look-ahead uses the learner's beliefs only, so both
strategies are deployable, unlike the oracle (`reference.ORACLE`), which
refits with the true label and scores on validation labels.

Strategies (each refits 2 x `SHORTLIST` times per step, so they look ahead
only over margin sampling's `SHORTLIST` most uncertain candidates; the others
keep margin's order below every shortlisted one):

- `eer`: the candidate whose label most lowers the expected pool error;
- `emoc`: the candidate whose label most changes the pool's predictions.

A learned policy reads the same statistics as candidate columns
(`LOOKAHEAD_COLUMNS`, a policy config's `lookahead`: S): it then scores only
margin's S most uncertain candidates, each with its statistics and their
z-scores within the shortlist (`lookahead_observation`).

Inside a batch round (`query_batch` > 1) the labels of the round's earlier
picks are not back yet: the refit counts them with the learner's predicted
label, the "believer" rule of batch Bayesian optimisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from metaal import features
from metaal.features import Observation
from metaal.strategies.base import Context, Strategy

#: Margin's most uncertain candidates that the look-ahead strategies refit for.
SHORTLIST = 16
#: Likeliest labels of a candidate that each get a refit.
N_LABELS = 2
#: The statistics eer, emoc and every look-ahead policy read, in order.
STATS = ("change", "error", "entropy")
#: Statistics a look-ahead policy may read besides `STATS` (the module docstring says what).
EXTRA_STATS = ("error_spread", "change_spread", "flip", "fit_error")


def check_stats(names: Sequence[str]) -> tuple[str, ...]:
    """`names` as a tuple if they are `STATS` followed by distinct `EXTRA_STATS`; else an error."""
    names = tuple(names)
    extra = names[len(STATS) :]
    if (
        names[: len(STATS)] != STATS
        or set(extra) - set(EXTRA_STATS)
        or len(set(extra)) < len(extra)
    ):
        raise ValueError(
            f"look-ahead statistics {list(names)}: they start with {list(STATS)}, then any of "
            f"{list(EXTRA_STATS)}, each once"
        )
    return names


def lookahead_columns(stats: Sequence[str] = STATS) -> tuple[str, ...]:
    """The columns a look-ahead policy reading `stats` appends: each statistic, then its z-score."""
    stats = check_stats(stats)
    return (*(f"la_{s}" for s in stats), *(f"z_la_{s}" for s in stats))


#: The columns a look-ahead policy's candidates carry besides its trained features, in order.
LOOKAHEAD_COLUMNS = lookahead_columns(STATS)
#: Score offset that puts every candidate outside the shortlist below every one inside
#: (utilities lie in [-1, 2]; a small offset keeps margin's order exact in float32).
_OUTSIDE = -3.0


def _refit_rows(ctx: Context) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """The labelled rows a look-ahead refit starts from: (X, y, weights, free slot mask).

    The first `n_labeled` entries of `labeled_idx` are labelled; the last
    `round_pos` of them are this batch round's picks, whose labels are not back:
    they count with the learner's predicted label.
    """
    idx = ctx.labeled_idx
    pos = jnp.arange(idx.shape[0])
    known = pos < ctx.n_labeled - ctx.round_pos
    predicted = jnp.argmax(jnp.where(ctx.class_mask, ctx.pool_probs[idx], -1.0), axis=-1)
    y = jnp.where(known, jnp.maximum(ctx.labels[idx], 0), predicted)
    weights = (pos < ctx.n_labeled).astype(jnp.float32)
    return ctx.pool_X[idx], y.astype(jnp.int32), weights, pos == ctx.n_labeled


def lookahead_stats(
    ctx: Context, rows: jnp.ndarray, n_labels: int = N_LABELS, stats: Sequence[str] = STATS
) -> jnp.ndarray:
    """(len(rows), len(stats)) expected `stats` of labelling candidates `rows` (into `ctx.cand_*`).

    `stats` is `STATS`, optionally followed by `EXTRA_STATS` names. Needs
    `ctx.refit` and `ctx.predict_proba` (a metaal learner).
    """
    stats = check_stats(stats)
    extra = len(stats) > len(STATS)
    if ctx.refit is None or ctx.predict_proba is None:
        raise ValueError(
            "look-ahead strategies (eer, emoc) refit the learner, and this step has no metaal "
            "learner (a scikit-learn clf was given); run them without clf"
        )
    X, y, weights, slot = _refit_rows(ctx)
    unlabeled = (ctx.pool_mask & ~ctx.labeled).astype(jnp.float32)
    n_eval = jnp.maximum(jnp.sum(unlabeled), 1.0)
    n_classes = jnp.maximum(jnp.sum(ctx.class_mask), 2).astype(jnp.float32)
    before = ctx.pool_probs

    def after(x, label):
        params = ctx.refit(
            ctx.learner_params,
            jnp.where(slot[:, None], x, X),
            jnp.where(slot, label, y),
            jnp.where(slot, 1.0, weights),
            ctx.class_mask,
        )
        p = ctx.predict_proba(params, ctx.pool_X, ctx.class_mask)
        ent = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.maximum(p, 1e-12)), 0.0), axis=-1)
        per_row = jnp.stack(
            [
                jnp.sum(jnp.abs(p - before), axis=-1),
                1.0 - jnp.max(p, axis=-1),
                ent / jnp.log(n_classes),
            ]
        )
        base = per_row @ unlabeled / n_eval
        if not extra:  # eer's and emoc's program, unchanged
            return base
        decided = jnp.where(ctx.class_mask, p, -1.0)
        flipped = jnp.argmax(decided, -1) != jnp.argmax(jnp.where(ctx.class_mask, before, -1.0), -1)
        q = ctx.predict_proba(params, X, ctx.class_mask)
        p_label = jnp.take_along_axis(q, y[:, None], axis=-1)[:, 0]
        fit_error = jnp.sum(weights * (1.0 - p_label)) / jnp.maximum(jnp.sum(weights), 1.0)
        return jnp.concatenate(
            [base, jnp.stack([flipped.astype(jnp.float32) @ unlabeled / n_eval, fit_error])]
        )

    probs = jnp.where(ctx.class_mask, ctx.cand_probs[rows], 0.0)
    top_p, top_k = jax.lax.top_k(probs, n_labels)  # (R, n_labels)
    w = top_p / jnp.maximum(jnp.sum(top_p, axis=-1, keepdims=True), 1e-12)
    x = ctx.cand_X[rows]
    per_label = jax.vmap(lambda xi, ks: jax.vmap(lambda k: after(xi, k))(ks))(x, top_k)  # (R, L, s)
    mean = jnp.einsum("rl,rls->rs", w, per_label)
    if not extra:
        return mean
    real = (w > 0)[:, :, None]  # a label of probability 0 is no outcome
    spread = jnp.max(jnp.where(real, per_label, -jnp.inf), axis=1) - jnp.min(
        jnp.where(real, per_label, jnp.inf), axis=1
    )
    column = {
        "change": mean[:, 0],
        "error": mean[:, 1],
        "entropy": mean[:, 2],
        "flip": mean[:, 3],
        "fit_error": mean[:, 4],
        "change_spread": spread[:, 0],
        "error_spread": spread[:, 1],
    }
    return jnp.stack([column[name] for name in stats], axis=1)


def margin_shortlist(ctx: Context, mask: jnp.ndarray, size: int = SHORTLIST) -> jnp.ndarray:
    """Indices of margin sampling's `size` most uncertain selectable candidates (fewer if fewer)."""
    margin = features.uncertainty(ctx.cand_probs, ctx.class_mask)["margin"]
    return jax.lax.top_k(jnp.where(mask, -margin, -jnp.inf), min(size, mask.shape[0]))[1]


def _shortlisted(utility_of_stats):
    def score(key: jax.Array, obs, ctx: Context, memory):
        margin = features.uncertainty(ctx.cand_probs, ctx.class_mask)["margin"]
        rows = margin_shortlist(ctx, obs.action_mask)
        utility = utility_of_stats(lookahead_stats(ctx, rows))
        outside = _OUTSIDE - margin  # margin's order, below every shortlisted candidate
        return outside.at[rows].set(utility), memory

    return score


EER = Strategy("eer", "uncertainty", _shortlisted(lambda s: -s[:, 1]))
EMOC = Strategy("emoc", "uncertainty", _shortlisted(lambda s: s[:, 0]))


def lookahead_observation(
    obs: Observation, ctx: Context, size: int = SHORTLIST, stats: Sequence[str] = STATS
) -> Observation:
    """`obs` with `lookahead_columns(stats)` appended and its action mask cut to margin's shortlist.

    Only margin's `size` most uncertain selectable candidates are looked ahead
    for; the columns are 0 for every other candidate.
    """
    rows = margin_shortlist(ctx, obs.action_mask, size)
    valid = obs.action_mask[rows]
    columns = lookahead_columns(stats)
    stats = lookahead_stats(ctx, rows, stats=stats)
    z = jax.vmap(features.zscore, in_axes=(1, None), out_axes=1)(stats, valid)
    extra = jnp.where(valid[:, None], jnp.concatenate([stats, z], axis=1), 0.0)
    c = obs.action_mask.shape[0]
    return Observation(
        state=obs.state,
        candidates=jnp.concatenate(
            [
                obs.candidates,
                jnp.zeros((c, extra.shape[1]), obs.candidates.dtype).at[rows].set(extra),
            ],
            axis=1,
        ),
        action_mask=jnp.zeros(c, bool).at[rows].set(valid),
        features=obs.features + columns,
    )


def lookahead_picks(
    obs: Observation, ctx: Context, size: int = SHORTLIST, stats: Sequence[str] = STATS
) -> tuple[Observation, jnp.ndarray]:
    """`lookahead_observation` cut to the shortlist's rows, and those rows' candidate indices.

    A scorer reads each candidate's row alone, so scoring these rows gives the shortlist's
    scores for a fraction of the work of scoring the whole pool.
    """
    rows = margin_shortlist(ctx, obs.action_mask, size)
    seen = lookahead_observation(obs, ctx, size, stats)
    cut = seen.replace(candidates=seen.candidates[rows], action_mask=seen.action_mask[rows])
    return cut, rows
