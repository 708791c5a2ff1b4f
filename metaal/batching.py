"""`lazy_cond`: a `cond` that, under `vmap`, skips its branch when no row needs it.

`jax.lax.cond` with a batched predicate becomes a `select`: both branches run
for every row. The env's batch rounds refit the learner only at a round's end,
and all the episodes of a vmapped runner end their rounds at the same steps, so
with a plain `cond` every step would still pay for a refit. Under `vmap`,
`lazy_cond` runs `fn` for the whole batch (and keeps each row's own result or
fallback) only when some row's predicate holds, and skips it otherwise. The
rule is applied again at every level of nested `vmap`s.

Rows whose predicate holds get exactly `fn`'s value, the others `fallback`,
so the result never depends on which other rows share the batch. `lazy_cond`
does not support reverse-mode differentiation (a `custom_vmap` limit); the env
never differentiates through a step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def lazy_cond(pred: jax.Array, fn: Callable[..., Any], fallback: Any, *operands: Any) -> Any:
    """`fn(*operands)` if `pred` else `fallback` (same pytree structure, shapes and dtypes).

    `fn` must not close over traced values: pass them in `operands`.
    """

    @jax.custom_batching.custom_vmap
    def branch(pred, fallback, operands):
        return jax.lax.cond(pred, lambda: fn(*operands), lambda: fallback)

    @branch.def_vmap
    def rule(axis_size, in_batched, pred, fallback, operands):
        pred_batched, fallback_batched, operands_batched = in_batched

        def batched(x, is_batched):
            return x if is_batched else jnp.broadcast_to(x, (axis_size, *jnp.shape(x)))

        pred = batched(pred, pred_batched)
        fallback = jax.tree.map(batched, fallback, fallback_batched)
        in_axes = jax.tree.map(lambda b: 0 if b else None, operands_batched)

        def every_row(pred, fallback, *operands):
            new = jax.vmap(fn, in_axes=tuple(in_axes))(*operands)
            return jax.tree.map(
                lambda n, o: jnp.where(pred.reshape((-1,) + (1,) * (n.ndim - 1)), n, o),
                new,
                fallback,
            )

        out = lazy_cond(jnp.any(pred), every_row, fallback, pred, fallback, *operands)
        return out, jax.tree.map(lambda _: True, fallback)

    return branch(pred, fallback, operands)
