"""Distribution strategies: query by where a sample lies in the pool, not by the model.

- `coreset`: k-centre greedy (Sener & Savarese 2018): the candidate farthest
  from the labelled set;
- `density`: representativeness: the candidate of highest Gaussian-kernel
  density in the pool (`metaal.features.pool_density`);
- `typiclust`: TypiClust-like (Hacohen et al. 2022) with static shapes. At
  the start of an episode the pool is clustered once by k-means into
  `budget` clusters (TypiClust uses labelled + budget clusters, which is not a
  static shape; the initial set is small, so budget clusters is close). Each
  step queries the most typical candidate of the cluster with the fewest
  labels, ties to the largest cluster. Typicality is the pool density above
  (a kernel estimate of TypiClust's inverse mean distance to 20 nearest
  neighbours, computed once per task instead of per cluster). Coverage counts
  picked rows, not revealed labels, so inside a batch round (`query_batch`)
  the round's earlier picks count: its picks go to distinct clusters, the
  largest uncovered ones first;
- `probcover`: ProbCover (Yehuda et al. 2022): max coverage of the pool's
  delta-ball graph. Each step queries the candidate whose ball (itself
  included) holds the most pool rows not yet covered by a labelled row's
  ball. delta follows the paper's purity rule: the largest radius at which
  at least `PROBCOVER_PURITY` of the rows' balls hold rows of their own
  k-means cluster only (k = the task's class count). A ball of row x is
  pure exactly while delta <= m(x), x's distance to the nearest row of
  another cluster, so that radius is a quantile of m, computed exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metaal.strategies.base import Context, Strategy

#: Lloyd iterations of TypiClust's k-means.
KMEANS_ITERS = 10


def _sq_dist(A: jnp.ndarray, B: jnp.ndarray) -> jnp.ndarray:
    """(n, m) squared Euclidean distances, via the Gram matrix (one matmul)."""
    sq = jnp.sum(A**2, axis=1)[:, None] + jnp.sum(B**2, axis=1)[None, :] - 2.0 * A @ B.T
    return jnp.maximum(sq, 0.0)


def kmeans_pp_seeds(key: jax.Array, X: jnp.ndarray, mask: jnp.ndarray, k: int) -> jnp.ndarray:
    """Indices of `k` k-means++ seeds among the rows of `X` where `mask` holds (D^2 sampling)."""
    n = X.shape[0]
    keys = jax.random.split(key, k)

    def pick(d2, key_i):
        # Rows at distance 0 (already seeds, duplicates) are skipped while any other row is left.
        weights = jnp.where(mask, d2, 0.0)
        logits = jnp.where(jnp.any(weights > 0), jnp.log(weights), jnp.where(mask, 0.0, -jnp.inf))
        i = jax.random.categorical(key_i, logits)
        return jnp.minimum(d2, jnp.sum((X - X[i]) ** 2, axis=1)), i

    _, seeds = jax.lax.scan(pick, jnp.full(n, jnp.inf), keys)
    return seeds


def kmeans_centres(
    key: jax.Array, X: jnp.ndarray, mask: jnp.ndarray, k: int, n_active: jnp.ndarray | None = None
) -> jnp.ndarray:
    """(k, D) centres: k-means++ seeding then `KMEANS_ITERS` Lloyd steps on the masked rows.

    With `n_active` (traced, <= k) only the first `n_active` of the k seeds
    are centres (the others stay at their seeds and take no rows): k-means
    with a cluster count known only at run time (a padded task's class
    count), under static shapes.
    """
    centres = X[kmeans_pp_seeds(key, X, mask, k)]
    off = _inactive(k, n_active)

    def lloyd(centres, _):
        assign = jnp.argmin(jnp.where(off[None, :], jnp.inf, _sq_dist(X, centres)), axis=1)
        onehot = jax.nn.one_hot(assign, k) * mask[:, None]
        counts = onehot.sum(axis=0)
        means = onehot.T @ X / jnp.maximum(counts, 1.0)[:, None]
        return jnp.where(counts[:, None] > 0, means, centres), None

    centres, _ = jax.lax.scan(lloyd, centres, None, length=KMEANS_ITERS)
    return centres


def _inactive(k: int, n_active: jnp.ndarray | None) -> jnp.ndarray:
    return jnp.zeros(k, bool) if n_active is None else jnp.arange(k) >= n_active


def kmeans(
    key: jax.Array, X: jnp.ndarray, mask: jnp.ndarray, k: int, n_active: jnp.ndarray | None = None
) -> jnp.ndarray:
    """Cluster of every row under `kmeans_centres` (nearest active centre)."""
    centres = kmeans_centres(key, X, mask, k, n_active)
    off = _inactive(k, n_active)
    return jnp.argmin(jnp.where(off[None, :], jnp.inf, _sq_dist(X, centres)), axis=1)


def _coreset(key: jax.Array, obs, ctx: Context, memory):
    return ctx.dist_labeled[ctx.cand_index], memory


def _density(key: jax.Array, obs, ctx: Context, memory):
    return ctx.density[ctx.cand_index], memory


def _n_clusters(ctx: Context) -> int:
    return min(ctx.budget, ctx.pool_X.shape[0])


def _typiclust_init(key: jax.Array, ctx: Context) -> jnp.ndarray:
    return kmeans(key, ctx.pool_X, ctx.pool_mask, _n_clusters(ctx))


def _typiclust(key: jax.Array, obs, ctx: Context, cluster):
    k = _n_clusters(ctx)
    member = ctx.pool_mask.astype(jnp.int32)
    size = jax.ops.segment_sum(member, cluster, k)
    labels = jax.ops.segment_sum(member * ctx.labeled, cluster, k)
    cand_cluster = cluster[ctx.cand_index]
    open_ = jax.ops.segment_max(obs.action_mask.astype(jnp.int32), cand_cluster, k) > 0
    # Fewest labels first, then the largest cluster: an exact integer key.
    order = labels * (ctx.pool_X.shape[0] + 1) - size
    target = jnp.argmin(jnp.where(open_, order, jnp.iinfo(jnp.int32).max))
    typicality = ctx.density[ctx.cand_index]
    # Outside the target cluster scores stay ordered by typicality but below every member.
    return jnp.where(cand_cluster == target, typicality, typicality - 2.0), cluster


#: Share of the rows whose delta-ball must be pure (ProbCover's alpha).
PROBCOVER_PURITY = 0.95


def purity_radius(sq_dist: jnp.ndarray, cluster: jnp.ndarray, mask: jnp.ndarray, alpha: float):
    """The largest delta at which >= `alpha` of the masked rows' balls are pure (see above).

    `sq_dist` (N, N) are squared distances, `cluster` (N,) pseudo-labels. A
    row with no row of another cluster has m = inf. Balls are open
    (distance < delta), as ProbCover's graph edges.
    """
    other = (cluster[:, None] != cluster[None, :]) & mask[None, :]
    m = jnp.sqrt(jnp.min(jnp.where(other, sq_dist, jnp.inf), axis=1))
    m = jnp.where(mask, m, jnp.inf)
    n = jnp.sum(mask)
    # pure at delta <=> m >= delta; the largest delta with #{m >= delta} >= alpha n is
    # the (n - ceil(alpha n))-th smallest m (0-based) among the masked rows
    rank = n - jnp.ceil(alpha * n).astype(jnp.int32)
    return jnp.sort(m)[jnp.clip(rank, 0, m.shape[0] - 1)]


def _probcover_init(key: jax.Array, ctx: Context):
    X, mask = ctx.pool_X, ctx.pool_mask
    k = ctx.class_mask.shape[0]
    cluster = kmeans(key, X, mask, k, n_active=jnp.sum(ctx.class_mask))
    sq = _sq_dist(X, X)
    delta = purity_radius(sq, cluster, mask, PROBCOVER_PURITY)
    # the graph: edge x -> x' when ||x - x'|| < delta (x' a real row)
    return {"ball": (sq < delta**2) & mask[None, :] & mask[:, None], "delta": delta}


def _probcover(key: jax.Array, obs, ctx: Context, memory):
    ball = memory["ball"]
    covered = jnp.any(ball & ctx.labeled[None, :], axis=1)  # balls are symmetric
    uncovered = ctx.pool_mask & ~covered
    gain = jnp.sum(ball[ctx.cand_index] & uncovered[None, :], axis=1)
    return gain.astype(jnp.float32), memory


CORESET = Strategy("coreset", "distribution", _coreset)
DENSITY = Strategy("density", "distribution", _density)
TYPICLUST = Strategy("typiclust", "distribution", _typiclust, init=_typiclust_init)
PROBCOVER = Strategy("probcover", "distribution", _probcover, init=_probcover_init)
