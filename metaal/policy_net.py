"""The candidate-scoring network of learned policies (Flax), and its rebuild from a policy config.

score_c = f(state, candidate_c): one set of weights scores every candidate,
so the same network reads any number of candidates (32 in training, the
whole pool at transfer time). Masked candidates get a score of -1e9. The
value head (used by actor-critic agents) reads the state and a
permutation-invariant (masked mean and max) summary of the candidate
embeddings.

The network lives in `metaal` (not `agents`) so that a saved policy is
rebuilt from its JSON config alone: `candidate_scorer(config)` is the scorer
factory that `metaal.strategies.learned.LearnedStrategy.load` calls.

    config = policy_config(hidden=(64, 64), state_hidden=32, probe_size=32)
    policy = LearnedStrategy(candidate_scorer(config), net_params, config)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from metaal.features import CANDIDATE_FEATURES, Observation

NEG_INF = -1e9
#: What `LearnedStrategy.load` imports to rebuild the scoring function.
SCORER = "metaal.policy_net:candidate_scorer"
#: The same network (or a linear ranker) restricted to margin's `config["shortlist"]` candidates.
SHORTLISTED_SCORER = "metaal.policy_net:shortlisted_scorer"


class CandidateScorer(nn.Module):
    """Scores candidates (and a state value) from an observation's arrays.

    Inputs: `state` (..., S), `candidates` (..., C, F), `mask` (..., C).
    Returns `scores` (..., C) with masked entries at -1e9, and `value` (...,).
    `hidden` needs at least one layer.
    """

    hidden: Sequence[int] = (64, 64)
    state_hidden: int = 32

    @nn.compact
    def __call__(
        self, state: jnp.ndarray, candidates: jnp.ndarray, mask: jnp.ndarray
    ) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Scores (..., C) and value (...,)."""
        s = nn.relu(nn.Dense(self.state_hidden, name="state_embed")(state))
        # The first layer reads [candidate, state embedding]; its state half is computed once
        # per observation and broadcast, not once per candidate.
        h = nn.Dense(self.hidden[0], name="cand_0")(candidates)
        h = h + nn.Dense(self.hidden[0], use_bias=False, name="cand_0_state")(s)[..., None, :]
        h = nn.relu(h)
        for i, width in enumerate(self.hidden[1:], start=1):
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


def policy_config(
    hidden: Sequence[int], state_hidden: int, probe_size: int, **extra: Any
) -> dict[str, Any]:
    """The JSON config of a `CandidateScorer` policy (what `candidate_scorer` reads), plus `extra`.

    `extra` records provenance (agent, env config, command, seed, ...); it
    must be JSON-serialisable. A margin shortlist is added by
    `LearnedStrategy.with_shortlist`.
    """
    return {
        "scorer": SCORER,
        "network": {"hidden": [int(h) for h in hidden], "state_hidden": int(state_hidden)},
        "probe_size": int(probe_size),
        "features": list(CANDIDATE_FEATURES),
        **extra,
    }


def candidate_scorer(config: dict[str, Any]) -> Callable[[Any, Observation], jnp.ndarray]:
    """`apply(params, obs) -> scores` of the `CandidateScorer` described by `config["network"]`."""
    trained_on = config.get("features")
    if trained_on is not None and list(trained_on) != list(CANDIDATE_FEATURES):
        raise ValueError(
            f"the policy was trained on candidate features {trained_on}, but this metaal "
            f"computes {list(CANDIDATE_FEATURES)}; retrain the policy with this version"
        )
    net = CandidateScorer(
        hidden=tuple(config["network"]["hidden"]),
        state_hidden=int(config["network"]["state_hidden"]),
    )

    def apply(params: Any, obs: Observation) -> jnp.ndarray:
        return net.apply(params, obs.state, obs.candidates, obs.action_mask)[0]

    return apply


def margin_shortlist(obs: Observation, k: int) -> jnp.ndarray:
    """Mask of the `k` most uncertain candidates by margin (read from the `rank_margin` column)."""
    n = jnp.maximum(jnp.sum(obs.action_mask) - 1, 1)
    rank = jnp.round(obs.candidates[..., CANDIDATE_FEATURES.index("rank_margin")] * n)
    return obs.action_mask & (rank < k)


def shortlisted_scorer(config: dict) -> Callable[[Any, Observation], jnp.ndarray]:
    """Scorer factory of the network (or linear ranker) of `config` behind margin's shortlist.

    If `config["shortlist"]` is k > 0, only margin's k most uncertain
    candidates can score: the policy re-ranks them. That keeps what margin
    gets right (it never spends a label far from the decision boundary)
    and leaves the order of the most uncertain candidates to the policy.
    """
    from metaal.strategies.learned import linear_scorer  # learned.py loads policy files

    inner = candidate_scorer(config) if "network" in config else linear_scorer(config)
    k = int(config.get("shortlist", 0))
    if not k:
        return inner

    def apply(params, obs):
        return jnp.where(margin_shortlist(obs, k), inner(params, obs), NEG_INF)

    return apply


#: What `LearnedStrategy.ensemble` writes as the scorer of an ensemble policy.
ENSEMBLE_SCORER = "metaal.policy_net:ensemble_scorer"


def ensemble_scorer(config: dict) -> Callable[[Any, Observation], jnp.ndarray]:
    """Scorer factory of ensembles: the mean of the members' standardised scores.

    `config["member_scorer"]` names the members' factory (they share one
    architecture); the params are `{"members": pytree stacked on axis 0}`.
    Each member's scores are z-scored over the candidates it may pick before
    averaging, so no member dominates by its scale. Averaging policies trained
    from different seeds cancels much of what one training run learns by
    chance.
    """
    from metaal.strategies.learned import resolve_scorer  # learned.py loads policy files

    member_config = {**config, "scorer": config["member_scorer"]}
    inner = resolve_scorer(config["member_scorer"])(member_config)

    def apply(params, obs):
        scores = jax.vmap(inner, in_axes=(0, None))(params["members"], obs)  # (M, C)
        valid = (scores > NEG_INF / 2) & obs.action_mask
        n = jnp.maximum(jnp.sum(valid, axis=-1, keepdims=True), 1)
        mean = jnp.sum(jnp.where(valid, scores, 0.0), axis=-1, keepdims=True) / n
        var = jnp.sum(jnp.where(valid, (scores - mean) ** 2, 0.0), axis=-1, keepdims=True) / n
        z = (scores - mean) / (jnp.sqrt(var) + 1e-6)
        return jnp.where(jnp.all(valid, axis=0), jnp.mean(z, axis=0), NEG_INF)

    return apply
