"""A probe environment whose optimal policy is known, with the AL env's observation structure.

Every step offers `n_candidates` candidates with uniform random features,
except feature 0, a random permutation of evenly spaced values in [0, 1]
(so the best candidate is clearly best), and a random action mask (at
least one valid). The reward of an action is
feature 0 of the chosen candidate (a masked one gives -1), and the next
observation does not depend on the action: a contextual bandit whose best
action is the valid candidate with the largest feature 0. Episodes last
`budget` steps, as in the AL env (rejax's probe environments, tests/environments.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from metaal.envs.core import Observation


@struct.dataclass
class ProbeState:
    """The current observation and the step count."""

    obs: Observation
    step: jnp.ndarray


@struct.dataclass
class ProbeParams:
    """Per-task params (only a reward offset, so task sampling has something to gather)."""

    offset: jnp.ndarray


class ProbeEnv:
    """The probe environment (see the module docstring)."""

    def __init__(
        self, n_candidates: int = 8, n_features: int = 22, state_size: int = 6, budget: int = 4
    ) -> None:
        self.n_candidates = n_candidates
        self.n_features = n_features
        self.state_size = state_size
        self.budget = budget

    def observe(self, key: jax.Array) -> Observation:
        """A random observation."""
        k_cand, k_perm, k_mask, k_state = jax.random.split(key, 4)
        cand = jax.random.uniform(k_cand, (self.n_candidates, self.n_features))
        levels = jnp.linspace(0.0, 1.0, self.n_candidates)
        cand = cand.at[:, 0].set(jax.random.permutation(k_perm, levels))
        u = jax.random.uniform(k_mask, (self.n_candidates,))
        mask = (u > 0.3) | (u == jnp.max(u))
        cand = jnp.where(mask[:, None], cand, 0.0)
        state = jax.random.uniform(k_state, (self.state_size,))
        return Observation(state=state, candidates=cand, action_mask=mask)

    @staticmethod
    def best_action(obs: Observation) -> jnp.ndarray:
        """The optimal action: the valid candidate with the largest feature 0."""
        return jnp.argmax(jnp.where(obs.action_mask, obs.candidates[..., 0], -1.0), axis=-1)

    def reset_env(self, key: jax.Array, params: ProbeParams) -> tuple[Observation, ProbeState]:
        """Start an episode."""
        obs = self.observe(key)
        return obs, ProbeState(obs=obs, step=jnp.int32(0))

    def step_env(self, key: jax.Array, state: ProbeState, action: jax.Array, params: ProbeParams):
        """Reward feature 0 of the chosen candidate; the next observation is fresh noise."""
        valid = state.obs.action_mask[action]
        reward = jnp.where(valid, state.obs.candidates[action, 0] + params.offset, -1.0)
        obs = self.observe(key)
        step = state.step + 1
        done = step >= self.budget
        info = {"val_score": reward}
        return obs, ProbeState(obs=obs, step=step), reward, done, jnp.array(False), info


def probe_tasks(n: int = 3):
    """`TrainingTasks` of `n` probe tasks (zero offsets, unit reward scales)."""
    from metaal.agents.rollout import TrainingTasks

    return TrainingTasks(
        params=ProbeParams(offset=jnp.zeros(n, jnp.float32)),
        reward_scale=jnp.ones(n, jnp.float32),
    )
