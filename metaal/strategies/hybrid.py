"""Hybrid strategies: uncertainty combined with where samples lie, or chosen among by a bandit.

- `info_density`: information density (Settles & Craven 2008): normalised
  entropy times pool density to the power `BETA`;
- `badge`: BADGE (Ash et al. 2020) in a sequential env. A sample's gradient
  embedding is the last-layer gradient of the loss at its predicted label,
  (p - e_yhat) outer [x, 1] (exact for logistic regression). BADGE seeds
  k-means++ in this space; one query at a time, that is the k-means++ D^2
  step: sample a candidate with probability proportional to its squared
  distance to the nearest labelled sample's embedding (Gumbel-max sampling,
  so the env's argmax draws it). Batches through the query adapter repeat
  the step with each pick added to the centres: k-means++ seeding of the
  batch, starting from the labelled set;
- `dropquery`: DropQuery (Gupte et al. 2024, ALFM; scikit-activeml's
  `DropQuery`). At the first pick of every batch round: each candidate's
  features are perturbed by dropout (`DROPQUERY_DRAWS` draws at rate
  `DROPQUERY_RATE`, inverted scaling as torch's dropout) and the current
  learner predicts on them; the candidates whose prediction changes in more
  than half of the draws are the inconsistent ones, topped up to the round's
  size by the most inconsistent others (`dropquery_members`). They are
  clustered by k-means into `query_batch` clusters. The round's j-th pick is
  the member nearest centre j that is still unlabelled (a candidate nearest
  it, if no member is offered). With `query_batch` 1 every step is a round:
  the member nearest the members' mean. The round's members and centres are
  the strategy's memory;
- `albl`: Active Learning By Learning (Hsu & Lin 2015, libact): an Exp4.P
  bandit over the heuristics in `ALBL_EXPERTS` plus uniform sampling. Each
  expert advises its top candidate; the query is drawn from the experts'
  mixture. The reward of a query, received at the next step, is libact's
  importance-weighted accuracy of the refitted model on all queried
  points (labels already revealed, no validation data). Its memory is the
  bandit's log-weights and the query history.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from metaal import features
from metaal.batching import lazy_cond
from metaal.strategies.base import Context, Strategy, select
from metaal.strategies.distribution import CORESET, DENSITY, kmeans_centres
from metaal.strategies.uncertainty import EGL, MARGIN

#: Exponent of the density in information density.
BETA = 1.0
#: Exp4.P confidence parameter delta (libact's default).
ALBL_DELTA = 0.1


def _gumbel_log(key: jax.Array, weights: jnp.ndarray) -> jnp.ndarray:
    """Scores whose argmax samples an index with probability proportional to `weights`."""
    return jnp.log(jnp.maximum(weights, 0.0)) + jax.random.gumbel(key, weights.shape)


def _info_density(key: jax.Array, obs, ctx: Context, memory):
    entropy = features.uncertainty(ctx.cand_probs, ctx.class_mask)["entropy"]
    return entropy * ctx.density[ctx.cand_index] ** BETA, memory


def gradient_embedding_parts(probs: jnp.ndarray, X: jnp.ndarray, class_mask: jnp.ndarray):
    """The two factors of BADGE's embedding (p - e_yhat) outer [x, 1]: (n, K) and (n, D+1)."""
    yhat = jnp.argmax(jnp.where(class_mask, probs, -1.0), axis=-1)
    a = probs - jax.nn.one_hot(yhat, probs.shape[-1])
    x = jnp.concatenate([X, jnp.ones(X.shape[:-1] + (1,), X.dtype)], axis=-1)
    return a, x


def _badge(key: jax.Array, obs, ctx: Context, memory):
    a_c, x_c = gradient_embedding_parts(ctx.cand_probs, ctx.cand_X, ctx.class_mask)
    idx = ctx.labeled_idx
    a_l, x_l = gradient_embedding_parts(ctx.pool_probs[idx], ctx.pool_X[idx], ctx.class_mask)
    # ||a x^T||^2 = ||a||^2 ||x||^2 and <a x^T, b z^T> = <a, b><x, z>: no (K (D+1))-wide embeddings.
    norm_c = jnp.sum(a_c**2, axis=1) * jnp.sum(x_c**2, axis=1)
    norm_l = jnp.sum(a_l**2, axis=1) * jnp.sum(x_l**2, axis=1)
    d2 = norm_c[:, None] + norm_l[None, :] - 2.0 * (a_c @ a_l.T) * (x_c @ x_l.T)
    valid = jnp.arange(idx.shape[0]) < ctx.n_labeled
    nearest = jnp.min(jnp.where(valid[None, :], d2, jnp.inf), axis=1)
    # With no labelled sample yet, the distance to the origin (BADGE starts at the largest norm).
    d2_min = jnp.where(ctx.n_labeled > 0, nearest, norm_c)
    return _gumbel_log(key, d2_min), memory


#: DropQuery's dropout draws per candidate and their rate (ALFM's recipe; our values).
DROPQUERY_DRAWS = 3
DROPQUERY_RATE = 0.75


def dropout_inconsistency(key: jax.Array, ctx: Context) -> jnp.ndarray:
    """Share of `DROPQUERY_DRAWS` dropout-perturbed predictions that differ from the clean one."""
    return _inconsistency(key, ctx.cand_X, ctx.probabilities, ctx.class_mask)


def _inconsistency(key: jax.Array, X: jnp.ndarray, probabilities, class_mask: jnp.ndarray):
    def predicted(X):
        return jnp.argmax(jnp.where(class_mask, probabilities(X), -1.0), axis=-1)

    clean = predicted(X)
    keep = jax.random.bernoulli(key, 1.0 - DROPQUERY_RATE, (DROPQUERY_DRAWS, *X.shape))
    perturbed = jnp.where(keep, X / (1.0 - DROPQUERY_RATE), 0.0)
    changed = jax.vmap(predicted)(perturbed) != clean[None, :]
    return jnp.mean(changed.astype(jnp.float32), axis=0)


def dropquery_members(key: jax.Array, share: jnp.ndarray, mask: jnp.ndarray, b: int) -> jnp.ndarray:
    """The candidates DropQuery clusters: share > 1/2, at least `b` (scikit-activeml's rule).

    With fewer than `b` inconsistent candidates the most inconsistent others
    join, ties in random order; never more than the `mask`ed candidates.
    """
    count = jnp.maximum(jnp.sum((share > 0.5) & mask), b)
    noisy = jnp.where(mask, share + 1e-3 * jax.random.uniform(key, share.shape), -1.0)
    rank = jnp.argsort(jnp.argsort(-noisy))  # 0 = the most inconsistent
    return (rank < count) & mask


def _dropquery_init(key: jax.Array, ctx: Context):
    # room for the centres of a round as large as the budget: the memory's shape is fixed
    # when an episode starts, before a batch size is known (`metaal query`)
    return {
        "centres": jnp.zeros((ctx.budget, ctx.cand_X.shape[1]), ctx.cand_X.dtype),
        "members": jnp.zeros(ctx.pool_X.shape[0], bool),
    }


def _dropquery(key: jax.Array, obs, ctx: Context, memory):
    k = min(ctx.query_batch, memory["centres"].shape[0])
    predict_proba = ctx.predict_proba
    if predict_proba is None:
        ctx.probabilities(ctx.cand_X)  # raises the error that names the fix

    def new_round(key, X, cand_index, learner_params, class_mask, mask, memory):
        key_drop, key_rank, key_kmeans = jax.random.split(key, 3)
        share = _inconsistency(
            key_drop, X, lambda Z: predict_proba(learner_params, Z, class_mask), class_mask
        )
        members = dropquery_members(key_rank, share, mask, k)
        pool = jnp.zeros_like(memory["members"]).at[cand_index].max(members)
        centres = memory["centres"].at[:k].set(kmeans_centres(key_kmeans, X, members, k))
        return {"centres": centres, "members": pool}

    operands = (key, ctx.cand_X, ctx.cand_index, ctx.learner_params, ctx.class_mask)
    # once a round: under vmap the clustering runs only at the rounds' first picks
    memory = lazy_cond(ctx.round_pos == 0, new_round, memory, *operands, obs.action_mask, memory)
    centre = memory["centres"][ctx.round_pos % k]
    d2 = jnp.sum((ctx.cand_X - centre) ** 2, axis=1)
    member = memory["members"][ctx.cand_index] & obs.action_mask
    return jnp.where(jnp.any(member), jnp.where(member, -d2, -jnp.inf), -d2), memory


#: ALBL's experts, besides uniform sampling: one per family.
ALBL_EXPERTS = (MARGIN, CORESET, DENSITY, EGL)


def _albl_constants(ctx: Context) -> tuple[int, float, float]:
    """Number of experts K, the minimum expert probability p_min and Exp4.P's exploration term."""
    k = len(ALBL_EXPERTS) + 1
    horizon = max(ctx.budget, 1)
    # libact's p_min = sqrt(ln K / (K T)), capped so that K p_min <= 1/2 on short budgets.
    p_min = min(math.sqrt(math.log(k) / (k * horizon)), 0.5 / k)
    explore = math.sqrt(math.log(k / ALBL_DELTA) / (k * horizon))
    return k, p_min, explore


def _albl_init(key: jax.Array, ctx: Context):
    k, _, _ = _albl_constants(ctx)
    horizon = ctx.budget
    return {
        "log_w": jnp.zeros(k, jnp.float32),
        "queried": jnp.zeros(horizon, jnp.int32),  # pool indices of past queries
        "inv_prob": jnp.zeros(horizon, jnp.float32),  # 1 / probability each was drawn with
        "n_queried": jnp.int32(0),
        "last_advice": jnp.zeros(k, jnp.float32),  # experts' advice on the last query
        "last_prob": jnp.float32(1.0),  # its probability under the mixture
        "last_p": jnp.zeros(k, jnp.float32),  # expert probabilities at the last query
    }


def _albl(key: jax.Array, obs, ctx: Context, memory):
    k, p_min, explore = _albl_constants(ctx)
    horizon = memory["queried"].shape[0]
    mask = obs.action_mask

    # 1. Reward the last query: importance-weighted accuracy of the current model
    #    on every queried point (libact's calc_reward_fn).
    q = memory["queried"]
    seen = (jnp.arange(horizon) < memory["n_queried"]) & (ctx.labels[q] >= 0)
    pred = jnp.argmax(jnp.where(ctx.class_mask, ctx.pool_probs[q], -1.0), axis=-1)
    correct = seen & (pred == ctx.labels[q])
    n_pool = jnp.maximum(jnp.sum(ctx.pool_mask), 1)
    reward = jnp.sum(jnp.where(correct, memory["inv_prob"], 0.0)) / (n_pool * horizon)
    r_hat = reward * memory["last_advice"] / memory["last_prob"]
    v_hat = 1.0 / jnp.maximum(memory["last_p"], 1e-12)
    update = p_min / 2.0 * (r_hat + v_hat * explore)
    log_w = memory["log_w"] + jnp.where(memory["n_queried"] > 0, update, 0.0)
    log_w = log_w - jnp.max(log_w)

    # 2. The experts' advice: each its own top candidate, uniform sampling spreads out.
    keys = jax.random.split(key, 2 * len(ALBL_EXPERTS) + 1)
    advice = []
    for i, expert in enumerate(ALBL_EXPERTS):
        scores, _ = expert.score(keys[2 * i], obs, ctx, ())
        advice.append(jax.nn.one_hot(select(scores, mask, keys[2 * i + 1]), mask.shape[0]))
    advice.append(mask / jnp.maximum(jnp.sum(mask), 1))
    advice = jnp.stack(advice)

    # 3. Exp4.P's mixture over experts, and the query drawn from it.
    w = jnp.exp(log_w)
    p = (1.0 - k * p_min) * w / jnp.sum(w) + p_min
    prob = p @ advice
    scores = _gumbel_log(keys[-1], jnp.where(mask, prob, 0.0))
    chosen = jnp.argmax(jnp.where(mask, scores, -jnp.inf))
    n = memory["n_queried"]
    memory = {
        "log_w": log_w,
        "queried": memory["queried"].at[n].set(ctx.cand_index[chosen], mode="drop"),
        "inv_prob": memory["inv_prob"].at[n].set(1.0 / prob[chosen], mode="drop"),
        "n_queried": n + 1,
        "last_advice": advice[:, chosen],
        "last_prob": prob[chosen],
        "last_p": p,
    }
    return scores, memory


INFO_DENSITY = Strategy("info_density", "hybrid", _info_density)
BADGE = Strategy("badge", "hybrid", _badge)
DROPQUERY = Strategy("dropquery", "hybrid", _dropquery, init=_dropquery_init)
ALBL = Strategy("albl", "hybrid", _albl, init=_albl_init)
