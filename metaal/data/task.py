"""Tasks and their splits: the plain data every other part of metaal reads.

A `Task` is one labelled classification data set after encoding (numeric
matrix, integer labels, missing values still NaN). `make_split` turns it into
a `Split` (pool / validation / test) for one seed, imputing and standardising
with statistics of the pool alone, so nothing leaks from validation or test.

Categorical columns (`encode_frame`) are one-hot encoded, one column per
level in sorted order. A column with more than `MAX_CATEGORIES` (20) levels
keeps its 20 most frequent levels among those seen in at least
`MIN_CATEGORY_ROWS` (5) rows, ties broken by level name (the earlier name is
kept), and groups every other level into one "other" column placed last: at
most 21 columns, the columns scikit-learn's `OneHotEncoder(max_categories=21,
min_frequency=5)` gives such a column when no counts tie. Columns with at
most 20 levels are never grouped, so they encode as they always have.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd

#: Categorical columns with more levels than this group their rare levels into "other".
MAX_CATEGORIES = 20
#: In a grouped column, a level seen in fewer rows than this always goes to "other".
MIN_CATEGORY_ROWS = 5

#: make_split's default caps on the pool, validation and test sizes.
MAX_POOL, MAX_VAL, MAX_TEST = 1000, 500, 500
#: Validation and test each take this share of the rows, and at least HOLDOUT_MIN_ROWS.
HOLDOUT_SHARE = 0.15
HOLDOUT_MIN_ROWS = 15
#: The smallest pool make_split accepts.
POOL_MIN_ROWS = 2


class DataError(ValueError):
    """Bad input data: the message names the input, the problem and the fix."""


def check_features(X: np.ndarray, what: str) -> None:
    """Refuse a feature matrix with infinite values or a column without any value (NaN is imputed).

    `what` names the matrix in the message (`task 'iris'`, `X`); the Python
    API (`QueryStrategy.query`) and the data loaders share this check.
    """
    if np.isinf(X).any():
        rows, cols = np.nonzero(np.isinf(X))
        raise DataError(
            f"{what}: infinite values in feature column(s) {sorted(set(cols.tolist()))} "
            f"(first at row {int(rows[0])}); replace them with finite numbers or leave them "
            "empty (NaN) to be imputed"
        )
    all_nan = np.isnan(X).all(axis=0)
    if len(X) and all_nan.any():
        raise DataError(
            f"{what}: feature column(s) {np.nonzero(all_nan)[0].tolist()} have no value at all "
            "and cannot be imputed; drop them"
        )


@dataclasses.dataclass(frozen=True)
class Task:
    """One classification data set, encoded but not yet split or scaled.

    `X` is float64 (rows, features) and may hold NaN (imputed at split time);
    `y` holds integer labels 0..len(class_names)-1. `ids` names the rows
    (a file's id column, see `load_file`), or is None.
    """

    name: str
    X: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]
    source: str = ""
    ids: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        X = np.asarray(self.X, dtype=np.float64)
        y = np.asarray(self.y)
        if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
            raise DataError(
                f"task {self.name!r}: X must be (rows, features) and y (rows,); "
                f"got X{X.shape} and y{y.shape}"
            )
        check_features(X, f"task {self.name!r}")
        if not np.issubdtype(y.dtype, np.integer) or (y < 0).any():
            raise DataError(f"task {self.name!r}: labels must be integers >= 0")
        k = len(self.class_names)
        present = np.unique(y)
        if len(present) < 2:
            only = self.class_names[int(present[0])] if len(present) else "none"
            raise DataError(
                f"task {self.name!r}: only one class ({only!r}) is present; "
                "active learning needs at least two classes"
            )
        if present.max() >= k:
            raise DataError(f"task {self.name!r}: label {present.max()} has no class name")
        if self.ids is not None and len(self.ids) != len(y):
            raise DataError(f"task {self.name!r}: {len(self.ids)} ids for {len(y)} rows")
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "y", y.astype(np.int32))

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def minority_share(self) -> float:
        """Share of rows in the rarest class."""
        return float(np.bincount(self.y, minlength=self.n_classes).min() / len(self.y))


def encode_frame(df: pd.DataFrame, target: str, name: str, source: str = "") -> Task:
    """Encode a DataFrame into a `Task`: one-hot categoricals, keep NaN, encode labels.

    Numeric columns are kept as they are (NaN stays NaN, imputed at split
    time). Object / categorical / boolean columns are one-hot encoded
    (a missing value gets no category; NaN in every column of the block),
    rare levels of wide columns grouped as the module docstring says.
    Labels are encoded by sorted string value.
    """
    if target not in df.columns:
        raise DataError(
            f"{name}: target column {target!r} not found; columns are "
            f"{list(map(str, df.columns))}. Pass the label column's name with --target"
        )
    labels = df[target]
    missing = labels.isna() | (labels.astype(str).str.strip() == "")
    if missing.any():
        rows = np.nonzero(missing.to_numpy())[0][:10].tolist()
        raise DataError(
            f"{name}: target column {target!r} has {int(missing.sum())} missing value(s) "
            f"(rows {rows}...); every row needs a label here: drop or label those rows"
        )
    features = df.drop(columns=[target])
    if features.shape[1] == 0:
        raise DataError(f"{name}: no feature columns besides the target {target!r}")
    blocks = []
    for col in features.columns:
        series = features[col]
        if pd.api.types.is_bool_dtype(series):
            blocks.append(series.astype(np.float64).to_numpy()[:, None])
        elif pd.api.types.is_numeric_dtype(series):
            blocks.append(series.to_numpy(dtype=np.float64)[:, None])
        else:
            numeric = pd.to_numeric(series, errors="coerce")
            if numeric.notna().sum() == series.notna().sum():
                blocks.append(numeric.to_numpy(dtype=np.float64)[:, None])
                continue
            values = series.astype("string").str.strip()
            onehot = _one_hot(values).astype(np.float64)
            onehot[values.isna().to_numpy()] = np.nan
            blocks.append(onehot)
    X = np.concatenate(blocks, axis=1)
    label_str = labels.astype(str).str.strip()
    class_names = tuple(sorted(label_str.unique().tolist()))
    y = np.searchsorted(np.array(class_names), label_str.to_numpy()).astype(np.int32)
    return Task(name=name, X=X, y=y, class_names=class_names, source=source)


def _one_hot(values: pd.Series) -> np.ndarray:
    """Boolean one-hot block of a stripped string column, rare levels grouped last."""
    counts = values.value_counts()
    cats = sorted(counts.index.tolist())
    if len(cats) <= MAX_CATEGORIES:
        return np.stack([(values == c).fillna(False).to_numpy() for c in cats], axis=1)
    frequent = [c for c in cats if counts[c] >= MIN_CATEGORY_ROWS]
    kept = sorted(sorted(frequent, key=lambda c: -counts[c])[:MAX_CATEGORIES])
    columns = [(values == c).fillna(False).to_numpy() for c in kept]
    other = (values.notna() & ~values.isin(kept)).to_numpy()
    return np.stack([*columns, other], axis=1)


@dataclasses.dataclass(frozen=True)
class Split:
    """One seed's pool / validation / test split of a task, imputed and standardised.

    Arrays are float32 features and int32 labels. The pool is what active
    learning labels from; validation drives rewards; test is only reported.
    """

    name: str
    n_classes: int
    pool_X: np.ndarray
    pool_y: np.ndarray
    val_X: np.ndarray
    val_y: np.ndarray
    test_X: np.ndarray
    test_y: np.ndarray

    @property
    def n_features(self) -> int:
        """Number of feature columns."""
        return self.pool_X.shape[1]


def split_sizes(n: int, max_pool: int, max_val: int, max_test: int) -> tuple[int, int, int]:
    """Sizes (pool, val, test) for `n` rows: 15% each for val and test (at least 15), the rest pool.

    Large sets are subsampled: the pool is capped at `max_pool`.
    """
    holdout = max(HOLDOUT_MIN_ROWS, round(HOLDOUT_SHARE * n))
    n_val = int(min(max_val, holdout))
    n_test = int(min(max_test, holdout))
    n_pool = int(min(max_pool, n - n_val - n_test))
    if n_pool < POOL_MIN_ROWS:
        raise DataError(
            f"only {n} rows: too few to split into pool, validation and test; at least "
            f"{min_split_rows(max_val, max_test)} rows are needed"
        )
    return n_pool, n_val, n_test


def min_split_rows(max_val: int = MAX_VAL, max_test: int = MAX_TEST) -> int:
    """The fewest rows `split_sizes` accepts: the smallest validation and test parts plus a pool."""
    return min(max_val, HOLDOUT_MIN_ROWS) + min(max_test, HOLDOUT_MIN_ROWS) + POOL_MIN_ROWS


def min_class_rows(n: int) -> int:
    """Rows a class needs in a task of `n` rows to expect one in each part of `make_split`.

    Stratified splitting gives each part its share of every class, so a class
    of `c` rows expects `c * part / n` rows in a part; the smallest part (with
    make_split's default caps) sets the minimum. Fewer rows leave the class
    out of some part for many seeds: out of test, it is never scored.
    """
    return math.ceil(n / min(split_sizes(n, MAX_POOL, MAX_VAL, MAX_TEST)))


def fit_scaler(X: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Median imputation and standardisation fitted on `X`; returns the float32 transform.

    Medians, means and standard deviations come from `X` alone (constant
    columns keep scale 1, so they become 0); apply the result to any rows.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a column without any value in X
        median = np.nan_to_num(np.nanmedian(X, axis=0))
    filled = np.where(np.isnan(X), median, X)
    mean, std = filled.mean(axis=0), filled.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)

    def transform(rows: np.ndarray) -> np.ndarray:
        return ((np.where(np.isnan(rows), median, rows) - mean) / std).astype(np.float32)

    return transform


def _stratified_order(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A permutation of rows whose every prefix is (near) stratified by class."""
    keys = np.empty(len(y))
    for c in np.unique(y):
        idx = np.nonzero(y == c)[0]
        rank = rng.permutation(len(idx))
        keys[idx] = (rank + rng.uniform(size=len(idx))) / len(idx)
    return np.argsort(keys, kind="stable")


def make_split(
    task: Task,
    seed: int,
    max_pool: int = MAX_POOL,
    max_val: int = MAX_VAL,
    max_test: int = MAX_TEST,
    max_features: int | None = None,
) -> Split:
    """Stratified pool / validation / test split of `task` for `seed`.

    Missing values are imputed with pool medians and every feature is
    standardised with pool mean and standard deviation (constant columns
    become 0), so validation and test statistics never leak in. With
    `max_features`, wider tasks are projected on the pool's top principal
    components (then re-standardised), so a suite padded to common shapes is
    not as wide as its widest task.
    """
    rng = np.random.default_rng(seed)
    n_pool, n_val, n_test = split_sizes(len(task.y), max_pool, max_val, max_test)
    order = _stratified_order(task.y, rng)
    test_idx = order[:n_test]
    val_idx = order[n_test : n_test + n_val]
    rest = order[n_test + n_val :]
    pool_idx = rest[_stratified_order(task.y[rest], rng)[:n_pool]]
    scale = fit_scaler(task.X[pool_idx])
    parts = {
        "pool": scale(task.X[pool_idx]),
        "val": scale(task.X[val_idx]),
        "test": scale(task.X[test_idx]),
    }
    if max_features is not None and task.X.shape[1] > max_features:
        _, _, vt = np.linalg.svd(parts["pool"].astype(np.float64), full_matrices=False)
        proj = {k: v @ vt[:max_features].T for k, v in parts.items()}
        mu, sd = proj["pool"].mean(axis=0), proj["pool"].std(axis=0)
        sd = np.where(sd > 1e-12, sd, 1.0)
        parts = {k: ((v - mu) / sd).astype(np.float32) for k, v in proj.items()}
    return Split(
        name=task.name,
        n_classes=task.n_classes,
        pool_X=parts["pool"],
        pool_y=task.y[pool_idx],
        val_X=parts["val"],
        val_y=task.y[val_idx],
        test_X=parts["test"],
        test_y=task.y[test_idx],
    )
