"""Imitation of a one-step look-ahead oracle (DAgger) for the shared-weight candidate scorer.

The expert knows, for each candidate, the accuracy gain of labelling it and
refitting (`make_expert`: the env's own `context(...).lookahead` on the
validation split, or, by default, accuracy on validation plus the unlabelled
pool with its hidden labels, a privileged and much less noisy teacher). Each
DAgger round:

1. rolls out `n_envs` episodes, each on a task drawn at random from the
   training suite, with a mixture policy: round 0 executes the expert or
   margin sampling (`first_policy`); round r >= 1 executes the expert's
   choice with probability `beta_decay ** r` per step, the current learned
   policy's otherwise (`beta_decay=0`: the learner alone);
2. labels EVERY visited state with the expert's gains of `n_labels`
   candidates: the behaviour's own top `n_policy_labels` picks (so the scorer
   learns to tell apart the candidates it would choose), the rest at random.
   The stored target is always the expert's gains, whatever action was
   executed: that is DAgger (ALIL's code stored the executed action);
3. adds (observation rows of the labelled candidates, gains) to a fixed-size
   buffer holding every round, and fits the scorer on it to rank candidates
   like the expert: gains normalised per state (z-scores, min-max as ImitAL,
   or centred per state and scaled per episode), then a listwise softmax
   cross-entropy against softmax(target / temperature), a pairwise RankNet
   loss, or a regression.

With `shortlist=k` the policy only reorders margin sampling's k most
uncertain candidates, and those are what the expert labels: the learned
part corrects margin instead of replacing it. The imitation ablation
(docs/RESULTS.md) found this the only recipe that stays level with margin:
free policies learn the oracle's taste for large, label-dependent model
changes (far, high-gradient points), which transfers badly. The defaults are
that recipe; the others are the named recipes of
`metaal.experiments.configs.IMITATION_RECIPES` (`metaal train --agent
imitation --preset NAME`).

Imitation is an agent like PPO and DQN (`metaal.agents.AGENTS`): an update is
one DAgger round (`init`, `update`, `policy_params`), so `metaal train`
drives it in chunks with the same checkpoints, exact resume, W&B logging,
periodic evaluation and export. With `EnvConfig(n_candidates=None)` the
candidate features are computed against the whole pool, exactly as at
transfer time, and only the labelled rows are stored. `make_train(config)(key,
tasks)` runs a whole run under one `jax.jit`. Float hyper-parameters of
`ImitationConfig` are pytree leaves; the rest is static.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from metaal import features
from metaal.agents import rollout
from metaal.envs.core import ActiveLearningEnv, EnvConfig, EnvParams
from metaal.features import Observation
from metaal.policy_net import NEG_INF, margin_shortlist, network
from metaal.strategies.base import select
from metaal.strategies.lookahead import STATS, check_stats, lookahead_columns, lookahead_observation
from metaal.strategies.selector import (
    STEP_COLUMNS,
    check_proposers,
    check_step_columns,
    selector_columns,
    selector_observation,
)
from metaal.strategies.uncertainty import MARGIN

FIRST_POLICIES = ("oracle", "margin")
EXPERT_SETS = ("val", "pool+val")
EXPERT_LABELS = ("true", "expected", "teacher")
LOSSES = ("listwise", "pairwise", "regression")
TARGETS = ("zscore", "minmax", "episode")


@struct.dataclass
class ImitationConfig:
    """DAgger settings: static fields set shapes and code paths; float fields are sweepable."""

    env: EnvConfig = struct.field(
        pytree_node=False, default=EnvConfig(budget=100, n_candidates=None)
    )
    """Training env; `n_candidates=None` computes candidate features against the whole pool."""
    n_rounds: int = struct.field(pytree_node=False, default=6)
    """DAgger rounds (round 0 is the expert or margin)."""
    n_envs: int = struct.field(pytree_node=False, default=32)
    """Episodes rolled out per round, each on a task drawn from the suite."""
    n_labels: int = struct.field(pytree_node=False, default=16)
    """Candidates per visited state labelled by the expert (one refit each)."""
    n_policy_labels: int = struct.field(pytree_node=False, default=16)
    """Of those, the behaviour policy's own top picks; the rest are drawn at random."""
    first_policy: str = struct.field(pytree_node=False, default="margin")
    """Who acts in round 0: the expert (`oracle`) or `margin` sampling."""
    expert_set: str = struct.field(pytree_node=False, default="pool+val")
    """Where it measures it: `val`, or `pool+val` (privileged: every unlabelled pool label too)."""
    expert_label: str = struct.field(pytree_node=False, default="true")
    """`true`: the expert refits with the candidate's label; `expected`: it averages the gains
    over the learner's two likeliest labels, so its targets never reveal the candidate's own
    label (only how the pool is labelled); `teacher`: the same average, weighted by a teacher
    (the learner fitted on every pool label, a training-time privilege) instead of the current
    learner, so the weights say how the candidate's neighbourhood is labelled, not how lucky
    its own label was, nor how unsure an under-trained learner is."""
    expert_horizon: int = struct.field(pytree_node=False, default=1)
    """Steps the expert looks ahead: 1 is the one-step gain; h > 1 labels the candidate, then
    follows margin sampling for h - 1 more picks and scores the gain after all h, so a pick
    is credited for what it does to margin's next picks (non-myopic credit)."""
    updates_per_round: int = struct.field(pytree_node=False, default=600)
    """Adam steps on the buffer after each round."""
    batch_size: int = struct.field(pytree_node=False, default=128)
    """States per Adam step."""
    hidden: tuple[int, ...] = struct.field(pytree_node=False, default=(64, 64))
    """Candidate MLP widths of the `CandidateScorer`; `()` is a linear ranker."""
    shortlist: int = struct.field(pytree_node=False, default=16)
    """If > 0, the policy only reorders margin sampling's `shortlist` most uncertain candidates
    (and those are the ones the expert labels); 0 lets it pick any candidate."""
    proposers: tuple[str, ...] = struct.field(pytree_node=False, default=())
    """If set, a strategy selector: the policy chooses among these heuristics' picks of each
    step (`metaal.strategies.selector`), the expert labels exactly those, and the candidates
    carry the selector columns (who proposed them, how much the heuristics disagree). Needs
    shortlist 0 and n_labels = n_policy_labels = the number of proposers."""
    lookahead: int = struct.field(pytree_node=False, default=0)
    """If S > 0, a look-ahead policy: it scores only margin sampling's S most uncertain
    candidates, each with the look-ahead columns (`metaal.strategies.lookahead`: the expected
    change of the pool's predictions and its expected error and entropy after labelling it,
    from refits with its likeliest labels), and the expert labels exactly those. Needs
    shortlist 0 and n_labels = n_policy_labels = S."""
    lookahead_stats: tuple[str, ...] = struct.field(pytree_node=False, default=STATS)
    """A look-ahead policy's statistics (`metaal.strategies.lookahead`): `STATS` (change,
    error, entropy), optionally followed by `EXTRA_STATS` (error_spread, change_spread, flip,
    fit_error); each comes with its z-score within the shortlist."""
    selector_state: tuple[str, ...] = struct.field(pytree_node=False, default=STEP_COLUMNS)
    """A selector's step columns, the same for every candidate of a step, by name
    (`metaal.strategies.selector.STEP_FEATURES`: distinct_picks, balance_gap, fit_error,
    label_disagreement)."""
    state_hidden: int = struct.field(pytree_node=False, default=32)
    """State embedding width of the `CandidateScorer`."""
    loss: str = struct.field(pytree_node=False, default="listwise")
    """`listwise`, `pairwise` or `regression` (see the module docstring)."""
    targets: str = struct.field(pytree_node=False, default="episode")
    """Normalisation of the gains: per state `zscore` or `minmax`; or `episode`: centred per
    state, divided by their RMS over the whole episode, so that states where every candidate
    gains about the same (late, noise-dominated ones) teach little."""
    learning_rate: float = 1e-3
    """Adam step size."""
    temperature: float = 0.5
    """Listwise target softmax temperature on the normalised gains."""
    beta_decay: float = 0.0
    """Probability that the expert acts in round r >= 1 is `beta_decay ** r`."""
    anchor_bonus: float = 0.0
    """A selector's prior toward its first proposer (margin in `sel_big`): added to the
    normalised target of that proposer's pick, so the scorer learns to leave it only where
    another pick's one-step gain is higher by more than this (in the targets' units)."""

    @property
    def steps_per_update(self) -> int:
        """Env steps per update (one DAgger round), all episodes together."""
        return self.n_envs * self.env.budget

    @property
    def num_updates(self) -> int:
        """Updates (DAgger rounds) in the whole run."""
        return self.n_rounds

    @property
    def total_steps(self) -> int:
        """Env steps of the whole run."""
        return self.n_rounds * self.steps_per_update

    @property
    def reward_norm(self) -> str:
        """Imitation learns from the expert's gains, not rewards: no reward normalisation."""
        return "none"

    def with_updates(self, updates: int) -> ImitationConfig:
        """The same config running `updates` rounds."""
        return self.replace(n_rounds=updates)

    def check(self) -> None:
        """Settings are checked when the config is made (`__post_init__`)."""

    def __post_init__(self) -> None:
        if self.n_rounds < 1:
            raise ValueError(f"n_rounds must be at least 1, got {self.n_rounds}")
        if self.first_policy not in FIRST_POLICIES:
            raise ValueError(
                f"first_policy {self.first_policy!r} is unknown; choose one of {FIRST_POLICIES}"
            )
        if self.loss not in LOSSES:
            raise ValueError(f"loss {self.loss!r} is unknown; choose one of {LOSSES}")
        if self.expert_set not in EXPERT_SETS:
            raise ValueError(
                f"expert_set {self.expert_set!r} is unknown; choose one of {EXPERT_SETS}"
            )
        if self.expert_label not in EXPERT_LABELS:
            raise ValueError(
                f"expert_label {self.expert_label!r} is unknown; choose one of {EXPERT_LABELS}"
            )
        if self.targets not in TARGETS:
            raise ValueError(f"targets {self.targets!r} is unknown; choose one of {TARGETS}")
        if self.expert_horizon < 1:
            raise ValueError(
                f"expert_horizon must be at least 1 (the one-step gain), got {self.expert_horizon}"
            )
        if self.expert_horizon >= self.env.budget:
            raise ValueError(
                f"expert_horizon ({self.expert_horizon}) must be below the budget "
                f"({self.env.budget}): the look-ahead cannot outrun the episode"
            )
        if not 0 <= self.n_policy_labels <= self.n_labels:
            raise ValueError(
                f"n_policy_labels ({self.n_policy_labels}) must lie in 0..n_labels "
                f"({self.n_labels})"
            )
        if self.proposers:
            names = check_proposers(self.proposers)
            object.__setattr__(self, "proposers", names)  # a JSON list hashes as a tuple
            object.__setattr__(self, "selector_state", check_step_columns(self.selector_state))
            if self.shortlist:
                raise ValueError(
                    f"a selector (proposers {list(names)}) chooses among its proposers' picks; "
                    f"set shortlist 0 (got {self.shortlist})"
                )
            if not self.n_policy_labels == self.n_labels == len(names):
                raise ValueError(
                    f"a selector's expert labels every proposal: set n_labels = "
                    f"n_policy_labels = {len(names)} (the number of proposers; got "
                    f"{self.n_labels} and {self.n_policy_labels})"
                )
        check_stats(self.lookahead_stats)
        if tuple(self.lookahead_stats) != STATS and not self.lookahead:
            raise ValueError(
                f"lookahead_stats {list(self.lookahead_stats)} are a look-ahead policy's "
                "columns: set lookahead (margin's shortlist size), or leave lookahead_stats out"
            )
        if self.lookahead:
            if self.lookahead < 0 or self.proposers or self.shortlist:
                raise ValueError(
                    f"lookahead {self.lookahead} is margin's shortlist of a look-ahead policy: "
                    "set it >= 1 with proposers () and shortlist 0 (got proposers "
                    f"{list(self.proposers)}, shortlist {self.shortlist})"
                )
            if not self.n_policy_labels == self.n_labels == self.lookahead:
                raise ValueError(
                    f"a look-ahead policy's expert labels its whole shortlist: set n_labels = "
                    f"n_policy_labels = {self.lookahead} (got {self.n_labels} and "
                    f"{self.n_policy_labels})"
                )
        if isinstance(self.anchor_bonus, int | float) and self.anchor_bonus:
            if not self.proposers:
                raise ValueError(
                    f"anchor_bonus ({self.anchor_bonus}) is a selector's prior toward its "
                    "first proposer: set proposers, or anchor_bonus 0"
                )
            if self.anchor_bonus < 0:
                raise ValueError(f"anchor_bonus must be >= 0, got {self.anchor_bonus}")
        if self.shortlist and not self.n_policy_labels == self.n_labels <= self.shortlist:
            raise ValueError(
                f"with shortlist={self.shortlist} the expert labels the shortlist's top "
                f"candidates only: set n_policy_labels = n_labels <= {self.shortlist} (got "
                f"{self.n_policy_labels} and {self.n_labels})"
            )
        c = self.env.n_candidates
        if c is not None and self.n_labels > c:
            raise ValueError(
                f"n_labels ({self.n_labels}) exceeds the env's n_candidates ({c}); "
                f"lower n_labels or raise n_candidates"
            )


@struct.dataclass
class Samples:
    """Expert-labelled states: the leading axis indexes states."""

    state: jnp.ndarray  # (n, S) state features
    candidates: jnp.ndarray  # (n, L, F) features of the labelled candidates
    mask: jnp.ndarray  # (n, L) labelled candidate is real and unlabelled
    gains: jnp.ndarray  # (n, L) expert look-ahead gains (0 where masked)
    index: jnp.ndarray  # (n, L) pool index of each labelled candidate
    scale: jnp.ndarray  # (n,) RMS over the state's episode of the per-state centred gains


class Scorer(NamedTuple):
    """A candidate scorer as pure functions.

    `init(key) -> params`; `apply(params, state, candidates, mask) -> scores`
    (-1e9 where masked).
    """

    init: Callable[[jax.Array], Any]
    apply: Callable[..., jnp.ndarray]


def make_scorer(config: ImitationConfig) -> Scorer:
    """The `CandidateScorer` the config trains, or with `hidden=()` a linear ranker.

    The linear ranker, `scores = candidates @ w + b`, is the floor a network
    must beat; it is `metaal.strategies.learned.linear_scorer` at transfer time.
    """
    n_features = n_columns(config)
    if not config.hidden:

        def init_linear(key):
            del key  # zero weights: every candidate ties until the first fit
            return {"w": jnp.zeros(n_features), "b": jnp.zeros(())}

        def apply_linear(params, state, candidates, mask):
            del state  # a state term would add the same to every candidate
            return jnp.where(mask, candidates @ params["w"] + params["b"], NEG_INF)

        return Scorer(init_linear, apply_linear)
    net = network(config.hidden, config.state_hidden)
    n_state = features.n_state_features(config.env.probe_size)

    def init(key):
        dummy = jnp.zeros((2, n_features))
        return net.init(key, jnp.zeros((n_state,)), dummy, jnp.ones((2,), bool))

    return Scorer(init, lambda params, *obs: net.apply(params, *obs)[0])


def n_columns(config: ImitationConfig) -> int:
    """Candidate columns the scorer reads: the env's, then a selector's or a look-ahead policy's."""
    extra = selector_columns(config.proposers, config.selector_state)
    extra += lookahead_columns(config.lookahead_stats) if config.lookahead else ()
    return len(ActiveLearningEnv(config.env).features) + len(extra)


def anchor_column(config: ImitationConfig) -> int:
    """Index of `proposed_by_<first proposer>` among the scorer's columns (`n_columns`)."""
    if not config.proposers:
        raise ValueError("anchor_column: this config names no proposers")
    extra = selector_columns(config.proposers, config.selector_state)
    return n_columns(config) - len(extra) + extra.index(f"proposed_by_{config.proposers[0]}")


def policy_scores(scorer: Scorer, params: Any, obs: Observation, shortlist: int = 0) -> jnp.ndarray:
    """The learned policy's score of every candidate of `obs` (-1e9 where masked).

    With `shortlist` > 0 only margin's `shortlist` most uncertain candidates can score.
    """
    scores = scorer.apply(params, obs.state, obs.candidates, obs.action_mask)
    if shortlist:
        scores = jnp.where(margin_shortlist(obs, shortlist), scores, NEG_INF)
    return scores


def centred_gains(gains: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """Gains minus their mean over each state's labelled candidates (0 where masked)."""
    n = jnp.maximum(jnp.sum(mask, -1, keepdims=True), 1)
    g = jnp.where(mask, gains, 0.0)
    return jnp.where(mask, g - jnp.sum(g, -1, keepdims=True) / n, 0.0)


def normalise_targets(
    gains: jnp.ndarray, mask: jnp.ndarray, how: str, scale: jnp.ndarray | None = None
) -> tuple[jnp.ndarray, ...]:
    """Normalised gains (0 where masked) and a per-state weight: 0 when all gains are equal.

    `how` is `zscore`, `minmax` or `episode` (centred, divided by `scale`).
    """
    n = jnp.maximum(jnp.sum(mask, -1, keepdims=True), 1)
    hi = jnp.max(jnp.where(mask, gains, -jnp.inf), -1, keepdims=True)
    lo = jnp.min(jnp.where(mask, gains, jnp.inf), -1, keepdims=True)
    spread = hi - lo
    centred = centred_gains(gains, mask)
    if how == "zscore":
        std = jnp.sqrt(jnp.sum(centred**2, -1, keepdims=True) / n)
        t = centred / jnp.maximum(std, 1e-9)
    elif how == "episode":
        t = centred / jnp.maximum(scale[..., None], 1e-9)
    else:
        t = (jnp.where(mask, gains, 0.0) - lo) / jnp.maximum(spread, 1e-9)
    weight = (spread[..., 0] > 1e-6) & (jnp.sum(mask, -1) > 1)
    return jnp.where(mask & weight[..., None], t, 0.0), weight.astype(jnp.float32)


def ranking_loss(scores: jnp.ndarray, samples: Samples, config: ImitationConfig) -> jnp.ndarray:
    """Mean over states of the configured ranking loss of `scores` (n, L) against the gains."""
    mask = samples.mask
    t, weight = normalise_targets(samples.gains, mask, config.targets, samples.scale)
    if config.proposers:  # the prior toward the first proposer's pick (0: none)
        anchor = samples.candidates[..., anchor_column(config)] > 0.5
        t = t + config.anchor_bonus * (anchor & mask & (weight[..., None] > 0))
    if config.loss == "listwise":
        target = jax.nn.softmax(jnp.where(mask, t / config.temperature, -jnp.inf), axis=-1)
        logq = jax.nn.log_softmax(jnp.where(mask, scores, -1e9), axis=-1)
        per_state = -jnp.sum(jnp.where(mask, target * logq, 0.0), -1)
    elif config.loss == "pairwise":
        diff_t = t[..., :, None] - t[..., None, :]
        pair = mask[..., :, None] & mask[..., None, :] & (diff_t > 0)
        w = jnp.where(pair, diff_t, 0.0)
        s = jnp.where(mask, scores, 0.0)
        logistic = jax.nn.softplus(-(s[..., :, None] - s[..., None, :]))
        per_state = jnp.sum(w * logistic, (-2, -1)) / jnp.maximum(jnp.sum(w, (-2, -1)), 1e-9)
    else:
        n = jnp.maximum(jnp.sum(mask, -1, keepdims=True), 1)
        s = jnp.where(mask, scores, 0.0)
        s = s - jnp.sum(s, -1, keepdims=True) / n
        per_state = jnp.sum(jnp.where(mask, (s - t) ** 2, 0.0), -1) / n[..., 0]
    return jnp.sum(weight * per_state) / jnp.maximum(jnp.sum(weight), 1.0)


def _choose_labelled(key, proposal, available, n_labels, n_top):
    """`n_labels` distinct candidate indices: the `n_top` best by `proposal`, then random ones."""
    top_score = jnp.where(available, proposal, -jnp.inf)
    top = jax.lax.top_k(top_score, n_top)[1] if n_top else jnp.zeros((0,), jnp.int32)
    taken = jnp.zeros(available.shape, bool).at[top].set(True)
    u = jax.random.uniform(key, available.shape)
    n_rest = n_labels - n_top
    rest = jax.lax.top_k(jnp.where(available & ~taken, u, -1.0), n_rest)[1] if n_rest else top[:0]
    idx = jnp.concatenate([top, rest]).astype(jnp.int32)
    return idx, available[idx]


def make_episode(config: ImitationConfig, scorer: Scorer) -> Callable:
    """`episode(key, net_params, params, round_index) -> (samples, stats)` on one task.

    The reset key is `jax.random.split(key)[0]`. `samples` has one row per
    step; `stats` per step: `executed` and `expert` (pool index of the executed
    action and of the expert's choice), `agreement` and `regret` of the
    learned policy among the labelled candidates (before this round's fit),
    and the scalar `val_gain` of the episode.
    """
    env = ActiveLearningEnv(config.env)
    teacher = make_expert(config)

    def episode(key, net_params, params: EnvParams, round_index):
        k_reset, k_steps = jax.random.split(key)
        obs, state = env.reset_env(k_reset, params)
        beta = config.beta_decay**round_index
        first = round_index == 0

        def step(carry, key):
            obs, state = carry
            k_lab, k_exp, k_pol, k_coin, k_env = jax.random.split(key, 5)
            seen = obs  # what the policy scores: a selector's proposals with their columns
            if config.proposers:  # its own key, so the other recipes' draws stay as they were
                ctx = env.context(state, params)
                k_sel = jax.random.fold_in(key, 5)
                seen = selector_observation(
                    config.proposers, k_sel, obs, ctx, config.selector_state
                )
            elif config.lookahead:
                ctx = env.context(state, params)
                seen = lookahead_observation(obs, ctx, config.lookahead, config.lookahead_stats)
            learned = policy_scores(scorer, net_params, seen, config.shortlist)
            margin = jnp.where(obs.action_mask, -obs.column("margin"), -jnp.inf)
            restricted = config.shortlist or config.proposers or config.lookahead
            proposal = margin if restricted else jnp.where(first, margin, learned)
            idx, lab_mask = _choose_labelled(
                k_lab, proposal, seen.action_mask, config.n_labels, config.n_policy_labels
            )
            gains = teacher(state, params, idx, lab_mask)
            expert = idx[select(gains, lab_mask, k_exp)]
            own = select(learned, seen.action_mask, k_pol)
            if config.first_policy == "margin":
                first_action = select(margin, obs.action_mask, k_pol)
            else:
                first_action = expert
            use_expert = jax.random.uniform(k_coin) < beta
            action = jnp.where(first, first_action, jnp.where(use_expert, expert, own))
            picked = select(learned[idx], lab_mask, k_pol)
            best = jnp.max(jnp.where(lab_mask, gains, -jnp.inf))
            stats = {
                "executed": state.candidates[action],
                "expert": state.candidates[expert],
                "agreement": (gains[picked] >= best).astype(jnp.float32),
                "regret": best - gains[picked],
            }
            sample = Samples(
                state=obs.state,
                candidates=seen.candidates[idx],
                mask=lab_mask,
                gains=gains,
                index=state.candidates[idx],
                scale=jnp.zeros(()),
            )
            obs, state, _, _, _, _ = env.step_env(k_env, state, action, params)
            return (obs, state), (sample, stats)

        (_, state), (samples, stats) = jax.lax.scan(
            step, (obs, state), jax.random.split(k_steps, config.env.budget)
        )
        stats["val_gain"] = state.val_score - state.initial_val_score
        centred = centred_gains(samples.gains, samples.mask)
        rms = jnp.sqrt(jnp.sum(centred**2) / jnp.maximum(jnp.sum(samples.mask), 1))
        return samples.replace(scale=jnp.full(samples.scale.shape, rms)), stats

    return episode


def expert_gains(
    env: ActiveLearningEnv, state: Any, params: EnvParams, idx: jnp.ndarray, mask: jnp.ndarray
) -> jnp.ndarray:
    """The env's one-step oracle: validation-accuracy gain of labelling each candidate `idx`.

    0 where `mask` is False.
    """
    gains = jax.vmap(env.context(state, params).lookahead)(idx)
    return jnp.where(mask, gains, 0.0)


def margin_rollout(env: ActiveLearningEnv, state: Any, params: EnvParams, steps: int) -> Any:
    """`state` after `steps` more picks of margin sampling (ties to the lowest index).

    The continuation of a multi-step expert: deterministic, so that every
    candidate of a state is followed by the same rule and only its own label
    differs.
    """

    def one(state, _):
        ctx = env.context(state, params)
        scores, _ = MARGIN.score(jax.random.key(0), None, ctx, ())
        action = jnp.argmax(jnp.where(state.candidate_mask, scores, -jnp.inf))
        _, state, _, _, _, _ = env.step_env(jax.random.key(0), state, action, params)
        return state, None

    return jax.lax.scan(one, state, None, length=steps)[0] if steps else state


def make_expert(config: ImitationConfig) -> Callable:
    """`expert(state, params, idx, mask) -> gains` of the candidates `idx` as `config` defines it.

    The gain is the accuracy after minus before labelling the candidate and
    refitting as the env does. With `expert_set="val"`, the true label and
    horizon 1 it is exactly the env's look-ahead (`expert_gains`). With
    `pool+val` the unlabelled pool rows count too, with their hidden labels: a
    privilege only a training-time teacher has, and a far less noisy signal
    than a small validation set. The rows scored are those unlabelled now, for
    every candidate alike. With `expert_horizon` h > 1 the accuracy is taken
    after the candidate and h - 1 further margin picks (`margin_rollout`).
    """
    env = ActiveLearningEnv(config.env)
    horizon = config.expert_horizon
    if (config.expert_set, config.expert_label, horizon) == ("val", "true", 1):
        return lambda state, params, idx, mask: expert_gains(env, state, params, idx, mask)

    def accuracy(learner_params, task, rows_X, rows_y, rows_mask):
        probs = env.learner_step.predict_proba(learner_params, rows_X, task.class_mask)
        correct = (jnp.argmax(probs, -1) == rows_y) & rows_mask
        return jnp.sum(correct) / jnp.maximum(jnp.sum(rows_mask), 1)

    def expert(state, params, idx, mask):
        task = params.task
        if config.expert_set == "val":
            rows = (task.val_X, task.val_y, task.val_mask)
        else:
            rows = (
                jnp.concatenate([task.pool_X, task.val_X]),
                jnp.concatenate([task.pool_y, task.val_y]),
                jnp.concatenate([task.pool_mask & ~state.labeled, task.val_mask]),
            )
        before = accuracy(state.learner, task, *rows)
        if config.expert_label == "teacher":
            # the learner fitted on every labelled pool row (warm-started from the current fit)
            weights = task.pool_mask.astype(jnp.float32)
            label_model = env.learner_step.fit(
                state.learner, task.pool_X, task.pool_y, weights, task.class_mask
            )
        else:
            label_model = state.learner

        def gain(action, label):
            row = state.candidates[action]
            told = params.replace(task=task.replace(pool_y=task.pool_y.at[row].set(label)))
            _, new, _, _, _, _ = env.step_env(jax.random.key(0), state, action, told)
            new = margin_rollout(env, new, told, horizon - 1)
            return accuracy(new.learner, task, *rows) - before

        def true_gain(action):
            return gain(action, task.pool_y[state.candidates[action]])

        def expected_gain(action):
            # Over the two likeliest labels: what the expert can say without peeking at
            # the candidate's own label.
            x = task.pool_X[state.candidates[action]][None]
            probs = env.learner_step.predict_proba(label_model, x, task.class_mask)[0]
            p, labels = jax.lax.top_k(probs, 2)
            g = jax.vmap(lambda y: gain(action, y))(labels)
            return jnp.sum(p * g) / jnp.maximum(jnp.sum(p), 1e-9)

        one = true_gain if config.expert_label == "true" else expected_gain
        return jnp.where(mask, jax.vmap(one)(idx), 0.0)

    return expert


def make_rollout(config: ImitationConfig, scorer: Scorer) -> Callable:
    """`rollout(key, net_params, tasks, round_index) -> (samples, mean stats)`: one DAgger round.

    Each of the `n_envs` episodes runs on a task drawn uniformly from `tasks`;
    samples have a leading (n_envs * budget) state axis.
    """
    episode = make_episode(config, scorer)

    def one(key, net_params, tasks, round_index):
        k_task, k_episode = jax.random.split(key)
        n_tasks = jax.tree.leaves(tasks)[0].shape[0]
        params = jax.tree.map(lambda x: x[jax.random.randint(k_task, (), 0, n_tasks)], tasks)
        samples, stats = episode(k_episode, net_params, params, round_index)
        stats["expert_share"] = jnp.mean(stats.pop("executed") == stats.pop("expert"))
        return samples, stats

    def rollout(key, net_params, tasks, round_index):
        keys = jax.random.split(key, config.n_envs)
        samples, stats = jax.vmap(one, in_axes=(0, None, None, None))(
            keys, net_params, tasks, round_index
        )
        samples = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), samples)
        return samples, jax.tree.map(jnp.mean, stats)

    return rollout


def make_fit(config: ImitationConfig, scorer: Scorer, optimiser) -> Callable:
    """`fit(net_params, opt_state, buffer, filled, key) -> (net_params, opt_state, losses)`.

    `updates_per_round` Adam steps on minibatches drawn from the first
    `filled` rows of `buffer`.
    """

    def loss_fn(net_params, batch):
        scores = scorer.apply(net_params, batch.state, batch.candidates, batch.mask)
        return ranking_loss(scores, batch, config)

    def fit(net_params, opt_state, buffer, filled, key):
        def update(carry, key):
            net_params, opt_state = carry
            rows = jax.random.randint(key, (config.batch_size,), 0, filled)
            batch = jax.tree.map(lambda x: x[rows], buffer)
            loss, grads = jax.value_and_grad(loss_fn)(net_params, batch)
            updates, opt_state = optimiser.update(grads, opt_state, net_params)
            return (optax.apply_updates(net_params, updates), opt_state), loss

        (net_params, opt_state), losses = jax.lax.scan(
            update, (net_params, opt_state), jax.random.split(key, config.updates_per_round)
        )
        return net_params, opt_state, losses

    return fit


def empty_buffer(config: ImitationConfig, size: int) -> Samples:
    """`size` zero rows of `Samples` for `config`'s observation sizes."""
    n_state = features.n_state_features(config.env.probe_size)
    return Samples(
        state=jnp.zeros((size, n_state)),
        candidates=jnp.zeros((size, config.n_labels, n_columns(config))),
        mask=jnp.zeros((size, config.n_labels), bool),
        gains=jnp.zeros((size, config.n_labels)),
        index=jnp.zeros((size, config.n_labels), jnp.int32),
        scale=jnp.ones((size,)),
    )


@struct.dataclass
class ImitationRunner:
    """Everything a DAgger run carries between rounds (and writes to a checkpoint)."""

    net_params: Any
    opt_state: Any
    buffer: Samples  # every round's expert-labelled states; rows [0, update * per round) filled
    key: jax.Array
    update: jnp.ndarray  # rounds done


def _parts(config: ImitationConfig):
    scorer = make_scorer(config)
    optimiser = optax.adam(config.learning_rate)
    return scorer, optimiser


def init(
    config: ImitationConfig, key: jax.Array, tasks: rollout.TrainingTasks, env: Any = None
) -> ImitationRunner:
    """A fresh run: scorer, optimiser, an empty buffer for every round, RNG."""
    del tasks, env  # the rounds read the tasks; the env is the config's own
    scorer, optimiser = _parts(config)
    k_init, key = jax.random.split(key)
    net_params = scorer.init(k_init)
    return ImitationRunner(
        net_params=net_params,
        opt_state=optimiser.init(net_params),
        buffer=empty_buffer(config, config.n_rounds * config.steps_per_update),
        key=key,
        update=jnp.int32(0),
    )


def update(
    config: ImitationConfig, runner: ImitationRunner, tasks: rollout.TrainingTasks, env: Any = None
) -> tuple[ImitationRunner, dict[str, jnp.ndarray]]:
    """One DAgger round: roll out, label every visited state, add to the buffer, fit.

    Metrics: `losses/ranking_loss` (mean over the round's last tenth of
    updates), `charts/oracle_agreement` (share of visited states where the
    policy before the round's fit picks a best candidate among the labelled
    ones), `charts/regret` (best minus picked gain there),
    `charts/expert_share` (share of executed actions that were the expert's)
    and `charts/episode_val_gain` (final minus initial validation accuracy of
    the round's episodes, under the behaviour policy).
    """
    del env
    scorer, optimiser = _parts(config)
    per_round = config.steps_per_update
    key, k_roll, k_fit = jax.random.split(runner.key, 3)
    samples, stats = make_rollout(config, scorer)(
        k_roll, runner.net_params, tasks.params, runner.update
    )
    buffer = jax.tree.map(
        lambda b, x: jax.lax.dynamic_update_slice_in_dim(b, x, runner.update * per_round, 0),
        runner.buffer,
        samples,
    )
    filled = (runner.update + 1) * per_round
    net_params, opt_state, losses = make_fit(config, scorer, optimiser)(
        runner.net_params, runner.opt_state, buffer, filled, k_fit
    )
    metrics = {
        "losses/ranking_loss": jnp.mean(losses[-max(1, config.updates_per_round // 10) :]),
        "charts/oracle_agreement": stats["agreement"],
        "charts/regret": stats["regret"],
        "charts/expert_share": stats["expert_share"],
        "charts/episode_val_gain": stats["val_gain"],
    }
    runner = ImitationRunner(net_params, opt_state, buffer, key, runner.update + 1)
    return runner, metrics


def policy_params(runner: ImitationRunner) -> Any:
    """The scorer parameters to deploy."""
    return runner.net_params


def make_train(
    config: ImitationConfig, env: Any = None
) -> Callable[[jax.Array, rollout.TrainingTasks], tuple[ImitationRunner, dict[str, jnp.ndarray]]]:
    """Jitted `train(key, tasks) -> (runner, metrics per round)` for the whole run."""
    return rollout.make_train(init, update, config, env)
