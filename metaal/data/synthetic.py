"""Synthetic classification tasks: an unlimited meta-training distribution.

`make_synthetic_task` draws Gaussian clusters (several per class) whose knobs
set the things a query strategy has to cope with: dimension, class count,
class imbalance, label noise, separability, non-linearity (a class's
clusters scattered among the other classes' in XOR-like layouts) and an
optional "honeypot" (a region of pure label noise that attracts uncertainty
sampling without ever paying off). `sample_synthetic_config`
draws those knobs from a wide distribution, and `synthetic_task(i)` is task
number `i` of the suite `synthetic`, reproducible from `i` alone.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from metaal.data.task import DataError, Task

#: Every class keeps at least this many rows, so stratified splits can place it.
MIN_CLASS_ROWS = 6

# Stream tag that keeps the knob draws of `sample_synthetic_config(i)`
# independent of the data draws of `make_synthetic_task(seed=i)`.
_CONFIG_STREAM = 0x5EED


def _class_counts(n: int, n_classes: int, imbalance: float) -> np.ndarray:
    """Rows per class, falling geometrically so the first is `imbalance` times the last."""
    shares = imbalance ** (-np.arange(n_classes) / max(n_classes - 1, 1))
    counts = np.maximum(np.floor(n * shares / shares.sum()).astype(int), MIN_CLASS_ROWS)
    # Rounding and the per-class floor are settled on the largest class.
    counts[0] += n - counts.sum()
    if counts[0] < counts[1:].max():
        raise DataError(
            f"synthetic task: {n} rows are too few for {n_classes} classes at imbalance "
            f"{imbalance}; raise n_samples or lower imbalance"
        )
    return counts


def _random_rotation(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def make_synthetic_task(
    seed: int,
    n_samples: int = 600,
    n_features: int = 5,
    n_classes: int = 2,
    imbalance: float = 1.0,
    label_noise: float = 0.0,
    separability: float = 1.0,
    nonlinearity: float = 0.0,
    honeypot: float = 0.0,
    clusters_per_class: int = 2,
    name: str | None = None,
) -> Task:
    """Draw one synthetic task from `np.random.default_rng(seed)`.

    Args:
        seed: the only source of randomness: equal arguments give equal tasks.
        n_samples: rows in all, honeypot included.
        n_features: feature columns.
        n_classes: classes (>= 2).
        imbalance: largest class size over smallest (>= 1); sizes fall
            geometrically in between.
        label_noise: fraction of rows whose label is flipped to another class.
        separability: scale of the distances between cluster centres, in units
            of the within-cluster spread (about 2.8 * separability between two
            centres whatever the dimension).
        nonlinearity: 0..1, how far a class's clusters scatter from their
            class centre: 0 stacks them (classes close to linearly separable),
            1 places each independently, so classes interleave in XOR-like
            layouts. Needs clusters_per_class >= 2 to matter.
        honeypot: fraction of rows (0..0.5) placed in one extra cluster whose
            labels are drawn uniformly at random.
        clusters_per_class: Gaussian clusters per class, each with its own
            random rotation and axis scales.
        name: the task's name; default `synthetic(seed=<seed>)`.
    """
    checks = {
        "n_features >= 1": n_features >= 1,
        "n_classes >= 2": n_classes >= 2,
        "imbalance >= 1": imbalance >= 1.0,
        "0 <= label_noise < 1": 0.0 <= label_noise < 1.0,
        "separability >= 0": separability >= 0.0,
        "0 <= nonlinearity <= 1": 0.0 <= nonlinearity <= 1.0,
        "0 <= honeypot <= 0.5": 0.0 <= honeypot <= 0.5,
        "clusters_per_class >= 1": clusters_per_class >= 1,
    }
    broken = [rule for rule, ok in checks.items() if not ok]
    if broken:
        raise DataError(f"synthetic task: knobs out of range, need {', '.join(broken)}")
    rng = np.random.default_rng(seed)
    n_honey = int(round(honeypot * n_samples))
    counts = _class_counts(n_samples - n_honey, n_classes, imbalance)

    # Centres ~ N(0, (2 s)^2 / d) per axis keep centre distances near 2.8 s in any dimension.
    centre_scale = 2.0 * separability / np.sqrt(n_features)
    X_parts, y_parts = [], []
    for k, count in enumerate(counts):
        class_centre = rng.normal(size=n_features)
        members = rng.integers(clusters_per_class, size=count)
        for c in range(clusters_per_class):
            m = int((members == c).sum())
            # nonlinearity 0 stacks a class's clusters on its class centre (near
            # linearly separable); 1 scatters them independently (XOR-like layouts).
            own = rng.normal(size=n_features)
            mix = np.sqrt(1.0 - nonlinearity**2) * class_centre + nonlinearity * own
            centre = mix * centre_scale
            # Stretch the axes, then rotate: real clusters are rarely round or axis-aligned.
            stretch = rng.uniform(0.5, 1.5, size=n_features)[:, None]
            shape = stretch * _random_rotation(rng, n_features)
            X_parts.append(centre + rng.normal(size=(m, n_features)) @ shape)
            y_parts.append(np.full(m, k))
    if n_honey:
        centre = rng.normal(size=n_features) * centre_scale
        X_parts.append(centre + rng.normal(size=(n_honey, n_features)))
        y_parts.append(rng.integers(n_classes, size=n_honey))
    X = np.concatenate(X_parts)
    y = np.concatenate(y_parts)

    n_flip = int(round(label_noise * len(y)))
    flip = rng.choice(len(y), size=n_flip, replace=False)
    # Adding 1..K-1 modulo K always lands on a different class.
    y[flip] = (y[flip] + rng.integers(1, n_classes, size=n_flip)) % n_classes

    order = rng.permutation(len(y))
    knobs = (
        f"n={n_samples} d={n_features} k={n_classes} imbalance={imbalance:.3g} "
        f"noise={label_noise:.3g} sep={separability:.3g} nonlin={nonlinearity:.3g} "
        f"honeypot={honeypot:.3g} clusters={clusters_per_class}"
    )
    return Task(
        name=name or f"synthetic(seed={seed})",
        X=X[order],
        y=y[order].astype(np.int32),
        class_names=tuple(f"c{k}" for k in range(n_classes)),
        source=f"synthetic: seed={seed} {knobs}",
    )


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def sample_synthetic_config(seed: int) -> dict[str, Any]:
    """Draw the knobs of `make_synthetic_task` (seed included) from a wide distribution.

    Features 2..30 and separability 0.5..4 are log-uniform; classes 2..6 lean
    to binary; n_samples 300..1500; imbalance ratio 1..20 (balanced a third
    of the time); label noise 0..0.2 (none half the time); nonlinearity 0..1
    (none a third of the time); a honeypot of 3..15% of rows one time in five.
    """
    rng = np.random.default_rng([_CONFIG_STREAM, seed])
    return {
        "seed": seed,
        "n_samples": int(rng.integers(300, 1501)),
        "n_features": int(round(_log_uniform(rng, 2, 30))),
        "n_classes": int(rng.choice([2, 3, 4, 5, 6], p=[0.4, 0.2, 0.15, 0.15, 0.1])),
        "imbalance": 1.0 if rng.uniform() < 1 / 3 else _log_uniform(rng, 1, 20),
        "label_noise": 0.0 if rng.uniform() < 0.5 else float(rng.uniform(0, 0.2)),
        "separability": _log_uniform(rng, 0.5, 4),
        "nonlinearity": 0.0 if rng.uniform() < 1 / 3 else float(rng.uniform(0, 1)),
        "honeypot": float(rng.uniform(0.03, 0.15)) if rng.uniform() < 0.2 else 0.0,
        "clusters_per_class": int(rng.integers(1, 4)),
    }


@functools.lru_cache(maxsize=256)
def synthetic_task(index: int) -> Task:
    """Task `synthetic/<index>`: `make_synthetic_task(**sample_synthetic_config(index))`.

    Cached, so the returned arrays are read-only.
    """
    task = make_synthetic_task(**sample_synthetic_config(index), name=f"synthetic/{index}")
    task.X.flags.writeable = False
    task.y.flags.writeable = False
    return task
