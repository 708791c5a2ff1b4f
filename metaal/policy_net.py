"""Learned policies' scoring functions: the candidate-scoring network and every scorer factory.

A policy is `apply(params, obs) -> scores` (see `metaal.strategies.learned`).
Functions cannot be stored in a file, so a policy file names the factory
that rebuilds `apply` from its JSON config (`config["scorer"]`); every
factory lives here:

- `candidate_scorer`: the shared-weight network, score_c = f(state,
  candidate_c): one set of weights scores every candidate, so it reads any
  number of candidates (32 in training, the whole pool at transfer time);
- `linear_scorer`: `candidates @ w + b`, the simplest ranker;
- `shortlisted_scorer`: either of those behind margin's shortlist;
- `ensemble_scorer`: the vote of several members.

A scorer reads the candidate columns its config names (`config["features"]`)
by name from the observation, so a feature added to `metaal.features` later
changes nothing a saved policy computes. Masked candidates score -1e9.

    config = policy_config(hidden=(64, 64), state_hidden=32, probe_size=32)
    policy = LearnedStrategy(candidate_scorer(config), net_params, config)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from metaal.features import DEFAULT_CANDIDATE_FEATURES, LEGACY_CANDIDATE_FEATURES, Observation
from metaal.strategies.lookahead import STATS, check_stats, lookahead_columns
from metaal.strategies.selector import (
    STEP_COLUMNS,
    check_proposers,
    check_step_columns,
    selector_columns,
)

Params = Any
Apply = Callable[[Params, Observation], jnp.ndarray]

NEG_INF = -1e9
#: Scorer names a policy file's `config["scorer"]` may hold.
SCORER = "metaal.policy_net:candidate_scorer"
LINEAR_SCORER = "metaal.policy_net:linear_scorer"
#: The same network (or a linear ranker) restricted to margin's `config["shortlist"]` candidates.
SHORTLISTED_SCORER = "metaal.policy_net:shortlisted_scorer"
#: The vote of several members (`vote`).
ENSEMBLE_SCORER = "metaal.policy_net:ensemble_scorer"
#: Where factories lived before; policy files written then still name them.
_MOVED_SCORERS = {"metaal.strategies.learned:linear_scorer": LINEAR_SCORER}
#: Packages a policy file's scorer factory may come from.
TRUSTED_PACKAGES = ("metaal",)


#: The `CandidateScorer` layers that only its value reads (PPO's `value_warmup` trains these).
VALUE_LAYERS = ("value_hidden", "value")


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


def network(hidden: Sequence[int], state_hidden: int) -> CandidateScorer:
    """The `CandidateScorer` with these widths (what every agent trains)."""
    return CandidateScorer(hidden=tuple(int(h) for h in hidden), state_hidden=int(state_hidden))


def policy_config(
    hidden: Sequence[int],
    state_hidden: int,
    probe_size: int,
    features: Sequence[str] = DEFAULT_CANDIDATE_FEATURES,
    **extra: Any,
) -> dict[str, Any]:
    """The JSON config of a `CandidateScorer` policy (what `candidate_scorer` reads), plus `extra`.

    An empty `hidden` is the linear ranker (`linear_scorer`: no state input).
    `features` are the candidate columns the network was trained on (the
    training env's `features`). `extra` records provenance (agent, env
    config, command, seed, ...); it must be JSON-serialisable. A margin
    shortlist is added by `LearnedStrategy.with_shortlist`.
    """
    if not hidden:
        linear = {"scorer": LINEAR_SCORER, "probe_size": int(probe_size)}
        return {**linear, "features": list(features), **extra}
    return {
        "scorer": SCORER,
        "network": {"hidden": [int(h) for h in hidden], "state_hidden": int(state_hidden)},
        "probe_size": int(probe_size),
        "features": list(features),
        **extra,
    }


def trained_features(config: dict[str, Any]) -> tuple[str, ...]:
    """The candidate columns a policy reads.

    Files without the list were saved before it existed: they read the built-in columns of
    then (`LEGACY_CANDIDATE_FEATURES`), not the ones added since.
    """
    return tuple(config.get("features", LEGACY_CANDIDATE_FEATURES))


def proposers_of(config: dict[str, Any]) -> tuple[str, ...]:
    """The heuristics whose picks a selector policy chooses among (`()`: not a selector).

    See `metaal.strategies.selector`: with proposers the policy scores only
    their picks, each with the selector columns besides its trained features.
    """
    names = config.get("proposers") or ()
    return check_proposers(names) if names else ()


def selector_state_of(config: dict[str, Any]) -> tuple[str, ...]:
    """A selector policy's step columns (`metaal.strategies.selector.STEP_FEATURES`).

    Files without `selector_state` were saved before it existed and read `STEP_COLUMNS`.
    """
    return check_step_columns(config.get("selector_state", STEP_COLUMNS))


def lookahead_of(config: dict[str, Any]) -> int:
    """A look-ahead policy's shortlist size S (`metaal.strategies.lookahead`; 0: not one).

    Such a policy scores only margin's S most uncertain candidates, each with
    the look-ahead columns besides its trained features.
    """
    size = int(config.get("lookahead", 0))
    if size < 0:
        raise ValueError(f"lookahead must be a shortlist size >= 1 (0: none), got {size}")
    if size and proposers_of(config):
        raise ValueError("a policy is a selector (proposers) or a look-ahead policy, not both")
    return size


def lookahead_stats_of(config: dict[str, Any]) -> tuple[str, ...]:
    """The look-ahead statistics a look-ahead policy reads (`metaal.strategies.lookahead`).

    Files without `lookahead_stats` were saved before it existed and read `STATS`.
    """
    return check_stats(config.get("lookahead_stats", STATS))


def scorer_columns(config: dict[str, Any]) -> tuple[str, ...]:
    """The columns a policy's scorer reads: its trained features, then selector or look-ahead."""
    lookahead = lookahead_columns(lookahead_stats_of(config)) if lookahead_of(config) else ()
    return (
        trained_features(config)
        + selector_columns(proposers_of(config), selector_state_of(config))
        + lookahead
    )


def candidate_scorer(config: dict[str, Any]) -> Apply:
    """`apply(params, obs) -> scores` of the `CandidateScorer` described by `config["network"]`."""
    names = scorer_columns(config)
    net = network(config["network"]["hidden"], config["network"]["state_hidden"])

    def apply(params: Params, obs: Observation) -> jnp.ndarray:
        return net.apply(params, obs.state, obs.columns(names), obs.action_mask)[0]

    return apply


def linear_scorer(config: dict[str, Any]) -> Apply:
    """`scores = candidates @ w + b` over the columns `scorer_columns(config)` (params `w`, `b`)."""
    names = scorer_columns(config)

    def apply(params: Params, obs: Observation) -> jnp.ndarray:
        return obs.columns(names) @ params["w"] + params["b"]

    return apply


def linear_params(
    weights: dict[str, float], names: Sequence[str] = LEGACY_CANDIDATE_FEATURES
) -> Params:
    """Params of `linear_scorer` over the columns `names` from weights by column name.

    The default `names` are what `linear_scorer` reads from a config without a feature list.
    """
    unknown = set(weights) - set(names)
    if unknown:
        raise ValueError(f"unknown candidate features {sorted(unknown)}; known: {', '.join(names)}")
    w = jnp.array([weights.get(f, 0.0) for f in names], jnp.float32)
    return {"w": w, "b": jnp.float32(0.0)}


def resolve_scorer(spec: str) -> Callable[[dict], Apply]:
    """The scorer factory named `spec` (`package.module:function` inside `TRUSTED_PACKAGES`)."""
    spec = _MOVED_SCORERS.get(spec, spec)
    module, _, function = spec.partition(":")
    if not function or module.split(".")[0] not in TRUSTED_PACKAGES:
        raise ValueError(
            f"policy scorer {spec!r} must be 'package.module:function' inside one of "
            f"{TRUSTED_PACKAGES}; was the file written by LearnedStrategy.save?"
        )
    try:
        return getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as err:
        raise ValueError(
            f"policy scorer {spec!r} cannot be imported ({err}); install the package "
            "that trained the policy"
        ) from err


def margin_shortlist(obs: Observation, k: int) -> jnp.ndarray:
    """Mask of the `k` most uncertain candidates by margin (read from the `rank_margin` column)."""
    n = jnp.maximum(jnp.sum(obs.action_mask, axis=-1, keepdims=True) - 1, 1)
    rank = jnp.round(obs.column("rank_margin") * n)
    return obs.action_mask & (rank < k)


def shortlisted_scorer(config: dict) -> Apply:
    """Scorer factory of the network (or linear ranker) of `config` behind margin's shortlist.

    If `config["shortlist"]` is k > 0, only margin's k most uncertain
    candidates can score: the policy re-ranks them. That keeps what margin
    gets right (it never spends a label far from the decision boundary)
    and leaves the order of the most uncertain candidates to the policy.
    """
    inner = candidate_scorer(config) if "network" in config else linear_scorer(config)
    k = int(config.get("shortlist", 0))
    if not k:
        return inner

    def apply(params, obs):
        return jnp.where(margin_shortlist(obs, k), inner(params, obs), NEG_INF)

    return apply


def ensemble_scorer(config: dict) -> Apply:
    """Scorer factory of ensembles: the mean of the members' standardised scores.

    `config["member_scorer"]` names the members' factory (they share one
    architecture); the params are `{"members": pytree stacked on axis 0}`.
    Each member's scores are z-scored over the candidates it may pick before
    averaging, so no member dominates by its scale. Averaging policies trained
    from different seeds cancels much of what one training run learns by
    chance.
    """
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
