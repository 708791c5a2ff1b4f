"""Pool-based active learning as a functional JAX environment (gymnax-1.0 shaped).

    reset(key, params)               -> obs, state
    step(key, state, action, params) -> obs, state, reward, terminated, truncated, info

Episode semantics. An episode is one AL run on one task split (in
`EnvParams`). `reset` draws a small initial labelled set (one sample per
class first, as far as `n_initial` allows, then at random), fits the learner
and scores it on the validation split. Each step offers `n_candidates`
unlabelled pool samples (a uniformly random ordered sample without replacement,
drawn afresh each step by Floyd's algorithm from a list of the unlabelled rows) or, with
`n_candidates=None`, the whole pool; the action is an index into the
candidates. The label is revealed, the learner is refitted (warm start) on
the labelled rows, which the state keeps in labelling order, and the
validation accuracy recomputed.

Reward (`EnvConfig.reward`):
- `"gain"`: validation accuracy after minus before the step; an episode's
  rewards sum to final minus initial validation accuracy;
- `"aulc"`: validation accuracy after the step, so the return is the area
  under the validation learning curve.

An action that points at a masked candidate (already labelled, padding) or
outside `[0, n_candidates)` is a no-op that still uses one query of the
budget and is rewarded `-invalid_action_penalty`. After `budget` steps the
episode is `terminated` (the remaining budget is part of the state);
`truncated` is always False. Like gymnax's `step_env`, the core does not stop a
caller from stepping a terminated episode: labels are still revealed, but the
refit and `labeled_idx` keep only the first `n_initial + budget` labelled rows.
The drivers reset at termination (`agents.rollout`, `envs.gym`, which raises
`ResetNeeded`).

The test split never enters reward or observation: it is only reported in
`info["test_score"]`. Task data lives in `EnvParams`, never on the env, so
one jitted function vmaps over tasks (padded to common shapes) and seeds.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from metaal import features
from metaal.batching import lazy_cond
from metaal.data.batch import TaskBatch
from metaal.features import Observation
from metaal.learners import Learner, learner_settings, make_learner, parse_learner
from metaal.strategies.base import Context
from metaal.strategies.distribution import kmeans

REWARDS = ("gain", "aulc")
#: How the initial labelled set is drawn (`EnvConfig.init`).
INITS = ("stratified", "random", "centroids")


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    """Static settings: everything that sets shapes or code paths (hashable, one compile each)."""

    budget: int = 100
    """Queries per episode."""
    n_initial: int = 5
    """Size of the initial labelled set."""
    init: str = "stratified"
    """How the initial set is drawn: `stratified` (one sample per class first, as far as
    n_initial allows: it reads the labels, the tabular protocol), `random` (uniform, no labels)
    or `centroids` (k-means with n_initial clusters on the pool's features, the row nearest each
    centre: no labels, the cold start of ALFM)."""
    query_batch: int = 1
    """Picks per round: the learner is refitted, scored and rewarded once every query_batch
    picks (and after the last); 1 refits after every label."""
    n_candidates: int | None = 32
    """Candidates offered per step; None offers the whole unlabelled pool."""
    reward: str = "gain"
    """`gain` (validation gain) or `aulc` (validation accuracy after each step)."""
    learner: str = "logreg"
    """Learner spec: a name in `metaal.learners.LEARNERS` with optional settings,
    `name:key=value,...` (e.g. `mlp:hidden=64,weight_decay=0.001`)."""
    fit_steps: int = 5
    """Optimiser steps per warm-started refit."""
    init_fit_steps: int = 50
    """Optimiser steps of the cold fit at reset."""
    probe_size: int = 32
    """Pool samples whose sorted confidences enter the state."""
    invalid_action_penalty: float = 1.0
    """Reward of an action on a masked candidate."""
    features: tuple[str, ...] | None = None
    """Candidate columns the env computes (`metaal.features.candidate_feature_names()`);
    None: every column of the feature table when the env is built."""

    def __post_init__(self) -> None:
        if self.budget <= 0:
            raise ValueError(f"budget must be a positive number of queries, got {self.budget}")
        if self.n_initial < 1:
            raise ValueError(f"n_initial must be at least 1, got {self.n_initial}")
        if self.n_candidates is not None and self.n_candidates < 1:
            raise ValueError(f"n_candidates must be >= 1 or None, got {self.n_candidates}")
        if self.reward not in REWARDS:
            raise ValueError(f"unknown reward {self.reward!r}; choose one of {REWARDS}")
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; choose one of {INITS}")
        if self.query_batch < 1:
            raise ValueError(f"query_batch must be a positive count, got {self.query_batch}")
        if self.query_batch > self.budget:
            raise ValueError(
                f"query_batch ({self.query_batch}) exceeds the budget ({self.budget}): a round "
                "cannot hold more picks than the episode; lower --query-batch or raise --budget"
            )
        self.make_learner(cold=True)  # a bad learner spec fails here, with the known settings
        if self.features is not None:  # JSON round trips give lists; configs must hash
            object.__setattr__(self, "features", tuple(self.features))

    def make_learner(self, cold: bool) -> Learner:
        """The configured learner for the cold fit at reset or for warm refits."""
        name, settings = parse_learner(self.learner)
        overrides: dict[str, Any] = {"steps": self.init_fit_steps if cold else self.fit_steps}
        if "power_iters" in learner_settings(name) and "power_iters" not in settings:
            # the cold fit starts its curvature estimate from scratch; warm refits carry it
            overrides["power_iters"] = 12 if cold else 1
        return make_learner(self.learner, **overrides)


@struct.dataclass
class EnvParams:
    """One task split, padded, plus per-task quantities computed once (pool density, size)."""

    task: TaskBatch
    density: jnp.ndarray
    n_pool: jnp.ndarray  # real (unpadded) pool rows
    pool_XT: jnp.ndarray  # (D, N) the pool, features-major, for distance updates


@struct.dataclass
class EnvState:
    """The dynamic part of an episode."""

    labeled: jnp.ndarray  # (N,) bool
    labeled_idx: jnp.ndarray  # (L,) pool indices in labelling order, L = n_initial + budget
    # the labelled rows themselves, so a refit reads them without gathering L pool rows
    labeled_X: jnp.ndarray  # (L, D) pool_X[labeled_idx]; rows from n_labeled on are zero
    labeled_y: jnp.ndarray  # (L,) pool_y[labeled_idx]; zero from n_labeled on
    n_labeled: jnp.ndarray
    # the unlabelled real pool rows, for sampling candidates without sorting the pool
    unlabeled: jnp.ndarray  # (N,) int32; positions [0, n_pool - n_labeled) hold them, any order
    step: jnp.ndarray
    learner: Any
    val_score: jnp.ndarray
    initial_val_score: jnp.ndarray
    dist_labeled: jnp.ndarray  # (N,) distance of every pool row to the labelled set
    # (N,) distance of every pool row to the nearest pick of the current batch round: inf
    # while the round has none (at reset, right after every refit, always with query_batch 1)
    dist_round: jnp.ndarray
    class_counts: jnp.ndarray  # (K,) labels revealed per class
    probe: jnp.ndarray  # (probe_size,) pool indices
    candidates: jnp.ndarray  # (C,) pool indices
    candidate_mask: jnp.ndarray  # (C,) bool


def _mix32(h: jnp.ndarray) -> jnp.ndarray:
    """A bijective 32-bit integer mixer with full avalanche (Wellons' `lowbias32`)."""
    h = (h ^ (h >> 16)) * jnp.uint32(0x7FEB352D)
    h = (h ^ (h >> 15)) * jnp.uint32(0x846CA68B)
    return h ^ (h >> 16)


def row_priorities(key: jax.Array, n: int) -> jnp.ndarray:
    """`n` uniform [0, 1) draws (24 bits each): a hash of the index 0..n-1 keyed by `key`.

    Two threefry draws and a few integer operations per index, instead of `n`
    threefry draws. For a fixed key the hash is a bijection of the index, so
    the `n` draws are distinct and draw `i` does not depend on `n`.
    """
    seed = jax.random.bits(key, (2,), jnp.uint32)
    h = _mix32(_mix32(jnp.arange(n, dtype=jnp.uint32) ^ seed[0]) + seed[1])
    return (h >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)


def floyd_positions(key: jax.Array, n: jnp.ndarray, k: int) -> jnp.ndarray:
    """A uniformly random ordered `k`-sample of `range(n)` (Floyd's algorithm); -1 beyond `n`.

    Floyd's permutation variant: for j = n-k, ..., n-1 draw t uniform in
    [0, j]; put t first when it is new, else put j right after t. Every
    ordered sample of distinct positions is equally likely (Bentley and Floyd,
    "A sample of brilliance", 1987), with k draws and no sort over the pool:
    the k steps unroll into elementwise operations on k-vectors, which over a
    batch of envs cost a fraction of a `top_k` over the pool. The draws are
    `row_priorities` (24-bit uniforms), so the probabilities are uniform up to
    a relative 2**-24 * n. When n < k, the n positions fill the first slots.
    """
    u = row_priorities(key, k)
    slots = jnp.arange(k)
    seq = jnp.full((k,), -1, jnp.int32)  # the first i slots hold the sample so far
    for i in range(k):
        j = n - k + i
        t = jnp.minimum((u[i] * (j + 1).astype(jnp.float32)).astype(jnp.int32), j)
        match = seq == t
        new_t = ~jnp.any(match)
        at = jnp.where(new_t, 0, jnp.argmax(match) + 1)
        value = jnp.where(new_t, t, j)
        shifted = jnp.concatenate([seq[:1], seq[:-1]])  # seq moved one slot right
        inserted = jnp.where(slots < at, seq, jnp.where(slots == at, value, shifted))
        seq = jnp.where(j >= 0, inserted, seq)
    return seq


def make_params(task: TaskBatch) -> EnvParams:
    """Env params for one padded task (unbatched); use `jax.vmap(make_params)` for a batch."""
    return EnvParams(
        task=task,
        density=features.pool_density(task.pool_X, task.pool_mask),
        n_pool=jnp.sum(task.pool_mask).astype(jnp.int32),
        pool_XT=task.pool_X.T,
    )


def check_fits(task: TaskBatch, config: EnvConfig, name: str = "task") -> None:
    """Raise a clear error when the pool cannot hold the initial set plus the budget."""
    n_pool = int(jnp.min(jnp.sum(task.pool_mask, axis=-1)))
    if config.n_initial > n_pool:
        what = {
            "centroids": "one row per k-means centre",
            "stratified": "one per class first",
            "random": "drawn at random",
        }[config.init]
        raise ValueError(
            f"{name}: the initial set of {config.n_initial} rows (--init {config.init}: "
            f"{what}) needs more rows than the pool's {n_pool}; lower --n-initial to at most "
            f"{n_pool - 1} (and the budget with it)"
        )
    if config.n_initial + config.budget > n_pool:
        raise ValueError(
            f"{name}: the pool has {n_pool} samples but the initial set ({config.n_initial}) "
            f"plus the budget ({config.budget}) needs {config.n_initial + config.budget}; "
            f"lower the budget to at most {n_pool - config.n_initial}"
        )


#: k-means runs of the centroid start; the one of least inertia is kept.
CENTROID_RESTARTS = 4


def centroid_rows(key: jax.Array, X: jnp.ndarray, mask: jnp.ndarray, k: int) -> jnp.ndarray:
    """`k` distinct rows of `X` (where `mask`): the one nearest each k-means centre.

    k-means++ seeding and Lloyd steps (`metaal.strategies.distribution.kmeans`)
    on the features alone, no labels, best of `CENTROID_RESTARTS` runs by
    inertia (one run can seed two centres in one group). Centres are served
    in turn, each taking the nearest row no earlier centre took, so the rows
    are distinct even when clusters are empty or share their nearest row.
    """

    def run(key):
        cluster = kmeans(key, X, mask, k)
        onehot = jax.nn.one_hot(cluster, k) * mask[:, None]
        centres = onehot.T @ X / jnp.maximum(onehot.sum(axis=0), 1.0)[:, None]
        sq = (
            jnp.sum(X**2, axis=1)[None, :]
            + jnp.sum(centres**2, axis=1)[:, None]
            - 2.0 * centres @ X.T
        )
        inertia = jnp.sum(jnp.where(mask, jnp.take_along_axis(sq, cluster[None], 0)[0], 0.0))
        return sq, inertia

    sq, inertia = jax.vmap(run)(jax.random.split(key, CENTROID_RESTARTS))
    sq = sq[jnp.argmin(inertia)]
    taken = ~mask
    rows = []
    for c in range(k):
        row = jnp.argmin(jnp.where(taken, jnp.inf, sq[c]))
        rows.append(row)
        taken = taken.at[row].set(True)
    return jnp.stack(rows).astype(jnp.int32)


class ActiveLearningEnv:
    """The functional environment; holds only the static `EnvConfig`."""

    def __init__(self, config: EnvConfig = EnvConfig()) -> None:
        self.config = config
        # fixed at construction, so a feature registered later changes no compiled env
        self.features = (
            features.candidate_feature_names() if config.features is None else config.features
        )
        features.column_bounds(self.features, 1)  # an unknown column fails here, not in a trace
        self.learner_init = config.make_learner(cold=True)
        self.learner_step = config.make_learner(cold=False)
        self.reset = jax.jit(self.reset_env)
        self.step = jax.jit(self.step_env)

    # -- helpers ---------------------------------------------------------------------

    def n_candidates(self, params: EnvParams) -> int:
        """Static number of candidates per step for these params."""
        return self.config.n_candidates or params.task.pool_X.shape[-2]

    def _fit(self, learner, params_learner, X, y, weights, class_mask, pool_X, unlabeled):
        """Fit on the rows of weight > 0 (semi-supervised: and the unlabelled pool rows)."""
        if not learner.semi_supervised:
            return learner.fit(params_learner, X, y, weights, class_mask)
        return learner.fit(
            params_learner, X, y, weights, class_mask, pool_X, unlabeled.astype(jnp.float32)
        )

    def _refit(self, params_learner, X, y, n_labeled, class_mask, pool_X, unlabeled):
        """The warm refit on the first `n_labeled` rows of (X, y)."""
        weights = (jnp.arange(y.shape[0]) < n_labeled).astype(jnp.float32)
        return self._fit(
            self.learner_step, params_learner, X, y, weights, class_mask, pool_X, unlabeled
        )

    def accuracy(
        self,
        learner_params: Any,
        X: jnp.ndarray,
        y: jnp.ndarray,
        mask: jnp.ndarray,
        class_mask: jnp.ndarray,
    ) -> jnp.ndarray:
        """Accuracy of fitted `learner_params` on the rows of (X, y) where `mask` holds."""
        correct = (self.learner_step.predict(learner_params, X, class_mask) == y) & mask
        return jnp.sum(correct) / jnp.maximum(jnp.sum(mask), 1)

    def test_accuracy(self, learner_params: Any, task: TaskBatch) -> jnp.ndarray:
        """Accuracy on the task's test split (reported, never observed)."""
        return self.accuracy(
            learner_params, task.test_X, task.test_y, task.test_mask, task.class_mask
        )

    def _sample_candidates(self, key, labeled, unlabeled, n_labeled, params: EnvParams):
        if self.config.n_candidates is None:
            available = params.task.pool_mask & ~labeled
            return jnp.arange(labeled.shape[0], dtype=jnp.int32), available
        # `unlabeled` holds the n_pool - n_labeled unlabelled rows (see `EnvState`)
        pos = floyd_positions(key, params.n_pool - n_labeled, self.config.n_candidates)
        return unlabeled[jnp.maximum(pos, 0)], pos >= 0

    def _distance_to(self, params: EnvParams, i: jnp.ndarray) -> jnp.ndarray:
        """Distance of every pool row to pool row `i`."""
        XT = params.pool_XT
        return jnp.sqrt(features.squared_distances(XT, XT[:, i]))

    def _round_pos(self, step: jnp.ndarray) -> jnp.ndarray:
        """Picks made since the last refit: 0 at reset and after every refit."""
        b = self.config.query_batch
        return jnp.where(step >= self.config.budget, 0, step % b).astype(jnp.int32)

    def _round_progress(self, step: jnp.ndarray) -> jnp.ndarray:
        """Picks made since the last refit / query_batch: 0 at reset and after every refit.

        Rounds end after every query_batch-th pick and after the last one (`step_env`),
        so the short last round ends at the budget too.
        """
        return (self._round_pos(step) / self.config.query_batch).astype(jnp.float32)

    def observe(self, state: EnvState, params: EnvParams) -> Observation:
        """The observation of `state` (a pure function of state and params)."""
        task = params.task
        cand_X = task.pool_X[state.candidates]
        probe_X = task.pool_X[state.probe]
        n_pool = jnp.maximum(params.n_pool, 1)
        inputs = features.StepInputs(
            cand_member_probs=self.learner_step.member_proba(
                state.learner, cand_X, task.class_mask
            ),
            cand_X=cand_X,
            cand_dist_labeled=state.dist_labeled[state.candidates],
            cand_density=params.density[state.candidates],
            cand_mask=state.candidate_mask,
            probe_probs=self.learner_step.predict_proba(state.learner, probe_X, task.class_mask),
            probe_mask=task.pool_mask[state.probe],
            labeled_class_counts=state.class_counts,
            class_mask=task.class_mask,
            feature_mask=task.feature_mask,
            budget_used=state.step / self.config.budget,
            labeled_fraction=state.n_labeled / n_pool,
            val_score=state.val_score,
            val_gain_so_far=state.val_score - state.initial_val_score,
            cand_dist_round=state.dist_round[state.candidates],
            round_progress=self._round_progress(state.step),
        )
        return features.observation(inputs, self.features)

    def context(self, state: EnvState, params: EnvParams) -> Context:
        """Raw arrays of the current step for heuristic strategies (see `metaal.strategies`).

        Its `lookahead(action)` is the validation gain of labelling candidate
        `action`: the one-step oracle's look-ahead, using validation labels.
        """
        task = params.task
        cand_X = task.pool_X[state.candidates]
        member = self.learner_step.member_proba(state.learner, cand_X, task.class_mask)

        def refit(learner_params, X, y, weights, class_mask):
            # the env's own warm refit, on any weighted rows
            unlabeled = task.pool_mask & ~state.labeled
            return self._fit(
                self.learner_step, learner_params, X, y, weights, class_mask, task.pool_X, unlabeled
            )

        def lookahead(action):
            # the gain of refitting with this one label, also inside a batch round
            _, _, _, _, _, info = self._step(jax.random.key(0), state, action, params, True)
            return jnp.where(info["valid_action"], info["val_score"] - state.val_score, -jnp.inf)

        return Context(
            cand_X=cand_X,
            cand_probs=member.mean(axis=0),
            cand_member_probs=member,
            cand_index=state.candidates,
            pool_X=task.pool_X,
            pool_mask=task.pool_mask,
            labeled=state.labeled,
            pool_probs=self.learner_step.predict_proba(state.learner, task.pool_X, task.class_mask),
            labels=jnp.where(state.labeled, task.pool_y, -1),
            labeled_idx=state.labeled_idx,
            n_labeled=state.n_labeled,
            dist_labeled=state.dist_labeled,
            density=params.density,
            class_mask=task.class_mask,
            feature_mask=task.feature_mask,
            step=state.step,
            budget=self.config.budget,
            lookahead=lookahead,
            learner_params=state.learner,
            predict_proba=self.learner_step.predict_proba,
            refit=refit,
            round_pos=self._round_pos(state.step),
            query_batch=self.config.query_batch,
        )

    def _class_counts(self, state, update, labeled_y, n_labeled, label, valid) -> jnp.ndarray:
        """Labels per class the policy has seen: each label at once, or a round's at its end."""
        if self.config.query_batch == 1:
            return state.class_counts.at[label].add(valid.astype(jnp.float32))
        seen = (jnp.arange(labeled_y.shape[0]) < n_labeled).astype(jnp.float32)
        counts = jnp.zeros_like(state.class_counts).at[labeled_y].add(seen)
        return jnp.where(update, counts, state.class_counts)

    def _initial_set(self, key: jax.Array, task: TaskBatch) -> jnp.ndarray:
        """The `n_initial` distinct pool rows labelled at reset (see `EnvConfig.init`)."""
        cfg = self.config
        n, k = task.pool_y.shape[0], task.class_mask.shape[0]
        if cfg.init == "centroids":
            return centroid_rows(key, task.pool_X, task.pool_mask, cfg.n_initial)
        u = jax.random.uniform(key, (n,))
        u = jnp.where(task.pool_mask, u, -1.0)
        if cfg.init == "stratified":
            # the randomly first sample of each class gets priority, so the set is
            # stratified as far as n_initial allows
            per_class = jnp.where(task.pool_y[None, :] == jnp.arange(k)[:, None], u[None, :], -1.0)
            first = jnp.argmax(per_class, axis=1)
            has_class = jnp.max(per_class, axis=1) >= 0
            is_first = jnp.zeros(n, bool).at[first].max(has_class)
            u = jnp.where(is_first, u + 2.0, u)
        return jax.lax.top_k(u, cfg.n_initial)[1].astype(jnp.int32)

    # -- reset / step ----------------------------------------------------------------

    def reset_env(self, key: jax.Array, params: EnvParams) -> tuple[Observation, EnvState]:
        """Start an episode: initial labelled set, cold fit, first candidates."""
        cfg = self.config
        task = params.task
        n, k = task.pool_y.shape[0], task.class_mask.shape[0]
        k_init, k_learner, k_probe, k_cand = jax.random.split(key, 4)
        init_idx = self._initial_set(k_init, task)
        labeled_idx = (
            jnp.zeros(cfg.n_initial + cfg.budget, jnp.int32).at[: cfg.n_initial].set(init_idx)
        )
        labeled = jnp.zeros(n, bool).at[init_idx].set(True)
        n_labeled = jnp.int32(cfg.n_initial)
        labeled_X = jnp.zeros((labeled_idx.shape[0], task.pool_X.shape[1]), task.pool_X.dtype)
        labeled_X = labeled_X.at[: cfg.n_initial].set(task.pool_X[init_idx])
        labeled_y = jnp.zeros_like(labeled_idx).at[: cfg.n_initial].set(task.pool_y[init_idx])
        # the unlabelled real rows in index order, so padding the pool moves none of them
        available = task.pool_mask & ~labeled
        slot = jnp.where(available, jnp.cumsum(available) - 1, n)
        unlabeled = (
            jnp.zeros(n, jnp.int32).at[slot].set(jnp.arange(n, dtype=jnp.int32), mode="drop")
        )
        learner = self.learner_init.init(k_learner, task.pool_X.shape[1], k, task.feature_mask)
        learner = self._fit(
            self.learner_init,
            learner,
            labeled_X,
            labeled_y,
            (jnp.arange(labeled_y.shape[0]) < n_labeled).astype(jnp.float32),
            task.class_mask,
            task.pool_X,
            available,
        )
        val = self.accuracy(learner, task.val_X, task.val_y, task.val_mask, task.class_mask)
        dist = jax.vmap(lambda i: self._distance_to(params, i))(init_idx)
        _, probe = jax.lax.top_k(
            jnp.where(task.pool_mask, jax.random.uniform(k_probe, (n,)), -1.0),
            min(cfg.probe_size, n),
        )
        probe = jnp.resize(probe.astype(jnp.int32), (cfg.probe_size,))
        candidates, cand_mask = self._sample_candidates(
            k_cand, labeled, unlabeled, n_labeled, params
        )
        state = EnvState(
            labeled=labeled,
            labeled_idx=labeled_idx,
            labeled_X=labeled_X,
            labeled_y=labeled_y,
            n_labeled=n_labeled,
            unlabeled=unlabeled,
            step=jnp.int32(0),
            learner=learner,
            val_score=val,
            initial_val_score=val,
            dist_labeled=jnp.min(dist, axis=0),
            dist_round=jnp.full(n, jnp.inf, task.pool_X.dtype),
            class_counts=jnp.zeros(k, jnp.float32).at[task.pool_y[init_idx]].add(1.0),
            probe=probe,
            candidates=candidates,
            candidate_mask=cand_mask,
        )
        return self.observe(state, params), state

    def step_env(
        self, key: jax.Array, state: EnvState, action: jax.Array, params: EnvParams
    ) -> tuple[Observation, EnvState, jax.Array, jax.Array, jax.Array, dict[str, jax.Array]]:
        """Label candidate `action`, refit, score; returns the gymnax-1.0 tuple.

        With `query_batch` b > 1 the refit, the score and the reward come once
        a round, after every b-th pick and after the last: in between the
        learner, the validation score and the class counts stay as they were
        (the labels are not back yet), the reward is 0 (`gain`) and only the
        set features move (the pick joins the labelled set's distances and the
        round's: `dist_round`, read by the `round_similarity` and
        `round_progress` candidate features).
        """
        return self._step(key, state, action, params, force_refit=False)

    def _step(self, key, state: EnvState, action, params: EnvParams, force_refit: bool):
        cfg = self.config
        task = params.task
        action = jnp.asarray(action, jnp.int32)
        in_range = (action >= 0) & (action < state.candidates.shape[0])
        action = jnp.clip(action, 0, state.candidates.shape[0] - 1)
        valid = in_range & state.candidate_mask[action]
        idx = state.candidates[action]
        # append the new row (selects over the small arrays, not scatters: faster under vmap)
        slot = valid & (jnp.arange(state.labeled_idx.shape[0]) == state.n_labeled)
        labeled_idx = jnp.where(slot, idx, state.labeled_idx)
        labeled_X = jnp.where(slot[:, None], task.pool_X[idx], state.labeled_X)
        labeled_y = jnp.where(slot, task.pool_y[idx], state.labeled_y)
        n_labeled = state.n_labeled + valid.astype(jnp.int32)
        # remove it from the unlabelled list: the list's last row takes its place
        n_unlabeled = params.n_pool - state.n_labeled
        last = state.unlabeled[jnp.maximum(n_unlabeled - 1, 0)]
        live = jnp.arange(state.unlabeled.shape[0]) < n_unlabeled
        hole = valid & live & (state.unlabeled == idx)
        unlabeled = jnp.where(hole, last, state.unlabeled)
        labeled = state.labeled.at[idx].set(state.labeled[idx] | valid)
        fit_inputs = (labeled_X, labeled_y, n_labeled, task.class_mask, task.pool_X)
        fit_inputs += (task.pool_mask & ~labeled,)
        if cfg.query_batch == 1 or force_refit:
            update = valid
            learner = self._refit(state.learner, *fit_inputs)
            learner = jax.tree.map(
                lambda new, old: jnp.where(update, new, old), learner, state.learner
            )
        else:  # a round ends after every query_batch-th pick and after the last
            done = state.step + 1
            update = (done % cfg.query_batch == 0) | (done >= cfg.budget)
            # vmapped episodes end their rounds together: skip the refit in between
            learner = lazy_cond(update, self._refit, state.learner, state.learner, *fit_inputs)
        # an unchanged learner scores exactly its previous validation accuracy
        val = self.accuracy(learner, task.val_X, task.val_y, task.val_mask, task.class_mask)
        test = self.test_accuracy(learner, task)
        dist_pick = self._distance_to(params, idx)
        new_dist = jnp.minimum(state.dist_labeled, dist_pick)
        if cfg.query_batch == 1:
            dist_round = state.dist_round  # every round is one pick: never any earlier pick
        else:  # the pick joins its round, unless it ends the round: the next one starts empty
            in_round = jnp.where(valid, jnp.minimum(state.dist_round, dist_pick), state.dist_round)
            dist_round = jnp.where(update, jnp.inf, in_round)
        if cfg.reward == "gain":
            reward = val - state.val_score
        else:
            reward = val
        reward = jnp.where(valid, reward, -cfg.invalid_action_penalty).astype(jnp.float32)
        candidates, cand_mask = self._sample_candidates(key, labeled, unlabeled, n_labeled, params)
        new_state = EnvState(
            labeled=labeled,
            labeled_idx=labeled_idx,
            labeled_X=labeled_X,
            labeled_y=labeled_y,
            n_labeled=n_labeled,
            unlabeled=unlabeled,
            step=state.step + 1,
            learner=learner,
            val_score=val,
            initial_val_score=state.initial_val_score,
            dist_labeled=jnp.where(valid, new_dist, state.dist_labeled),
            dist_round=dist_round,
            class_counts=self._class_counts(
                state, update, labeled_y, n_labeled, task.pool_y[idx], valid
            ),
            probe=state.probe,
            candidates=candidates,
            candidate_mask=cand_mask,
        )
        terminated = new_state.step >= cfg.budget
        info = {
            "val_score": val,
            "test_score": test,
            "n_labeled": n_labeled,
            "pool_index": idx,
            "valid_action": valid,
            "refit": update,
        }
        return (
            self.observe(new_state, params),
            new_state,
            reward,
            terminated,
            jnp.array(False),
            info,
        )
