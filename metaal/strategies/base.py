"""The one interface every query strategy implements, heuristic or learned.

A strategy scores the candidates the environment offers; the highest score
among the unmasked candidates is queried. Strategies are pure JAX functions,
so the same strategy runs inside the jitted, vmapped environment for every
task and seed at once.

`score(key, obs, ctx, memory) -> (scores, memory)`:
- `obs` is the policy's observation (`state`, `candidates`, `action_mask`,
  see `metaal.features`); a learned policy reads only this;
- `ctx` is a `Context` of raw arrays a heuristic may read (candidate
  features X, predicted probabilities, the labelled set, the pool);
- `memory` is the strategy's own state across the steps of one episode
  (e.g. ALBL's bandit weights), created by `init(key, ctx)`; stateless
  strategies use `()`. A strategy with `params` (a learned policy's scorer
  parameters) starts every episode with `memory = params` instead: drivers
  pass `params` to their compiled code as an argument, so one compiled
  program serves every value of them (`initial_memory`).

metaal imports no environment or agent code: the env builds the `Context`,
and a learned strategy wraps a scoring function of the observation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

Memory = Any


@struct.dataclass
class Context:
    """Raw arrays describing the current AL step, for heuristics that need more than `obs`.

    Shapes: C candidates, N pool rows, D features, K classes, M ensemble members.
    """

    cand_X: jnp.ndarray  # (C, D) candidate features (standardised)
    cand_probs: jnp.ndarray  # (C, K) predicted class probabilities
    cand_member_probs: jnp.ndarray  # (M, C, K) per-member probabilities (M=1 if no ensemble)
    cand_index: jnp.ndarray  # (C,) pool index of each candidate
    pool_X: jnp.ndarray  # (N, D)
    pool_mask: jnp.ndarray  # (N,) real (non-padding) pool rows
    labeled: jnp.ndarray  # (N,) bool, labelled so far
    pool_probs: jnp.ndarray  # (N, K) predicted probabilities on the whole pool
    labels: jnp.ndarray  # (N,) revealed label of each pool row, -1 where not labelled
    labeled_idx: jnp.ndarray  # (L,) pool indices of labelled rows; the first n_labeled are valid
    n_labeled: jnp.ndarray  # number of labelled rows
    dist_labeled: jnp.ndarray  # (N,) distance of every pool row to the labelled set
    density: jnp.ndarray  # (N,) pool density (`metaal.features.pool_density`)
    class_mask: jnp.ndarray  # (K,)
    feature_mask: jnp.ndarray  # (D,)
    step: jnp.ndarray  # queries made so far in this episode
    budget: int = struct.field(pytree_node=False)
    lookahead: Callable[[jax.Array], jnp.ndarray] | None = struct.field(
        pytree_node=False, default=None
    )  # candidate index -> validation gain of labelling it (the oracle's only input)
    learner_params: Any = None  # the current learner's parameters, for `probabilities`
    predict_proba: Callable[..., jnp.ndarray] | None = struct.field(
        pytree_node=False, default=None
    )  # the learner's (params, X, class_mask) -> (n, K); None where no metaal learner is used
    refit: Callable[..., Any] | None = struct.field(
        pytree_node=False, default=None
    )  # (learner_params, X, y, weights, class_mask) -> params: the learner's warm refit on
    # the weighted rows (X (L, D), y (L,), weights (L,)); None where no metaal learner is used
    round_pos: Any = 0  # picks made so far in this batch round (0 at a round's first pick)
    query_batch: int = struct.field(pytree_node=False, default=1)  # picks per round

    def probabilities(self, X: jnp.ndarray) -> jnp.ndarray:
        """The current learner's (n, K) probabilities on any rows `X` (e.g. perturbed ones)."""
        if self.predict_proba is None:
            raise ValueError(
                "this strategy needs the learner's predictions on new rows, and this step has "
                "no metaal learner (a scikit-learn clf was given); run it without clf"
            )
        return self.predict_proba(self.learner_params, X, self.class_mask)


class Strategy(NamedTuple):
    """A named query strategy (see the module docstring for the contract)."""

    name: str
    family: str  # uncertainty | distribution | hybrid | learned | random | oracle
    score: Callable[..., tuple[jnp.ndarray, Memory]]
    init: Callable[..., Memory] = lambda key, ctx: ()
    deployable: bool = True  # False for references that peek at labels (the oracle)
    learner: str | None = None  # the env learner it needs (BALD: "ensemble"); None: any
    params: Any = None  # learned parameters, the first memory of every episode (None: `init`)
    # the candidate columns it reads (a learned policy's trained ones): drivers compute exactly
    # these, in this order; None: the env's (all of the feature table)
    features: tuple[str, ...] | None = None

    def without_params(self) -> Strategy:
        """The strategy with its params stripped: hashable, a cache key for compiled runners."""
        return self._replace(params=None)


def initial_memory(strategy: Strategy, key: jax.Array, ctx: Context, params: Any = None) -> Memory:
    """The memory a strategy starts an episode with: `params` if it has any, else `init(key, ctx)`.

    `params` defaults to `strategy.params`; drivers that compile once pass the
    current values explicitly.
    """
    if params is None:
        params = strategy.params
    return strategy.init(key, ctx) if params is None else params


def select(scores: jnp.ndarray, mask: jnp.ndarray, key: jax.Array) -> jnp.ndarray:
    """Index of the best-scoring unmasked candidate; ties broken uniformly at random by `key`."""
    scores = jnp.where(mask, scores, -jnp.inf)
    best = scores == jnp.max(scores)
    noise = jax.random.uniform(key, scores.shape)
    return jnp.argmax(jnp.where(best & mask, noise, -1.0))
