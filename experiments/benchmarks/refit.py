"""The logreg refit and prediction of two-class tasks: the binary fit against the two-column one.

`logreg` (default `binary=true`) fits two padded classes by the logit difference
u = w_1 - w_0 (`metaal.learners.make_logreg`); `logreg:binary=false` fits both
columns. Both make the same iterates up to rounding. Each is timed on random data at
three sizes, vmapped over a batch of envs as in the env: the reference config's 20
features and 105 padded labelled rows, and MiniLM's 384 and EfficientNet-Lite0's
1,280 embedding widths with 205 rows. Each figure is the best of 7 calls, in
microseconds per env (one warm refit of 5 steps, or one prediction of its rows).

    python -m metaal.experiments.benchmarks.refit

The last line is `d20_fit_ratio=<x> d384_fit_ratio=<x> d1280_fit_ratio=<x>`
(two-column time / binary time).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from metaal.learners import make_learner

#: (features, padded labelled rows, envs)
SIZES = ((20, 105, 1024), (384, 205, 256), (1280, 205, 64))


def best_us(fn, *args, repeats: int = 7) -> float:
    """Best wall time of `fn(*args)` over `repeats` calls (after one warm-up), microseconds."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return 1e6 * min(times)


def timings(d: int, n: int, envs: int, binary: bool) -> tuple[float, float]:
    """(fit, predict) microseconds per env of the warm 5-step refit at this size."""
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.normal(size=(envs, n, d)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 2, (envs, n)))
    weights = (jnp.arange(n) < n // 2).astype(jnp.float32)
    mask = jnp.ones(2, bool)
    learner = make_learner(f"logreg:binary={str(binary).lower()}", steps=5, power_iters=1)
    start = jax.vmap(lambda _: learner.init(None, d, 2))(jnp.arange(envs))
    fit = jax.jit(jax.vmap(lambda p, X, y: learner.fit(p, X, y, weights, mask)))
    predict = jax.jit(jax.vmap(lambda p, X: learner.predict(p, X, mask)))
    fitted = fit(start, X, y)
    return best_us(fit, start, X, y) / envs, best_us(predict, fitted, X) / envs


def main() -> None:
    """Print both learners' times at each size, and the ratios."""
    ratios = {}
    for d, n, envs in SIZES:
        (fit_b, pred_b), (fit_t, pred_t) = (timings(d, n, envs, b) for b in (True, False))
        ratios[d] = fit_t / fit_b
        print(
            f"d={d} rows={n} envs={envs}: fit binary {fit_b:.1f} us, two-column {fit_t:.1f} us "
            f"({fit_t / fit_b:.2f}x); predict {pred_b:.1f} us against {pred_t:.1f} us "
            f"({pred_t / pred_b:.2f}x)",
            flush=True,
        )
    print(" ".join(f"d{d}_fit_ratio={r:.2f}" for d, r in ratios.items()))


if __name__ == "__main__":
    main()
