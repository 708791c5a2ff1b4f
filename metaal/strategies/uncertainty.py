"""Uncertainty strategies: query where the current model is least sure.

All four read the learner's predictions on the candidates from the
`Context` and reuse the formulas of `metaal.features`, so a heuristic scores
exactly what a learned policy sees as a feature:

- `entropy`: predictive entropy;
- `margin`: smallest gap between the two most probable classes;
- `least_confidence`: lowest top-class probability;
- `bald`: mutual information between the label and the model (disagreement
  of an ensemble). It needs the env's `ensemble` learner (`Strategy.learner`);
  with a single model the disagreement is 0 everywhere and BALD degenerates
  to random tie-breaking;
- `egl`: expected gradient length of the logistic loss (expected model change).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metaal import features
from metaal.strategies.base import Context, Strategy


def _entropy(key: jax.Array, obs, ctx: Context, memory):
    return features.uncertainty(ctx.cand_probs, ctx.class_mask)["entropy"], memory


def _margin(key: jax.Array, obs, ctx: Context, memory):
    return -features.uncertainty(ctx.cand_probs, ctx.class_mask)["margin"], memory


def _least_confidence(key: jax.Array, obs, ctx: Context, memory):
    return features.uncertainty(ctx.cand_probs, ctx.class_mask)["least_confidence"], memory


def _bald(key: jax.Array, obs, ctx: Context, memory):
    return features.mutual_information(ctx.cand_member_probs, ctx.class_mask), memory


def _egl(key: jax.Array, obs, ctx: Context, memory):
    d = jnp.sum(ctx.feature_mask).astype(jnp.float32)
    return features.expected_gradient_length(ctx.cand_probs, ctx.cand_X, d), memory


ENTROPY = Strategy("entropy", "uncertainty", _entropy)
MARGIN = Strategy("margin", "uncertainty", _margin)
LEAST_CONFIDENCE = Strategy("least_confidence", "uncertainty", _least_confidence)
BALD = Strategy("bald", "uncertainty", _bald, learner="ensemble")
EGL = Strategy("egl", "uncertainty", _egl)
