"""Padding many splits into one `TaskBatch` of fixed shapes, so one jitted env vmaps over tasks.

Padded rows, features and classes are switched off by masks; padded feature
values are zero, which leaves every learner's predictions unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from flax import struct

from metaal.data.task import Split


@struct.dataclass
class TaskBatch:
    """Split arrays padded to common shapes; a leading task axis when batched.

    Shapes (unbatched): pool_X (N, D), pool_y (N,), pool_mask (N,), the same
    for val (V) and test (T), feature_mask (D,), class_mask (K,).
    """

    pool_X: jnp.ndarray
    pool_y: jnp.ndarray
    pool_mask: jnp.ndarray
    val_X: jnp.ndarray
    val_y: jnp.ndarray
    val_mask: jnp.ndarray
    test_X: jnp.ndarray
    test_y: jnp.ndarray
    test_mask: jnp.ndarray
    feature_mask: jnp.ndarray
    class_mask: jnp.ndarray

    @property
    def shape(self) -> dict[str, int]:
        """Padded sizes: pool, val, test, features, classes."""
        return {
            "pool": self.pool_X.shape[-2],
            "val": self.val_X.shape[-2],
            "test": self.test_X.shape[-2],
            "features": self.pool_X.shape[-1],
            "classes": self.class_mask.shape[-1],
        }


def _pad(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, dtype=a.dtype)
    out[tuple(slice(0, s) for s in a.shape)] = a
    return out


def _mask(n: int, size: int) -> np.ndarray:
    return np.arange(size) < n


def pad_split(
    split: Split,
    pool: int | None = None,
    val: int | None = None,
    test: int | None = None,
    features: int | None = None,
    classes: int | None = None,
) -> TaskBatch:
    """Pad one split to the given sizes (defaults: its own sizes)."""
    pool = pool or len(split.pool_y)
    val = val or len(split.val_y)
    test = test or len(split.test_y)
    features = features or split.n_features
    classes = classes or split.n_classes
    sizes = {
        "pool": (len(split.pool_y), pool),
        "val": (len(split.val_y), val),
        "test": (len(split.test_y), test),
        "features": (split.n_features, features),
        "classes": (split.n_classes, classes),
    }
    for what, (have, room) in sizes.items():
        if have > room:
            raise ValueError(f"{split.name}: {have} {what} do not fit in a padded size of {room}")
    return TaskBatch(
        pool_X=jnp.asarray(_pad(split.pool_X, (pool, features))),
        pool_y=jnp.asarray(_pad(split.pool_y, (pool,))),
        pool_mask=jnp.asarray(_mask(len(split.pool_y), pool)),
        val_X=jnp.asarray(_pad(split.val_X, (val, features))),
        val_y=jnp.asarray(_pad(split.val_y, (val,))),
        val_mask=jnp.asarray(_mask(len(split.val_y), val)),
        test_X=jnp.asarray(_pad(split.test_X, (test, features))),
        test_y=jnp.asarray(_pad(split.test_y, (test,))),
        test_mask=jnp.asarray(_mask(len(split.test_y), test)),
        feature_mask=jnp.asarray(_mask(split.n_features, features)),
        class_mask=jnp.asarray(_mask(split.n_classes, classes)),
    )


def stack_splits(splits: Sequence[Split]) -> TaskBatch:
    """Pad every split to the largest sizes among them and stack along a new task axis."""
    if not splits:
        raise ValueError("stack_splits needs at least one split")
    sizes = dict(
        pool=max(len(s.pool_y) for s in splits),
        val=max(len(s.val_y) for s in splits),
        test=max(len(s.test_y) for s in splits),
        features=max(s.n_features for s in splits),
        classes=max(s.n_classes for s in splits),
    )
    padded = [pad_split(s, **sizes) for s in splits]
    return TaskBatch(
        **{f: jnp.stack([getattr(p, f) for p in padded]) for f in TaskBatch.__dataclass_fields__}
    )
