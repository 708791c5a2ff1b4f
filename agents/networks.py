"""Candidate-scoring networks (Flax): one set of weights scores every candidate.

score_c = f(state, candidate_c), so the same network reads any number of
candidates (32 in training, the whole pool at transfer time). Masked
candidates get a score of -inf. The value head reads the state and a
permutation-invariant (masked mean and max) summary of the candidate
embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

NEG_INF = -1e9


class CandidateScorer(nn.Module):
    """Scores candidates (and optionally a state value) from an observation's arrays.

    Inputs: `state` (..., S), `candidates` (..., C, F), `mask` (..., C).
    Returns `scores` (..., C) with masked entries at -1e9, and `value` (...,).
    """

    hidden: Sequence[int] = (64, 64)
    state_hidden: int = 32

    @nn.compact
    def __call__(
        self, state: jnp.ndarray, candidates: jnp.ndarray, mask: jnp.ndarray
    ) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Scores (..., C) and value (...,)."""
        s = nn.relu(nn.Dense(self.state_hidden, name="state_embed")(state))
        s_b = jnp.broadcast_to(s[..., None, :], candidates.shape[:-1] + s.shape[-1:])
        h = jnp.concatenate([candidates, s_b], axis=-1)
        for i, width in enumerate(self.hidden):
            h = nn.relu(nn.Dense(width, name=f"cand_{i}")(h))
        scores = nn.Dense(1, name="score", kernel_init=nn.initializers.zeros)(h)[..., 0]
        scores = jnp.where(mask, scores, NEG_INF)
        m = mask[..., None].astype(h.dtype)
        mean = jnp.sum(h * m, axis=-2) / jnp.maximum(jnp.sum(m, axis=-2), 1.0)
        mx = jnp.max(jnp.where(m > 0, h, NEG_INF), axis=-2)
        mx = jnp.where(jnp.any(mask, axis=-1, keepdims=True), mx, 0.0)
        v = nn.relu(
            nn.Dense(self.state_hidden, name="value_hidden")(
                jnp.concatenate([s, mean, mx], axis=-1)
            )
        )
        value = nn.Dense(1, name="value")(v)[..., 0]
        return scores, value
