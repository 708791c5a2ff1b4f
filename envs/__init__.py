"""Active learning as environments: the functional JAX core and its Gymnasium adapters.

- `envs.core`: `ActiveLearningEnv` with pure, jittable `reset`/`step` over
  `EnvState`/`EnvParams` (vmappable over tasks and seeds);
- `envs.gym`: `ActiveLearningGymEnv` (a `gymnasium.Env`) and
  `ActiveLearningVectorEnv` (`jit(vmap(...))` of the core), registered as
  `"metaal/ActiveLearning-v0"`:

    env = gymnasium.make("metaal/ActiveLearning-v0", task="keel/wine", budget=20)
    envs = gymnasium.make_vec("metaal/ActiveLearning-v0", num_envs=8, task="keel/wine",
                              vectorization_mode="vector_entry_point")
"""

from gymnasium.envs.registration import register, registry

from metaal.envs.core import (
    REWARDS,
    ActiveLearningEnv,
    EnvConfig,
    EnvParams,
    EnvState,
    Observation,
    check_fits,
    make_params,
)

ENV_ID = "metaal/ActiveLearning-v0"

if ENV_ID not in registry:
    register(
        id=ENV_ID,
        entry_point="metaal.envs.gym:ActiveLearningGymEnv",
        vector_entry_point="metaal.envs.gym:ActiveLearningVectorEnv",
    )

__all__ = [
    "ENV_ID",
    "REWARDS",
    "ActiveLearningEnv",
    "EnvConfig",
    "EnvParams",
    "EnvState",
    "Observation",
    "check_fits",
    "make_params",
]
