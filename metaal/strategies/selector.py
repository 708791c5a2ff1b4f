"""A strategy selector's candidates: the picks of several heuristics, and who proposed each.

A learned selector (issue 16's lever) does not score the whole pool. At each
step every proposer heuristic (margin, entropy, BADGE, core-set, ...) makes
its own pick; those few candidates are the selector's action set, and each
carries, besides the usual candidate features, which heuristics proposed it
and how much the heuristics disagree. The learned scorer then chooses which
family to follow at this point of this task:

    names = check_proposers(("margin", "badge", "coreset", "random"))
    obs = selector_observation(names, key, obs, ctx)   # extra columns, mask = the picks
    picks, rows = selector_picks(names, key, obs, ctx) # only the picks' rows: what is scored

The extra columns (`selector_columns(names)`, in this order):
- `proposed_by_<name>`: 1 where that heuristic picked the candidate;
- `n_proposed`: share of the proposers that picked it;
- the step columns `state` (default `STEP_COLUMNS`), the same for every
  candidate of a step, chosen by name from `STEP_FEATURES`:
  - `distinct_picks`: distinct picks / proposers (1 when every heuristic
    disagrees, 1/P when all agree);
  - `balance_gap`: total-variation distance between the labelled class shares
    and the learner's mean predicted class shares on the pool: large when the
    labels seen so far misrepresent the pool, one sign that margin sampling is
    failing;
  - `fit_error`: the share of the labelled rows the learner itself gets wrong
    (label noise or classes it cannot separate: where margin keeps querying an
    overlap it cannot resolve);
  - `label_disagreement`: the share of labelled rows whose nearest labelled
    neighbour has another label (the same signal without the learner).

A policy file records its step columns (`selector_state`); files without it read
`STEP_COLUMNS`, so adding a step feature changes no saved policy.

Proposers must be stateless (their memory is `()`): the selector's memory is
the policy's params. Stateful heuristics (TypiClust, ProbCover, DropQuery,
ALBL) and the oracle are refused by name.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from metaal.features import Observation, squared_distances
from metaal.strategies.base import Context, select

#: Heuristics a selector may take as proposers (stateless and deployable), in registry order.
PROPOSERS = (
    "entropy",
    "margin",
    "least_confidence",
    "egl",
    "eer",
    "emoc",
    "coreset",
    "density",
    "info_density",
    "badge",
    "random",
)
#: Proposers added after `sel_all_big` was recorded (that recipe keeps the others).
LOOKAHEAD_PROPOSERS = ("eer", "emoc")
#: The proposers of `--proposers default`: one of each family the issue names.
DEFAULT_PROPOSERS = ("margin", "entropy", "badge", "coreset", "density", "random")
#: The default step columns, and what policy files without `selector_state` read.
STEP_COLUMNS = ("distinct_picks", "balance_gap")


def check_proposers(names) -> tuple[str, ...]:
    """`names` as a tuple of known, distinct proposers; a ValueError names the fix otherwise."""
    names = tuple(names)
    if len(names) < 2:
        raise ValueError(
            f"a selector needs at least two proposers, got {list(names)}; choose among "
            f"{', '.join(PROPOSERS)}"
        )
    unknown = [n for n in names if n not in PROPOSERS]
    if unknown:
        raise ValueError(
            f"proposers {unknown} are not usable: a proposer must be a stateless deployable "
            f"heuristic ({', '.join(PROPOSERS)}); stateful ones (typiclust, probcover, "
            "dropquery, albl) and the oracle are not"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"proposers must be distinct, got {list(names)}")
    return names


def check_step_columns(state) -> tuple[str, ...]:
    """`state` as a tuple of known, distinct step columns; a ValueError names the fix otherwise."""
    state = tuple(state)
    unknown = [n for n in state if n not in STEP_FEATURES]
    if unknown:
        raise ValueError(
            f"selector step columns {unknown} are unknown; choose among {', '.join(STEP_FEATURES)}"
        )
    if len(set(state)) != len(state):
        raise ValueError(f"selector step columns must be distinct, got {list(state)}")
    return state


def selector_columns(names, state=STEP_COLUMNS) -> tuple[str, ...]:
    """The candidate columns a selector over proposers `names` adds (none without proposers)."""
    if not names:
        return ()
    return tuple(f"proposed_by_{n}" for n in names) + ("n_proposed",) + check_step_columns(state)


def proposals(names, key: jax.Array, obs: Observation, ctx: Context) -> jnp.ndarray:
    """(P, C) bool: row p marks the candidate proposer `names[p]` picks (ties at random)."""
    from metaal.strategies import get_strategy  # the registry imports this module's users

    rows = []
    for name, k in zip(names, jax.random.split(key, len(names)), strict=True):
        k_score, k_select = jax.random.split(k)
        scores, _ = get_strategy(name).score(k_score, obs, ctx, ())
        pick = select(scores, obs.action_mask, k_select)
        rows.append((jnp.arange(obs.action_mask.shape[0]) == pick) & obs.action_mask)
    return jnp.stack(rows)


def balance_gap(ctx: Context) -> jnp.ndarray:
    """Total variation between labelled class shares and mean predicted pool class shares."""
    labeled = ctx.labeled & ctx.pool_mask
    k = ctx.class_mask.shape[0]
    counts = jnp.zeros(k).at[jnp.maximum(ctx.labels, 0)].add(labeled.astype(jnp.float32))
    seen = counts / jnp.maximum(jnp.sum(counts), 1.0)
    unl = (ctx.pool_mask & ~ctx.labeled).astype(jnp.float32)
    predicted = jnp.sum(ctx.pool_probs * unl[:, None], 0) / jnp.maximum(jnp.sum(unl), 1.0)
    return 0.5 * jnp.sum(jnp.where(ctx.class_mask, jnp.abs(seen - predicted), 0.0))


def fit_error(ctx: Context) -> jnp.ndarray:
    """Share of the labelled rows whose label is not the learner's most probable class."""
    labeled = ctx.labeled & ctx.pool_mask
    predicted = jnp.argmax(jnp.where(ctx.class_mask, ctx.pool_probs, -1.0), axis=-1)
    wrong = labeled & (predicted != ctx.labels)
    return jnp.sum(wrong) / jnp.maximum(jnp.sum(labeled), 1.0)


def label_disagreement(ctx: Context) -> jnp.ndarray:
    """Share of the labelled rows whose nearest other labelled row (Euclidean) has another label."""
    idx = ctx.labeled_idx
    valid = jnp.arange(idx.shape[0]) < ctx.n_labeled
    X = ctx.pool_X[idx]
    d = jax.vmap(lambda x: squared_distances(X.T, x))(X)  # (L, L)
    d = jnp.where(valid[None, :] & ~jnp.eye(idx.shape[0], dtype=bool), d, jnp.inf)
    labels = ctx.labels[idx]
    other = labels[jnp.argmin(d, axis=1)] != labels
    counted = valid & (ctx.n_labeled > 1)
    return jnp.sum(other & counted) / jnp.maximum(jnp.sum(counted), 1.0)


#: Step columns a selector may read, by name: `(picks (P, C) bool, ctx) -> ()`.
STEP_FEATURES: dict[str, Callable[[jnp.ndarray, Context], jnp.ndarray]] = {
    "distinct_picks": lambda picked, ctx: jnp.sum(jnp.any(picked, axis=0)) / picked.shape[0],
    "balance_gap": lambda picked, ctx: balance_gap(ctx),
    "fit_error": lambda picked, ctx: fit_error(ctx),
    "label_disagreement": lambda picked, ctx: label_disagreement(ctx),
}


def selector_observation(
    names, key: jax.Array, obs: Observation, ctx: Context, state=STEP_COLUMNS
) -> Observation:
    """`obs` with the selector columns appended and its action mask cut to the proposals."""
    state = check_step_columns(state)
    picked = proposals(names, key, obs, ctx)  # (P, C)
    proposed = jnp.any(picked, axis=0)
    n_proposed = jnp.sum(picked, axis=0) / float(len(names))
    c = obs.action_mask.shape[0]
    step = [jnp.full((c, 1), STEP_FEATURES[n](picked, ctx)) for n in state]
    extra = jnp.concatenate([picked.T.astype(jnp.float32), n_proposed[:, None], *step], axis=1)
    extra = jnp.where(proposed[:, None], extra, 0.0).astype(obs.candidates.dtype)
    return Observation(
        state=obs.state,
        candidates=jnp.concatenate([obs.candidates, extra], axis=1),
        action_mask=obs.action_mask & proposed,
        features=obs.features + selector_columns(names, state),
    )


def selector_picks(
    names, key: jax.Array, obs: Observation, ctx: Context, state=STEP_COLUMNS
) -> tuple[Observation, jnp.ndarray]:
    """`selector_observation` cut to its picks' rows, and those rows' candidate indices.

    At most one row per proposer (rows beyond the distinct picks are masked). A scorer reads
    each candidate's row alone, so scoring these rows gives the picks' scores for a fraction
    of the work of scoring the whole pool.
    """
    seen = selector_observation(names, key, obs, ctx, state)
    k = min(len(names), obs.action_mask.shape[0])
    _, rows = jax.lax.top_k(seen.action_mask.astype(jnp.float32), k)
    picks = seen.replace(candidates=seen.candidates[rows], action_mask=seen.action_mask[rows])
    return picks, rows
