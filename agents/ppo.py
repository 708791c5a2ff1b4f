"""PPO for the candidate-scoring policy (the purejaxrl recipe), readable top to bottom.

The policy is a categorical distribution over the candidates whose logits are
the `CandidateScorer`'s scores over `temperature` (masked candidates at -1e9, never sampled);
the critic is the scorer's value head. One update collects `num_steps` steps
from each of `num_envs` env slots (a random task of the suite at every
reset), computes GAE advantages, and runs `update_epochs` epochs of
clipped-surrogate minibatch steps with an entropy bonus. Per-update metrics:
the `losses/*` of the minibatch steps, `losses/explained_variance` of the
rollout's values and `charts/learning_rate` (Adam's step size).

With `proposers` the policy is a strategy selector, as in imitation
(`metaal.strategies.selector`): at every step the proposers' picks are its
whole action set, each with the selector columns, and only they are scored.
With `lookahead` S it is a look-ahead policy, as in imitation
(`metaal.strategies.lookahead`): margin's S most uncertain candidates are its
action set, each with the look-ahead columns.
`init_policy` starts the run from a saved policy's weights (e.g. a DAgger
selector or look-ahead policy), so RL fine-tunes an imitation start with
credit over the whole episode (the issue's non-myopic lever); the value head
starts where that file left it (untrained, for an imitation policy), and the
first `value_warmup` updates train the value head alone, so the policy's
first steps follow a critic that has seen its returns.

Bootstrapping stops at `terminated` only: the env never truncates (the
budget is part of the state), so the value after a terminal step is zero.

    config = PPOConfig(env=EnvConfig(budget=50), total_steps=200_000)
    runner, metrics = make_train(config)(jax.random.key(0), tasks)

`tasks` is a `agents.rollout.TrainingTasks`; it is an argument, not a
constant, so one compiled train function serves any suite of the same
shapes. Float fields of `PPOConfig` are pytree leaves (a sweep is a `vmap`
over configs); the rest set shapes or code paths and are static.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training.train_state import TrainState

from metaal.agents import rollout
from metaal.envs.core import ActiveLearningEnv, EnvConfig, Observation
from metaal.policy_net import (
    SCORER,
    VALUE_LAYERS,
    CandidateScorer,
    lookahead_of,
    lookahead_stats_of,
    network,
    proposers_of,
    selector_state_of,
    trained_features,
)
from metaal.strategies.lookahead import STATS, lookahead_picks
from metaal.strategies.selector import (
    STEP_COLUMNS,
    check_proposers,
    check_step_columns,
    selector_picks,
)


@struct.dataclass
class PPOConfig:
    """PPO settings: static fields set shapes and code paths, float fields are sweepable leaves."""

    env: EnvConfig = struct.field(pytree_node=False, default=EnvConfig())
    """The training env."""
    num_envs: int = struct.field(pytree_node=False, default=64)
    """Env slots stepped in parallel."""
    num_steps: int = struct.field(pytree_node=False, default=16)
    """Steps per slot per update (the rollout length)."""
    total_steps: int = struct.field(pytree_node=False, default=1_000_000)
    """Env steps of the whole run, all slots together."""
    update_epochs: int = struct.field(pytree_node=False, default=4)
    """Passes over each rollout."""
    num_minibatches: int = struct.field(pytree_node=False, default=4)
    """Minibatches per epoch."""
    hidden: tuple[int, ...] = struct.field(pytree_node=False, default=(32, 32))
    """Widths of the candidate layers of the scorer."""
    state_hidden: int = struct.field(pytree_node=False, default=32)
    """Width of the state embedding and of the value head."""
    reward_norm: str = struct.field(pytree_node=False, default="none")
    """`none` or `task` (divide rewards by a per-task scale, see `agents.rollout`)."""
    anneal_lr: bool = struct.field(pytree_node=False, default=True)
    """Decay the learning rate linearly to zero over the run."""
    proposers: tuple[str, ...] = struct.field(pytree_node=False, default=())
    """If set, a strategy selector: the policy chooses among these heuristics' picks of each
    step (`metaal.strategies.selector`); needs the whole pool as candidates (n_candidates
    none), as at transfer time."""
    selector_state: tuple[str, ...] = struct.field(pytree_node=False, default=STEP_COLUMNS)
    """A selector's step columns, the same for every candidate of a step, by name
    (`metaal.strategies.selector.STEP_FEATURES`: distinct_picks, balance_gap, fit_error,
    label_disagreement)."""
    lookahead: int = struct.field(pytree_node=False, default=0)
    """If > 0, a look-ahead policy: it scores only margin's `lookahead` most uncertain
    candidates, each with the look-ahead columns (`metaal.strategies.lookahead`); needs the
    whole pool as candidates (n_candidates none), as at transfer time. 0: not one."""
    init_policy: str = struct.field(pytree_node=False, default="")
    """A saved policy file whose scorer weights start the run (same widths, columns,
    proposers and look-ahead shortlist); empty: a fresh network."""
    value_warmup: int = struct.field(pytree_node=False, default=0)
    """Updates at the start of the run that train the value head alone (`value_hidden`,
    `value`): the rest of the network, and so the policy, stays as it started."""
    lr: float = 3e-4
    """Adam learning rate."""
    gamma: float = 0.99
    """Discount."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip_eps: float = 0.2
    """Clipping of the probability ratio and of the value change."""
    ent_coef: float = 0.01
    """Entropy bonus weight."""
    temperature: float = 1.0
    """The policy's logits are its scores / temperature. Below 1 it samples closer to the
    greedy choice that is deployed, e.g. for an imitation start whose scores are flat."""
    vf_coef: float = 0.5
    """Value loss weight."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip."""

    @property
    def steps_per_update(self) -> int:
        """Env steps per update, all slots together."""
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        """Updates in the whole run (at least one)."""
        return max(1, self.total_steps // self.steps_per_update)

    def with_updates(self, updates: int) -> PPOConfig:
        """The same config running `updates` updates."""
        return self.replace(total_steps=updates * self.steps_per_update)

    def __post_init__(self) -> None:
        if self.proposers:  # a JSON list hashes as a tuple
            object.__setattr__(self, "proposers", tuple(self.proposers))
        object.__setattr__(self, "selector_state", tuple(self.selector_state))

    def check(self) -> None:
        """Raise a clear error for settings that cannot work (reads `init_policy`'s file)."""
        if self.proposers:
            check_proposers(self.proposers)
            check_step_columns(self.selector_state)
        if self.lookahead < 0 or (self.lookahead and self.proposers):
            raise ValueError(
                f"lookahead {self.lookahead} is margin's shortlist of a look-ahead policy: "
                "a size >= 1 without proposers, or 0 for none"
            )
        # a selector's proposals and a look-ahead policy's shortlist come from the whole pool
        restricted = self.proposers or self.lookahead
        if restricted and self.env.n_candidates is not None:
            what = f"proposers {list(self.proposers)}" if self.proposers else "lookahead"
            raise ValueError(
                f"{what} {'' if self.proposers else self.lookahead}: the policy chooses from the "
                f"whole pool, as at transfer time; set n_candidates none (got "
                f"{self.env.n_candidates})"
            )
        # a sweep's configs carry traced leaves: only a plain number is checked here
        if isinstance(self.temperature, int | float) and not self.temperature > 0:
            raise ValueError(
                f"temperature must be > 0 (logits are scores / temperature), got {self.temperature}"
            )
        if self.value_warmup < 0:
            raise ValueError(
                f"value_warmup must be a number of updates >= 0, got {self.value_warmup}"
            )
        if self.init_policy:
            start_params(self)
        if self.steps_per_update % self.num_minibatches:
            raise ValueError(
                f"num_envs * num_steps = {self.steps_per_update} must be divisible by "
                f"num_minibatches = {self.num_minibatches}"
            )
        if self.reward_norm not in rollout.REWARD_NORMS:
            raise ValueError(
                f"unknown reward_norm {self.reward_norm!r}; choose one of {rollout.REWARD_NORMS}"
            )


@struct.dataclass
class Transition:
    """One env step of every slot, as stored in the rollout."""

    obs: Observation
    action: jnp.ndarray
    log_prob: jnp.ndarray
    value: jnp.ndarray
    reward: jnp.ndarray
    done: jnp.ndarray


@struct.dataclass
class PPORunner:
    """Everything a PPO run carries between updates (and writes to a checkpoint)."""

    train_state: TrainState
    envs: rollout.Envs
    key: jax.Array
    update: jnp.ndarray  # updates done


def compute_gae(
    reward: jnp.ndarray,
    value: jnp.ndarray,
    done: jnp.ndarray,
    last_value: jnp.ndarray,
    gamma: float,
    gae_lambda: float,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """GAE advantages and value targets over a (T, N) rollout; `done` cuts at terminal steps."""

    def backward(carry, t):
        gae, next_value = carry
        r, v, d = t
        not_done = 1.0 - d.astype(jnp.float32)
        delta = r + gamma * next_value * not_done - v
        gae = delta + gamma * gae_lambda * not_done * gae
        return (gae, v), gae

    _, advantages = jax.lax.scan(
        backward, (jnp.zeros_like(last_value), last_value), (reward, value, done), reverse=True
    )
    return advantages, advantages + value


def learning_rate(config: PPOConfig, count: jnp.ndarray) -> jnp.ndarray:
    """Adam's step size after `count` minibatch steps: `lr`, decayed linearly per update.

    With `anneal_lr` the rate is `lr * (1 - updates done / num_updates)`,
    constant within an update (CleanRL's schedule); without it, `lr`.
    """
    if not config.anneal_lr:
        return jnp.asarray(config.lr, jnp.float32)
    done = count // (config.num_minibatches * config.update_epochs)
    return config.lr * (1.0 - done / config.num_updates)


def optimiser(config: PPOConfig) -> optax.GradientTransformation:
    """Gradient-norm clipping then Adam at `learning_rate`.

    Built again by every update from its config, so that a sweep's vmapped
    configs (traced step sizes) reach the optimiser; the opt state's shape
    does not depend on them.
    """
    return optax.chain(
        optax.clip_by_global_norm(config.max_grad_norm),
        optax.adam(
            (lambda count: learning_rate(config, count)) if config.anneal_lr else config.lr,
            eps=1e-5,
        ),
    )


def explained_variance(values: jnp.ndarray, returns: jnp.ndarray) -> jnp.ndarray:
    """`1 - Var[returns - values] / Var[returns]` over all entries (CleanRL's definition).

    1: the critic predicts the returns exactly; 0: no better than their mean;
    negative: worse. NaN when the returns do not vary.
    """
    var = jnp.var(returns)
    return jnp.where(var == 0, jnp.nan, 1.0 - jnp.var(returns - values) / var)


def _apply(net: CandidateScorer, params: Any, obs: Observation):
    return net.apply(params, obs.state, obs.candidates, obs.action_mask)


def start_params(config: PPOConfig) -> Any:
    """The scorer weights of `config.init_policy`, after checking that this run can use them.

    The file must hold one `CandidateScorer` with the config's widths, trained on the
    training env's candidate columns and the config's proposers; a ValueError names the
    file and the mismatch otherwise.
    """
    from metaal.strategies.learned import LearnedStrategy  # the registry imports agents' users

    path = config.init_policy
    try:
        policy = LearnedStrategy.load(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"init_policy {path!r} cannot be read: {err}") from err
    saved = policy.config
    want = {"hidden": list(config.hidden), "state_hidden": int(config.state_hidden)}
    problems = []
    if saved.get("scorer") != SCORER:
        problems.append(f"its scorer is {saved.get('scorer')!r}, not one network ({SCORER})")
    elif saved.get("network") != want:
        problems.append(f"its network is {saved.get('network')}, this run's {want}")
    if saved.get("probe_size") != config.env.probe_size:
        problems.append(
            f"its probe size is {saved.get('probe_size')}, this env's {config.env.probe_size}"
        )
    features = tuple(ActiveLearningEnv(config.env).features)
    if trained_features(saved) != features:
        problems.append("it was trained on other candidate columns than this env computes")
    if proposers_of(saved) != tuple(config.proposers):
        problems.append(
            f"its proposers are {list(proposers_of(saved))}, this run's {list(config.proposers)}"
        )
    if lookahead_of(saved) != config.lookahead:
        problems.append(
            f"its look-ahead shortlist is {lookahead_of(saved)}, this run's {config.lookahead}"
        )
    if lookahead_stats_of(saved) != STATS:
        problems.append(
            f"it reads the look-ahead statistics {list(lookahead_stats_of(saved))}, and PPO "
            f"computes {list(STATS)} only"
        )
    if proposers_of(saved) and selector_state_of(saved) != tuple(config.selector_state):
        problems.append(
            f"its selector step columns are {list(selector_state_of(saved))}, this run's "
            f"{list(config.selector_state)}"
        )
    if problems:
        raise ValueError(
            f"init_policy {path!r} cannot start this run: {'; '.join(problems)}. Train with the "
            "policy's settings (--hidden, --state-hidden, --proposers, --selector-state, "
            "--lookahead, --probe-size, the same env) or drop --init-policy"
        )
    return policy.params


def value_only(grads: Any, warming: jnp.ndarray) -> Any:
    """`grads` with every entry outside `VALUE_LAYERS` zeroed while `warming` is true."""

    def keep(path, g):
        if any(getattr(k, "key", None) in VALUE_LAYERS for k in path):
            return g
        return jnp.where(warming, jnp.zeros_like(g), g)

    return jax.tree_util.tree_map_with_path(keep, grads)


def observe(
    config: PPOConfig, env: Any, key: jax.Array, envs: rollout.Envs
) -> tuple[Observation, jnp.ndarray | None]:
    """What the policy scores in every slot, and the pool candidate of each of its rows.

    Without proposers or look-ahead that is the env's observation (rows None: row =
    candidate). A selector sees its proposers' picks only (`selector_picks`): (N, P) rows;
    a look-ahead policy margin's shortlist with its columns (`lookahead_picks`): (N, S) rows.
    """
    if not (config.proposers or config.lookahead):
        return envs.obs, None
    if config.lookahead:  # the context's refit closes over its slot: built inside the vmap
        size = config.lookahead

        def shortlist(obs, state, params):
            return lookahead_picks(obs, env.context(state, params), size)

        return jax.vmap(shortlist)(envs.obs, envs.state, envs.params)
    ctx = jax.vmap(env.context)(envs.state, envs.params)
    keys = jax.random.split(key, envs.task.shape[0])
    names, state = config.proposers, config.selector_state
    return jax.vmap(lambda k, o, c: selector_picks(names, k, o, c, state))(keys, envs.obs, ctx)


def env_action(rows: jnp.ndarray | None, choice: jnp.ndarray) -> jnp.ndarray:
    """The env action of each slot's chosen row (`observe`'s rows; the row itself without)."""
    if rows is None:
        return choice
    return jnp.take_along_axis(rows, choice[:, None], axis=-1)[:, 0]


def init(
    config: PPOConfig, key: jax.Array, tasks: rollout.TrainingTasks, env: Any = None
) -> PPORunner:
    """A fresh run: network, optimiser, env slots, RNG."""
    config.check()
    env = env or ActiveLearningEnv(config.env)
    net = network(config.hidden, config.state_hidden)
    k_net, k_env, key = jax.random.split(key, 3)
    envs = rollout.reset(env, k_env, tasks, config.num_envs)
    seen, _ = observe(config, env, jax.random.fold_in(k_env, 1), envs)
    first = jax.tree.map(lambda x: x[0], seen)
    params = net.init(k_net, first.state, first.candidates, first.action_mask)
    if config.init_policy:
        start = start_params(config)
        if jax.tree.structure(start) != jax.tree.structure(params) or any(
            a.shape != b.shape
            for a, b in zip(jax.tree.leaves(start), jax.tree.leaves(params), strict=True)
        ):
            raise ValueError(
                f"init_policy {config.init_policy!r}: its weights do not have this run's shapes"
            )
        params = jax.tree.map(lambda a, b: jnp.asarray(a, b.dtype), start, params)

    train_state = TrainState.create(apply_fn=net.apply, params=params, tx=optimiser(config))
    # A typed step counter (not a weakly typed 0), so a restored runner has the same types.
    train_state = train_state.replace(step=jnp.int32(0))
    return PPORunner(train_state=train_state, envs=envs, key=key, update=jnp.int32(0))


def update(
    config: PPOConfig, runner: PPORunner, tasks: rollout.TrainingTasks, env: Any = None
) -> tuple[PPORunner, dict[str, jnp.ndarray]]:
    """One PPO update: a rollout of `num_steps` vector steps, GAE, then the epochs of SGD."""
    env = env or ActiveLearningEnv(config.env)
    net = network(config.hidden, config.state_hidden)

    def env_step(carry, _):
        train_state, envs, key = carry
        key, k_act, k_env = jax.random.split(key, 3)
        obs, rows = observe(config, env, jax.random.fold_in(k_act, 1), envs)
        scores, value = _apply(net, train_state.params, obs)
        logits = scores / config.temperature
        action = jax.random.categorical(k_act, logits)
        log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], axis=-1)[:, 0]
        chosen = env_action(rows, action)
        envs, out = rollout.step(env, k_env, envs, chosen, tasks, config.reward_norm)
        transition = Transition(obs, action, log_prob, value, out.reward, out.done)
        return (train_state, envs, key), (transition, rollout.episode_stats(out))

    # this config's optimiser (a sweep's configs are traced); the runner keeps its own
    train_state = runner.train_state.replace(tx=optimiser(config))
    (train_state, envs, key), (traj, stats) = jax.lax.scan(
        env_step, (train_state, runner.envs, runner.key), None, config.num_steps
    )
    # A selector's bootstrap observation draws its proposals afresh (the next update's first
    # step draws its own): the value is trained on drawn proposals, so an independent draw
    # estimates the same expectation, and the key streams of every PPO run stay as they were.
    last_obs, _ = observe(config, env, jax.random.fold_in(key, 1), envs)
    _, last_value = _apply(net, train_state.params, last_obs)
    advantages, targets = compute_gae(
        traj.reward, traj.value, traj.done, last_value, config.gamma, config.gae_lambda
    )

    def loss_fn(params, batch: Transition, adv, target):
        scores, value = _apply(net, params, batch.obs)
        log_probs = jax.nn.log_softmax(scores / config.temperature)
        log_prob = jnp.take_along_axis(log_probs, batch.action[:, None], axis=-1)[:, 0]
        value_clipped = batch.value + jnp.clip(
            value - batch.value, -config.clip_eps, config.clip_eps
        )
        value_loss = 0.5 * jnp.mean(
            jnp.maximum((value - target) ** 2, (value_clipped - target) ** 2)
        )
        log_ratio = log_prob - batch.log_prob
        ratio = jnp.exp(log_ratio)
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        policy_loss = -jnp.mean(
            jnp.minimum(
                ratio * adv, jnp.clip(ratio, 1 - config.clip_eps, 1 + config.clip_eps) * adv
            )
        )
        entropy = -jnp.mean(jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1))
        total = policy_loss + config.vf_coef * value_loss - config.ent_coef * entropy
        aux = {
            "losses/policy_loss": policy_loss,
            "losses/value_loss": value_loss,
            "losses/entropy": entropy,
            "losses/approx_kl": jnp.mean((ratio - 1) - log_ratio),
            "losses/clip_frac": jnp.mean(jnp.abs(ratio - 1) > config.clip_eps),
        }
        return total, aux

    batch_size = config.steps_per_update

    def epoch(carry, _):
        train_state, key = carry
        key, k_perm = jax.random.split(key)
        order = jax.random.permutation(k_perm, batch_size)

        def shuffle(x):
            x = x.reshape((batch_size,) + x.shape[2:])[order]
            return x.reshape((config.num_minibatches, -1) + x.shape[1:])

        minibatches = jax.tree.map(shuffle, (traj, advantages, targets))

        def minibatch(train_state, mb):
            batch, adv, target = mb
            grads, aux = jax.grad(loss_fn, has_aux=True)(train_state.params, batch, adv, target)
            if config.value_warmup:  # the policy's layers stand still until the critic is warm
                grads = value_only(grads, runner.update < config.value_warmup)
            return train_state.apply_gradients(grads=grads), aux

        train_state, aux = jax.lax.scan(minibatch, train_state, minibatches)
        return (train_state, key), aux

    (train_state, key), aux = jax.lax.scan(epoch, (train_state, key), None, config.update_epochs)
    metrics = jax.tree.map(jnp.mean, aux)
    # the step size of this update's minibatch steps, and how well the rollout's values
    # predicted its returns (the GAE targets)
    metrics["charts/learning_rate"] = learning_rate(config, runner.train_state.step)
    metrics["losses/explained_variance"] = explained_variance(traj.value, targets)
    metrics.update(jax.tree.map(jnp.sum, stats))
    train_state = train_state.replace(tx=runner.train_state.tx)
    runner = PPORunner(train_state=train_state, envs=envs, key=key, update=runner.update + 1)
    return runner, metrics


def policy_params(runner: PPORunner) -> Any:
    """The scorer parameters to deploy."""
    return runner.train_state.params


def make_train(
    config: PPOConfig, env: Any = None
) -> Callable[[jax.Array, rollout.TrainingTasks], tuple[PPORunner, dict[str, jnp.ndarray]]]:
    """Jitted `train(key, tasks) -> (runner, metrics per update)` for the whole run."""
    return rollout.make_train(init, update, config, env)
