"""Users' own data: CSV files with a named label column, and NPZ files with `X` and `y`.

`load_file` reads a fully labelled file into a `Task` (for training or
evaluation). `load_labelled_and_unlabelled` reads a partly labelled file for
the query use case: rows whose label is empty form the unlabelled pool.
Both go through `encode_frame`, so files are encoded like the bundled data
sets; missing feature values are kept as NaN and imputed at split time.
Every problem is reported as a `DataError` naming the file, the column and
what to do.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from metaal.data.task import DataError, Task, encode_frame

#: Label array read from an NPZ file when no other name is given.
NPZ_LABELS = "y"


def _read_csv(path: Path, sep: str) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, sep=sep)
    except pd.errors.EmptyDataError as err:
        raise DataError(f"{path}: the file is empty; write a header row and data rows") from err
    except pd.errors.ParserError as err:
        raise DataError(
            f"{path}: malformed CSV ({str(err).strip()}); every row needs the same number "
            "of fields as the header, and fields holding the separator need quotes"
        ) from err
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text; save the CSV as UTF-8") from err
    # Stray spaces around header names would otherwise make --target miss its column.
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _read_npz(path: Path, labels: str) -> pd.DataFrame:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError) as err:
        raise DataError(
            f"{path}: not a readable NPZ archive ({err}); write it with "
            "numpy.savez(path, X=features, y=labels)"
        ) from err
    missing = [key for key in ("X", labels) if key not in arrays]
    if missing:
        raise DataError(
            f"{path}: NPZ has no array named {' or '.join(map(repr, missing))}; it holds "
            f"{sorted(arrays)}. Save features as X and labels as {labels}"
        )
    X, y = arrays["X"], arrays[labels]
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
        raise DataError(
            f"{path}: X must be 2-D (rows, features) and {labels} 1-D with one label per "
            f"row; got X{X.shape} and {labels}{y.shape}"
        )
    df = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    df[labels] = y
    return df


def _read(path: str | Path, target: str | None) -> tuple[pd.DataFrame, str, Path]:
    """Read a CSV / TSV / NPZ file into a frame; return it with its label column."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found; check the path")
    suffix = p.suffix.lower()
    if suffix == ".npz":
        labels = target or NPZ_LABELS
        return _read_npz(p, labels), labels, p
    if suffix not in (".csv", ".tsv"):
        raise DataError(f"{p}: unsupported file type {suffix!r}; use a .csv, .tsv or .npz file")
    df = _read_csv(p, sep="\t" if suffix == ".tsv" else ",")
    if target is None:
        raise DataError(
            f"{p}: which column holds the labels? Pass its name with --target; "
            f"columns are {list(df.columns)}"
        )
    if target not in df.columns:
        raise DataError(
            f"{p}: target column {target!r} not found; columns are {list(df.columns)}. "
            "Pass the label column's name with --target"
        )
    if df.empty:
        raise DataError(f"{p}: the file has a header but no data rows")
    return df, target, p


def _check_features(df: pd.DataFrame, target: str, path: Path) -> None:
    """Name the column when a feature is empty throughout or holds infinities."""
    for col in df.columns.drop(target):
        series = df[col]
        if series.isna().all():
            raise DataError(
                f"{path}: column {col!r} is empty in every row and cannot be imputed; drop it"
            )
        if pd.api.types.is_bool_dtype(series):
            continue
        # Text such as "inf" parses to infinity too, as encode_frame would read it.
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
        infinite = np.isinf(values)
        if infinite.any():
            rows = np.nonzero(infinite)[0][:10].tolist()
            raise DataError(
                f"{path}: column {col!r} holds {int(infinite.sum())} infinite value(s) "
                f"(rows {rows}); replace them with finite numbers or leave them empty "
                "to be imputed"
            )


def _label_strings(labels: pd.Series) -> pd.Series:
    """Labels as stripped strings (encode_frame's encoding), NaN where empty."""
    text = labels.astype("string").str.strip()
    return text.mask(text == "")


def load_file(path: str | Path, target: str | None = None) -> Task:
    """Read a fully labelled CSV, TSV or NPZ file into a `Task`.

    CSV / TSV need `target`, the label column's name. NPZ files hold arrays
    `X` (rows, features) and `y` (rows,); `target` may name another label
    array. Every row needs a label; for partly labelled files use
    `load_labelled_and_unlabelled`.
    """
    df, target, p = _read(path, target)
    _check_features(df, target, p)
    labels = _label_strings(df[target])
    present = labels.dropna().unique()
    if labels.notna().all() and len(present) < 2:
        raise DataError(
            f"{p}: target column {target!r} has a single class ({present[0]!r}); "
            "active learning needs labelled rows of at least two classes"
        )
    return encode_frame(df, target, name=str(p), source=f"file:{p}")


def load_labelled_and_unlabelled(
    path: str | Path, target: str | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read a partly labelled file for querying: rows with an empty label are the pool.

    Returns `(X, y, class_names)`: `X` float64 (rows, encoded features) for
    every row, missing values still NaN; `y` float64 class indices into
    `class_names`, NaN where the label is empty (scikit-activeml's
    convention). At least one row must be unlabelled; there may be any
    number of labelled rows, even none.
    """
    df, target, p = _read(path, target)
    _check_features(df, target, p)
    labels = _label_strings(df[target])
    unlabelled = labels.isna().to_numpy()
    if not unlabelled.any():
        raise DataError(
            f"{p}: every row of target column {target!r} is labelled, so there is nothing "
            "to query; leave the label empty in the rows to choose from"
        )
    if len(df) < 2:
        raise DataError(f"{p}: only one row; there is nothing to choose between")
    # encode_frame needs a complete label column with two classes; the
    # features' encoding does not depend on it, so a stand-in column is used
    # and the real labels are encoded below.
    stand_in = "__metaal_stand_in_label__"
    frame = df.drop(columns=[target]).assign(**{stand_in: np.arange(len(df)) % 2})
    X = encode_frame(frame, stand_in, name=str(p), source=f"file:{p}").X
    class_names = tuple(sorted(labels.dropna().unique().tolist()))
    y = np.full(len(df), np.nan)
    y[~unlabelled] = np.searchsorted(np.array(class_names), labels[~unlabelled].to_numpy(str))
    return X, y, class_names
