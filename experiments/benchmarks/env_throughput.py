"""Env steps per second of the jitted, vmapped JAX env against a numpy + scikit-learn env.

Reference config: make_classification data, pool 1000, validation 500,
test 500, 20 features, 2 classes, 32 candidates per step, budget 100,
logistic regression (warm refit after every label, validation and test
accuracy after every step, full observation) -- in both envs.

JAX env: `--envs` parallel episodes (default 1024) in one
`jax.jit(jax.vmap(...))` call; the whole episode is a `lax.scan` over the
budget with uniformly random valid actions computed from the whole
observation and with the test score kept, so XLA cannot drop any of the
step's work as dead code. `env_steps_per_s` counts steps
only (the reset runs in its own call and is timed separately; the figure
with the reset included is printed too). Each configuration runs in a fresh
subprocess so XLA flags apply and peak memory is its own: once on one XLA
CPU device, once sharded over two host devices
(`--xla_force_host_platform_device_count=2`, envs split along an `env`
mesh axis with `jax.shard_map`).

Memory: the peak RSS (`ru_maxrss`) of the 1-device worker minus that of a
worker that imported jax and the env and built the same task data but ran
nothing; plus XLA's own compiled memory analysis (arguments + outputs +
temporaries) of the episode call.

Refit: the learner's warm refit alone (the env's `learner_step.fit`, 5 steps,
on the labelled rows padded to n_initial + budget, half of them labelled),
vmapped over the same envs and timed the same way: CPU-us per refit beside
CPU-us per env step. `--compare-learner` (default `logreg:binary=false`, the
two-column fit the binary one replaced) runs the 1-device worker once more
with that learner, so the before/after ratio comes from the same run.

Reference env (`reference_env.ReferenceEnv`): one episode at a time with
scikit-learn's `LogisticRegression` (lbfgs, warm start) refitted after each
label, BLAS limited to one thread (faster than two on these tiny fits);
reset excluded.

    python -m metaal.experiments.benchmarks.env_throughput [--envs 1024] [--budget 100]

The last line is `env_steps_per_s=<float> reference_steps_per_s=<float> ratio=<float>`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

POOL, VAL, TEST, FEATURES, CLASSES, CANDIDATES = 1000, 500, 500, 20, 2, 32


def reference_split(seed: int = 0):
    """The reference task: make_classification, split into pool 1000 / val 500 / test 500."""
    from sklearn.datasets import make_classification

    from metaal.data.task import Task, make_split

    # make_split takes 15% of the rows each for val and test (capped at 500): 3400 rows
    # give val 500 and test 500, and the pool is capped at 1000 of the remaining 2400.
    X, y = make_classification(
        n_samples=3400,
        n_features=FEATURES,
        n_informative=10,
        n_classes=CLASSES,
        random_state=seed,
    )
    task = Task("make_classification", X, y, tuple(str(c) for c in range(CLASSES)))
    split = make_split(task, seed, max_pool=POOL, max_val=VAL, max_test=TEST)
    sizes = (len(split.pool_y), len(split.val_y), len(split.test_y), split.n_features)
    assert sizes == (POOL, VAL, TEST, FEATURES), sizes
    return split


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


# --- JAX worker (runs in a subprocess) ---------------------------------------------------


def random_episode(env, params, budget: int):
    """`episode(key, obs, state) -> (return, mean test score)`: `budget` random valid steps.

    The action is random but reads the whole observation, so XLA cannot drop the
    feature computation as dead code (a policy would read it); the test score is
    kept, as the reference env computes it.
    """
    import jax
    import jax.numpy as jnp

    def episode(key, obs, state):
        def body(carry, k):
            obs, state = carry
            k_action, k_step = jax.random.split(k)
            score = jax.random.uniform(k_action, obs.action_mask.shape)
            score += 1e-6 * (obs.candidates.sum(axis=1) + obs.state.sum())
            action = jnp.argmax(jnp.where(obs.action_mask, score, -1.0))
            obs, state, reward, _, _, info = env.step_env(k_step, state, action, params)
            return (obs, state), (reward, info["test_score"])

        _, (rewards, test) = jax.lax.scan(body, (obs, state), jax.random.split(key, budget))
        return rewards.sum(), test.mean()

    return episode


def jax_worker(
    n_envs: int, budget: int, devices: int, repeats: int, run: bool, learner: str = "logreg"
) -> dict:
    """Time the vmapped env (or only build its inputs when `run` is False); return a result dict."""
    import jax
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from metaal.data.batch import pad_split
    from metaal.envs.core import ActiveLearningEnv, EnvConfig, make_params

    params = make_params(pad_split(reference_split()))
    jax.block_until_ready(params)
    result = {"devices": len(jax.devices()), "n_envs": n_envs}
    if not run:
        result["peak_rss_mib"] = _peak_rss_mib()
        return result
    env = ActiveLearningEnv(
        EnvConfig(budget=budget, n_initial=5, n_candidates=CANDIDATES, learner=learner)
    )

    def reset(key):
        return env.reset_env(key, params)

    episode = random_episode(env, params, budget)
    keys = jax.random.split(jax.random.key(0), n_envs)
    step_keys = jax.random.split(jax.random.key(1), n_envs)
    reset_fn, episode_fn = jax.vmap(reset), jax.vmap(episode)
    if devices > 1:
        # Each device runs its slice of the envs: shard_map over an `env` mesh axis (no
        # collectives). check_vma=False: the learner's replicated init carry becomes
        # env-varying inside its scans, which the checker would reject.
        mesh = Mesh(np.array(jax.devices()[:devices]), ("env",))
        keys, step_keys = jax.device_put((keys, step_keys), NamedSharding(mesh, P("env")))
        reset_fn = jax.shard_map(
            reset_fn, mesh=mesh, in_specs=P("env"), out_specs=P("env"), check_vma=False
        )
        episode_fn = jax.shard_map(
            episode_fn, mesh=mesh, in_specs=P("env"), out_specs=P("env"), check_vma=False
        )
    reset_fn, episode_fn = jax.jit(reset_fn), jax.jit(episode_fn)
    t0 = time.perf_counter()
    reset_c = reset_fn.lower(keys).compile()
    obs, state = reset_c(keys)
    episode_c = episode_fn.lower(step_keys, obs, state).compile()
    result["compile_s"] = time.perf_counter() - t0
    jax.block_until_ready(episode_c(step_keys, obs, state))  # warm-up
    reset_times, episode_times, episode_cpu = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        obs, state = jax.block_until_ready(reset_c(keys))
        t1, c1 = time.perf_counter(), time.process_time()
        returns, test_scores = jax.block_until_ready(episode_c(step_keys, obs, state))
        t2, c2 = time.perf_counter(), time.process_time()
        reset_times.append(t1 - t0)
        episode_times.append(t2 - t1)
        episode_cpu.append(c2 - c1)
    steps = n_envs * budget
    best = int(np.argmin(episode_times))
    refit_us = _refit_cpu_us(env, params, state, repeats) if devices == 1 else float("nan")
    mem = episode_c.memory_analysis()
    result.update(
        steps_per_s=steps / episode_times[best],
        steps_per_s_with_reset=steps / (episode_times[best] + reset_times[best]),
        episode_s=episode_times[best],
        cores_busy=episode_cpu[best] / episode_times[best],
        cpu_us_per_step=1e6 * episode_cpu[best] / steps,
        reset_s=reset_times[best],
        refit_cpu_us=refit_us,
        mean_return=float(np.mean(np.asarray(returns))),
        mean_test_score=float(np.mean(np.asarray(test_scores))),
        xla_argument_mib=mem.argument_size_in_bytes / 2**20,
        xla_output_mib=mem.output_size_in_bytes / 2**20,
        xla_temp_mib=mem.temp_size_in_bytes / 2**20,
        peak_rss_mib=_peak_rss_mib(),
    )
    return result


def _refit_cpu_us(env, params, state, repeats: int) -> float:
    """CPU-us per warm refit: the env's refit of every env at once, half the rows labelled."""
    import jax
    import jax.numpy as jnp

    rows = state.labeled_y.shape[-1]
    weights = (jnp.arange(rows) < rows // 2).astype(jnp.float32)
    mask = params.task.class_mask

    def refit(learner, X, y):
        return env.learner_step.fit(learner, X, y, weights, mask)

    fit = jax.jit(jax.vmap(refit)).lower(state.learner, state.labeled_X, state.labeled_y)
    fit = fit.compile()
    jax.block_until_ready(fit(state.learner, state.labeled_X, state.labeled_y))
    cpu = []
    for _ in range(repeats):
        c0 = time.process_time()
        jax.block_until_ready(fit(state.learner, state.labeled_X, state.labeled_y))
        cpu.append(time.process_time() - c0)
    return 1e6 * min(cpu) / state.step.shape[0]  # per env: the call refits every env


def run_worker(
    args: argparse.Namespace, devices: int, run: bool = True, learner: str = "logreg"
) -> dict:
    """Run `jax_worker` in a fresh process with `devices` host devices; its result dict."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    cmd = [
        sys.executable,
        "-m",
        "metaal.experiments.benchmarks.env_throughput",
        "--worker",
        json.dumps({"devices": devices, "run": run, "learner": learner}),
        "--envs",
        str(args.envs),
        "--budget",
        str(args.budget),
        "--repeats",
        str(args.repeats),
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"worker {cmd} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- reference env (runs in this process) -------------------------------------------------


def reference_steps_per_s(budget: int, episodes: int) -> tuple[float, float]:
    """Steps per second of the numpy + scikit-learn env (reset excluded), and its mean return."""
    from threadpoolctl import threadpool_limits

    from metaal.experiments.benchmarks.reference_env import ReferenceEnv

    env = ReferenceEnv(reference_split(), budget=budget, n_candidates=CANDIDATES)
    rng = np.random.default_rng(0)
    elapsed, steps, returns = 0.0, 0, []
    with threadpool_limits(1):
        for episode in range(episodes):
            env.reset(seed=episode)
            done, total = False, 0.0
            t0 = time.perf_counter()
            while not done:
                _, reward, done, _ = env.step(int(rng.integers(CANDIDATES)))
                total += reward
                steps += 1
            elapsed += time.perf_counter() - t0
            returns.append(total)
    return steps / elapsed, float(np.mean(returns))


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its report (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=1024, help="parallel JAX envs")
    parser.add_argument("--budget", type=int, default=100, help="queries per episode")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per JAX config")
    parser.add_argument("--reference-episodes", type=int, default=3)
    parser.add_argument(
        "--compare-learner",
        default="logreg:binary=false",
        help="learner of one more 1-device run, for a before/after ratio ('' skips it)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        result = jax_worker(
            args.envs, args.budget, spec["devices"], args.repeats, spec["run"], spec["learner"]
        )
        print(json.dumps(result))
        return

    print(
        f"reference config: pool {POOL}, val {VAL}, test {TEST}, {FEATURES} features, "
        f"{CLASSES} classes, C={CANDIDATES}, budget {args.budget}, logreg; "
        f"{args.envs} parallel JAX envs, random valid actions, episode in one lax.scan"
    )
    print(f"machine: {os.cpu_count()} CPUs, load average before the run {os.getloadavg()}")
    baseline = run_worker(args, devices=1, run=False)
    results = {}
    for devices in (1, 2):
        r = run_worker(args, devices=devices)
        results[devices] = r
        print(
            f"jax {devices} device(s): {r['steps_per_s']:,.0f} steps/s (reset excluded), "
            f"{r['steps_per_s_with_reset']:,.0f} steps/s (reset included); episode "
            f"{r['episode_s']:.2f}s ({r['cores_busy']:.2f} cores busy, "
            f"{r['cpu_us_per_step']:.1f} CPU-us per env step), reset {r['reset_s']:.2f}s, "
            f"compile {r['compile_s']:.1f}s, mean return {r['mean_return']:.4f}"
        )
    one = results[1]
    print(
        f"refit alone (5 warm steps, 1 device): {one['refit_cpu_us']:.1f} CPU-us per refit "
        f"against {one['cpu_us_per_step']:.1f} CPU-us per env step "
        f"({one['refit_cpu_us'] / one['cpu_us_per_step']:.0%} of the step)"
    )
    if args.compare_learner:
        other = run_worker(args, devices=1, learner=args.compare_learner)
        print(
            f"jax 1 device, learner {args.compare_learner}: {other['steps_per_s']:,.0f} "
            f"steps/s, {other['cpu_us_per_step']:.1f} CPU-us per env step, refit "
            f"{other['refit_cpu_us']:.1f} CPU-us, mean return {other['mean_return']:.4f}; "
            f"logreg / {args.compare_learner}: "
            f"{one['steps_per_s'] / other['steps_per_s']:.2f}x steps/s"
        )
    print(
        f"memory of {args.envs} envs: peak RSS {one['peak_rss_mib']:.0f} MiB - baseline "
        f"{baseline['peak_rss_mib']:.0f} MiB (jax + env imported, task data built) = "
        f"{one['peak_rss_mib'] - baseline['peak_rss_mib']:.0f} MiB; XLA memory analysis of "
        f"the episode call: arguments {one['xla_argument_mib']:.1f} MiB + outputs "
        f"{one['xla_output_mib']:.2f} MiB + temporaries {one['xla_temp_mib']:.1f} MiB"
    )
    ref, ref_return = reference_steps_per_s(args.budget, args.reference_episodes)
    print(
        f"reference numpy + scikit-learn env: {ref:,.1f} steps/s "
        f"({args.reference_episodes} episodes, reset excluded), mean return {ref_return:.4f}"
    )
    print(f"load average after the run {os.getloadavg()}")
    best = max(results.values(), key=lambda r: r["steps_per_s"])
    print(f"best JAX configuration: {best['devices']} device(s)")
    print(
        f"env_steps_per_s={best['steps_per_s']:.1f} reference_steps_per_s={ref:.2f} "
        f"ratio={best['steps_per_s'] / ref:.1f}"
    )


if __name__ == "__main__":
    main()
