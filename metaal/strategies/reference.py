"""Reference strategies: random sampling (the floor) and the one-step look-ahead oracle (a ceiling).

- `random`: a uniformly random candidate;
- `oracle`: labels each of up to `ORACLE_CANDIDATES` random candidates in
  turn (`Context.lookahead`: refit and validation accuracy), and queries the
  one of largest validation gain, ties at random. Looking ahead over a whole
  pool of 1000 would cost 1000 refits per step, so it looks at a random
  subset. It reads validation labels, so it is not deployable: it is a
  reference (and the teacher of imitation learning), not a baseline.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metaal.strategies.base import Context, Strategy

#: Candidates the oracle looks ahead over per step.
ORACLE_CANDIDATES = 32


def _random(key: jax.Array, obs, ctx: Context, memory):
    return jax.random.uniform(key, obs.action_mask.shape), memory


def _oracle(key: jax.Array, obs, ctx: Context, memory):
    if ctx.lookahead is None:
        raise ValueError(
            "the oracle needs Context.lookahead (validation labels), which only the "
            "environment provides; use a deployable strategy outside it"
        )
    mask = obs.action_mask
    m = min(ORACLE_CANDIDATES, mask.shape[0])
    _, subset = jax.lax.top_k(jnp.where(mask, jax.random.uniform(key, mask.shape), -1.0), m)
    gains = jax.vmap(ctx.lookahead)(subset)
    gains = jnp.where(mask[subset], gains, -jnp.inf)
    return jnp.full(mask.shape, -jnp.inf).at[subset].set(gains), memory


RANDOM = Strategy("random", "random", _random)
ORACLE = Strategy("oracle", "oracle", _oracle, deployable=False)
