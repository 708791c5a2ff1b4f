"""Env steps per second with batch rounds (`query_batch` b = 10) against one pick per round (b = 1).

Three configurations, each at b = 1 and b = 10 in the same run:

- `reference`: the env benchmark's reference config (`env_throughput`): pool 1000,
  validation 500, test 500, 20 features, 2 classes, 32 candidates, logistic regression;
- `mlp-384`: the same sizes with 384 features (a MiniLM embedding's width) and the
  MLP head (`mlp`: 32 hidden units, MC dropout with 8 draws);
- `self-training-384`: the same with the semi-supervised `self_training:base=mlp`.

Each runs `--envs` episodes of `--budget` steps in one `jax.jit(jax.vmap(...))`
call (a `lax.scan` over the budget, random valid actions that read the whole
observation, the test score kept) and reports the best of `--repeats` timed
runs, reset excluded. With b = 10 the learner is refitted once a round, and
`lazy_cond` skips the refit at the other steps for the whole batch of episodes;
the observation is still computed at every step.

    python -m metaal.experiments.benchmarks.batch_throughput [--envs 256] [--budget 100]

The last line is `speedup_reference=<x> speedup_mlp_384=<x> speedup_self_training_384=<x>`.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from metaal.experiments.benchmarks.env_throughput import CANDIDATES, random_episode, reference_split

CONFIGS = {
    "reference": (20, "logreg"),
    "mlp-384": (384, "mlp"),
    "self-training-384": (384, "self_training:base=mlp"),
}


def wide_split(features: int, seed: int = 0):
    """The reference task's sizes with `features` features (make_classification)."""
    from sklearn.datasets import make_classification

    from metaal.data.task import Task, make_split

    if features == 20:
        return reference_split(seed)
    X, y = make_classification(
        n_samples=3400,
        n_features=features,
        n_informative=min(features, 32),
        n_classes=2,
        random_state=seed,
    )
    task = Task(f"make_classification_{features}", X, y, ("0", "1"))
    return make_split(task, seed, max_pool=1000, max_val=500, max_test=500)


def steps_per_s(features: int, learner: str, query_batch: int, args) -> dict:
    """Best-of-repeats steps per second of `args.envs` vmapped episodes; compile time too."""
    import jax

    from metaal.data.batch import pad_split
    from metaal.envs.core import ActiveLearningEnv, EnvConfig, make_params

    params = make_params(pad_split(wide_split(features)))
    config = EnvConfig(
        budget=args.budget,
        n_initial=5,
        n_candidates=CANDIDATES,
        learner=learner,
        query_batch=query_batch,
    )
    env = ActiveLearningEnv(config)

    episode = random_episode(env, params, args.budget)
    keys = jax.random.split(jax.random.key(0), args.envs)
    step_keys = jax.random.split(jax.random.key(1), args.envs)
    reset = jax.jit(jax.vmap(lambda k: env.reset_env(k, params)))
    run = jax.jit(jax.vmap(episode))
    t0 = time.perf_counter()
    obs, state = jax.block_until_ready(reset(keys))
    jax.block_until_ready(run(step_keys, obs, state))
    compile_s = time.perf_counter() - t0
    times, returns = [], None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        returns, test = jax.block_until_ready(run(step_keys, obs, state))
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {
        "steps_per_s": args.envs * args.budget / best,
        "episode_s": best,
        "compile_s": compile_s,
        "final_test": float(np.mean(np.asarray(test))),
        "mean_return": float(np.mean(np.asarray(returns))),
    }


def main(argv: list[str] | None = None) -> None:
    """Run every configuration at b = 1 and b = 10 and print the figures and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=256, help="parallel episodes")
    parser.add_argument("--budget", type=int, default=100, help="queries per episode")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="which configurations")
    args = parser.parse_args(argv)
    print(
        f"{args.envs} vmapped episodes x budget {args.budget}, {CANDIDATES} candidates, pool "
        f"1000; machine: {os.cpu_count()} CPUs, load average {os.getloadavg()}"
    )
    speedups = {}
    for name in args.configs.split(","):
        features, learner = CONFIGS[name]
        result = {b: steps_per_s(features, learner, b, args) for b in (1, 10)}
        for b, r in result.items():
            print(
                f"{name} (d={features}, {learner}) b={b}: {r['steps_per_s']:,.0f} steps/s, "
                f"episode {r['episode_s']:.2f}s, compile+first run {r['compile_s']:.1f}s, "
                f"mean test accuracy {r['final_test']:.4f}",
                flush=True,
            )
        speedups[name] = result[10]["steps_per_s"] / result[1]["steps_per_s"]
        print(f"{name}: b=10 / b=1 = {speedups[name]:.2f}x", flush=True)
    print(f"load average after the run {os.getloadavg()}")
    print(" ".join(f"speedup_{k.replace('-', '_')}={v:.2f}" for k, v in speedups.items()))


if __name__ == "__main__":
    main()
