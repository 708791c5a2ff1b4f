"""Users' own data: CSV files with a named label column, and NPZ files with `X` and `y`.

`load_file` reads a fully labelled file into a `Task` (for training or
evaluation). `load_labelled_and_unlabelled` reads a partly labelled file for
the query use case: rows whose label is empty form the unlabelled pool.
Both go through `encode_frame`, so files are encoded like the bundled data
sets; missing feature values are kept as NaN and imputed at split time.
Every problem is reported as a `DataError` naming the file, the column and
what to do, before anything is computed.

Reading a file:

- a binary file named .csv or .tsv (Excel, OpenDocument, Parquet, zip, gzip,
  ...) is recognised by its first bytes and named, with how to export it;
- a .csv file's separator is sniffed (`csv.Sniffer`) from its first
  `SNIFF_CHARS` characters among `,` `;` tab and `|`, comma when it cannot
  tell; a .tsv file is tab-separated;
- header names are stripped of spaces and must be unique;
- a cell holding only spaces is empty (missing);
- `drop` names columns to leave out, and `id_column` a column that names the
  rows: read as text (so `007` stays `007`), kept out of the features and
  returned as `ids`. In an NPZ file, features are `x0`, `x1`, ... and
  `id_column` names another array of the archive;
- an NPZ file may hold `class_names` (what `metaal embed` writes): `y` then
  holds indices into it, NaN for an unlabelled row (a float `y`).
  Without it, `y`'s values are the labels and NaN means unlabelled too.

Checks on the features: a column fails when it is empty in every row, holds
infinities, or is *mostly numeric*: at least `MOSTLY_NUMERIC` (80%) of its
non-empty values are numbers but some are not, or that share is reached only
once commas are taken out (`1,5`: a decimal comma; `1,234`: a thousands
separator). Other text columns are categorical (see `encode_frame`).

Checks on the labels, for `load_file`, whose task is split by `make_split`:
every row has a label, there are at least two classes and
`min_split_rows()` (32) rows, and each class has at least
`min_class_rows(n)` rows.

Messages give positions as file line numbers (the header is line 1) for CSV
and TSV files, and as 0-based rows for NPZ arrays.
"""

from __future__ import annotations

import csv
import dataclasses
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from metaal.data.task import (
    HOLDOUT_MIN_ROWS,
    POOL_MIN_ROWS,
    DataError,
    Task,
    encode_frame,
    min_class_rows,
    min_split_rows,
)

#: Label array read from an NPZ file when no other name is given.
NPZ_LABELS = "y"
#: Names of the classes `y` indexes, when an NPZ file holds them (as `metaal embed` writes).
CLASS_NAMES = "class_names"
#: A text column with at least this share of numbers among its values is numeric.
MOSTLY_NUMERIC = 0.8
#: Characters of a .csv file the separator is sniffed from.
SNIFF_CHARS = 16_384
#: Separators a .csv file may use, by name for messages.
SEPARATORS = {",": "commas", ";": "semicolons", "\t": "tabs", "|": "'|'"}
#: Offending rows and values quoted in a message.
SHOWN = 3

# First bytes of files that are not text, what they are and how to get a CSV.
_EXPORT = "open it in Excel or LibreOffice and save it as CSV UTF-8"
_BINARY = (
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Excel .xls file", _EXPORT),
    (b"PAR1", "a Parquet file", "export it: pandas.read_parquet(path).to_csv(out, index=False)"),
    (b"ARROW1", "an Arrow / Feather file", "export it: pandas.read_feather(path).to_csv(out)"),
    (b"\x1f\x8b", "gzip-compressed", "decompress it (gunzip) first"),
    (b"BZh", "bzip2-compressed", "decompress it (bunzip2) first"),
    (b"\xfd7zXZ\x00", "xz-compressed", "decompress it (unxz) first"),
    (b"\x93NUMPY", "a NumPy .npy array", "save X and y together with numpy.savez to a .npz"),
    (b"SQLite format 3\x00", "an SQLite database", "export the table as CSV"),
    (b"\xff\xfe", "UTF-16 text", "save it as CSV UTF-8"),
    (b"\xfe\xff", "UTF-16 text", "save it as CSV UTF-8"),
)


@dataclasses.dataclass(frozen=True)
class QueryData:
    """A partly labelled file read for querying (see `load_labelled_and_unlabelled`).

    Unpacks as `(X, y, class_names)`; `ids` (None without an id column) is
    an attribute only, so callers written for the plain three-tuple work
    unchanged.
    """

    X: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]
    ids: tuple[str, ...] | None = None

    def __iter__(self) -> Iterator:
        return iter((self.X, self.y, self.class_names))


@dataclasses.dataclass(frozen=True)
class _Source:
    """A file being read, and how to point the user at its rows."""

    path: Path
    sep: str | None  # None: an NPZ archive

    def where(self, rows: Sequence[int]) -> str:
        """Where 0-based data rows are: file lines for CSV / TSV, array rows for NPZ."""
        rows = list(rows[:SHOWN])
        plural = "s" if len(rows) > 1 else ""
        if self.sep is None:
            return f"row{plural} " + ", ".join(map(str, rows)) + " (0-based)"
        lines = _data_lines(self.path, self.sep)
        return f"line{plural} " + ", ".join(str(lines[r]) for r in rows)


def _data_lines(path: Path, sep: str) -> list[int]:
    """The line each data row starts on (the header is line 1), counting rows as pandas does."""
    starts = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=sep)
        next(reader, None)
        end = reader.line_num
        for record in reader:
            # pandas skips blank and whitespace-only lines.
            if len(record) > 1 or (record and record[0].strip()):
                starts.append(end + 1)
            end = reader.line_num
    return starts


def _check_text(path: Path) -> None:
    """Name the format of a binary file given as CSV, with how to export it."""
    with open(path, "rb") as f:
        head = f.read(4096)
    found = _binary_format(path, head)
    if found is not None:
        what, fix = found
        raise DataError(f"{path}: this is {what}, not a UTF-8 CSV file; {fix}")


def _binary_format(path: Path, head: bytes) -> tuple[str, str] | None:
    """(what the file is, how to get a CSV from it) when its first bytes are not text."""
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                mimetype = archive.read("mimetype") if "mimetype" in names else b""
        except zipfile.BadZipFile:
            names, mimetype = [], b""
        if any(n.startswith("xl/") for n in names):
            return "an Excel .xlsx workbook", _EXPORT
        if b"spreadsheet" in mimetype:
            return "an OpenDocument spreadsheet", _EXPORT
        return "a zip archive", "unzip it and pass the CSV inside"
    for magic, what, fix in _BINARY:
        if head.startswith(magic):
            return what, fix
    if b"\x00" in head:
        return "a binary file", "export it as CSV UTF-8"
    return None


def _sniff(path: Path) -> str:
    """The separator of a .csv file, from its first lines; comma when they do not tell."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            sample = f.read(SNIFF_CHARS)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text; save the CSV as UTF-8") from err
    # A cut-off last line would make its separator count look inconsistent.
    if len(sample) == SNIFF_CHARS and "\n" in sample:
        sample = sample[: sample.rindex("\n")]
    try:
        return csv.Sniffer().sniff(sample, delimiters="".join(SEPARATORS)).delimiter
    except csv.Error:
        return ","


def _header(path: Path, sep: str) -> list[str]:
    """The header's names as written; refuse repeats, which pandas would rename `a.1`."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        raw = next(csv.reader(f, delimiter=sep), [])
    header = [name.strip() for name in raw]
    repeated = [name for name, count in Counter(header).items() if count > 1]
    if repeated:
        where = "; ".join(
            f"{name!r} (columns {', '.join(str(i + 1) for i, h in enumerate(header) if h == name)})"
            for name in repeated
        )
        raise DataError(f"{path}: repeated column names: {where}; give every column its own name")
    return raw


def _read_csv(path: Path, sep: str, as_text: Sequence[str]) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, sep=sep, dtype=dict.fromkeys(as_text, str))
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
    text = df.select_dtypes(include="object")
    # A cell of spaces is a blank cell, not a category (nor text in a numeric column).
    df[text.columns] = text.mask(text.apply(lambda s: s.str.strip() == ""))
    return df


def read_table(path: Path, as_text: Sequence[str] = ()) -> tuple[pd.DataFrame, _Source]:
    """A CSV / TSV file as a frame, and where its rows are (for messages).

    Binary files are named, a .csv file's separator is sniffed (tab for
    .tsv), repeated header names are refused, names are stripped, and a cell
    of spaces is empty (NaN). Columns named in ``as_text`` are read as strings.
    """
    _check_text(path)
    src = _Source(path, "\t" if path.suffix.lower() == ".tsv" else _sniff(path))
    text = [name for name in _header(path, src.sep) if name.strip() in as_text]
    return _read_csv(path, src.sep, text), src


def _named_labels(y: np.ndarray, names: np.ndarray, path: Path) -> np.ndarray:
    """Class indices ``y`` (NaN: unlabelled) as their ``names``, None where unlabelled."""
    if names.ndim != 1 or not len(names):
        raise DataError(f"{path}: class_names must be a non-empty 1-D array of names")
    values = y.astype(np.float64)
    labelled = ~np.isnan(values)
    index = values[labelled]
    bad = (index != np.round(index)) | (index < 0) | (index >= len(names))
    if bad.any():
        raise DataError(
            f"{path}: y must hold class indices 0..{len(names) - 1} into class_names (NaN: "
            f"unlabelled); got {sorted(set(index[bad].tolist()))[:SHOWN]}"
        )
    out = np.full(len(y), None, dtype=object)
    out[labelled] = names.astype(str)[index.astype(np.int64)]
    return out


def _read_npz(path: Path, labels: str, id_column: str | None) -> pd.DataFrame:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError) as err:
        raise DataError(
            f"{path}: not a readable NPZ archive ({err}); write it with "
            "numpy.savez(path, X=features, y=labels)"
        ) from err
    missing = [key for key in ("X", labels, id_column) if key is not None and key not in arrays]
    if missing:
        raise DataError(
            f"{path}: NPZ has no array named {' or '.join(map(repr, missing))}; it holds "
            f"{sorted(arrays)}. Save features as X and labels as {labels}"
        )
    X, y = arrays["X"], arrays[labels]
    if CLASS_NAMES in arrays and labels == NPZ_LABELS and y.ndim == 1:
        y = _named_labels(y, arrays[CLASS_NAMES], path)
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
        raise DataError(
            f"{path}: X must be 2-D (rows, features) and {labels} 1-D with one label per "
            f"row; got X{X.shape} and {labels}{y.shape}"
        )
    df = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    df[labels] = y
    if id_column is not None:
        ids = arrays[id_column]
        if ids.shape != y.shape:
            raise DataError(
                f"{path}: id array {id_column!r} must hold one id per row, shape {y.shape}; "
                f"got {ids.shape}"
            )
        df[id_column] = ids.astype(str)
    return df


def _read(
    path: str | Path, target: str | None, drop: Sequence[str], id_column: str | None
) -> tuple[pd.DataFrame, str, _Source, tuple[str, ...] | None]:
    """Read a CSV / TSV / NPZ file; return its frame without `drop` and id, label column, ids."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found; check the path")
    suffix = p.suffix.lower()
    if suffix == ".npz":
        target = target or NPZ_LABELS
        df, src = _read_npz(p, target, id_column), _Source(p, None)
    elif suffix in (".csv", ".tsv"):
        # Ids are names, not numbers: read as text, so 007 stays 007.
        df, src = read_table(p, as_text=[] if id_column is None else [id_column])
        if target is None:
            raise DataError(
                f"{p}: which column holds the labels? Pass its name with --target; "
                f"columns are {list(df.columns)}"
            )
        if target not in df.columns:
            raise DataError(
                f"{p}: target column {target!r} not found; columns are {list(df.columns)}. "
                f"Pass the label column's name with --target. The header was split at "
                f"{SEPARATORS[src.sep]}: if the file separates fields otherwise, save it with "
                "commas, semicolons, tabs or '|' between fields"
            )
    else:
        raise DataError(f"{p}: unsupported file type {suffix!r}; use a .csv, .tsv or .npz file")
    named = [c for c in (*drop, id_column) if c is not None]
    unknown = [c for c in named if c not in df.columns]
    if unknown:
        raise DataError(
            f"{p}: column(s) {unknown} given to drop or as the id are not in the file; "
            f"columns are {list(df.columns)}"
        )
    if target in named:
        raise DataError(f"{p}: {target!r} is the target column; it cannot be dropped or the id")
    if id_column in drop:
        raise DataError(f"{p}: {id_column!r} is both dropped and the id column; choose one")
    if df.empty:
        raise DataError(f"{p}: the file has a header but no data rows")
    ids = None if id_column is None else tuple(df[id_column].fillna("").tolist())
    return df.drop(columns=named), target, src, ids


def _check_features(df: pd.DataFrame, target: str, src: _Source) -> None:
    """Name the column when a feature is empty throughout, infinite or mostly numeric."""
    path = src.path
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
            raise DataError(
                f"{path}: column {col!r} holds {int(infinite.sum())} infinite value(s) "
                f"({src.where(np.nonzero(infinite)[0])}); replace them with finite numbers "
                "or leave them empty to be imputed"
            )
        if not pd.api.types.is_numeric_dtype(series):
            _check_mostly_numeric(series.dropna().astype(str), col, src)


def _check_mostly_numeric(text: pd.Series, col: str, src: _Source) -> None:
    """Refuse a text column that is numbers but for a few values, or numbers with commas."""
    numeric = pd.to_numeric(text, errors="coerce").notna()
    if numeric.all():
        return
    others = text[~numeric]
    rows = src.where(others.index)
    if numeric.mean() >= MOSTLY_NUMERIC:
        examples = ", ".join(map(repr, others.unique()[:SHOWN]))
        raise DataError(
            f"{src.path}: column {col!r} is numeric except for {len(others)} of its "
            f"{len(text)} values, such as {examples} ({rows}); fix them or leave them empty"
        )
    decommaed = pd.to_numeric(text.str.replace(",", "", regex=False), errors="coerce").notna()
    if (numeric | decommaed).mean() >= MOSTLY_NUMERIC:
        examples = ", ".join(map(repr, others[decommaed].unique()[:SHOWN]))
        raise DataError(
            f"{src.path}: column {col!r} holds numbers written with commas, such as "
            f"{examples} ({src.where(others[decommaed].index)}), which read as text; write "
            "them with a decimal point and no thousands separator (1.5, 1234)"
        )


def _label_strings(labels: pd.Series) -> pd.Series:
    """Labels as stripped strings (encode_frame's encoding), NaN where empty."""
    text = labels.astype("string").str.strip()
    return text.mask(text == "")


def _check_splittable(labels: pd.Series, target: str, src: _Source) -> None:
    """Every row labelled, two classes, and enough rows in all and per class to split."""
    p = src.path
    missing = labels.isna().to_numpy()
    if missing.any():
        raise DataError(
            f"{p}: target column {target!r} has {int(missing.sum())} missing value(s) "
            f"({src.where(np.nonzero(missing)[0])}); every row needs a label here: drop or "
            "label those rows (to pick rows to label, use metaal query)"
        )
    counts = labels.value_counts()
    if len(counts) < 2:
        raise DataError(
            f"{p}: target column {target!r} has a single class ({counts.index[0]!r}); "
            "active learning needs labelled rows of at least two classes"
        )
    n = len(labels)
    if n < min_split_rows():
        raise DataError(
            f"{p}: only {n} rows: too few to split into pool, validation and test; at least "
            f"{min_split_rows()} are needed ({HOLDOUT_MIN_ROWS} validation, "
            f"{HOLDOUT_MIN_ROWS} test, {POOL_MIN_ROWS} pool)"
        )
    needed = min_class_rows(n)
    small = sorted((count, name) for name, count in counts.items() if count < needed)
    if small:
        shown = small[:10]
        named = ", ".join(
            f"{name!r} ({count} row{'' if count == 1 else 's'})" for count, name in shown
        )
        more = f" and {len(small) - 10} more" if len(small) > 10 else ""
        raise DataError(
            f"{p}: target column {target!r} has classes too small to split: {named}{more}; "
            f"with {n} rows each class needs at least {needed}, to expect one row in each of "
            "pool, validation and test. Drop those rows or merge them into other classes"
        )


def load_file(
    path: str | Path,
    target: str | None = None,
    drop: Sequence[str] = (),
    id_column: str | None = None,
) -> Task:
    """Read a fully labelled CSV, TSV or NPZ file into a `Task`.

    CSV / TSV need `target`, the label column's name. NPZ files hold arrays
    `X` (rows, features) and `y` (rows,); `target` may name another label
    array. Columns in `drop` are left out; `id_column`'s values become the
    task's `ids` and not a feature. Every row needs a label; for partly
    labelled files use `load_labelled_and_unlabelled`. The checks are in the
    module docstring.
    """
    df, target, src, ids = _read(path, target, drop, id_column)
    _check_features(df, target, src)
    _check_splittable(_label_strings(df[target]), target, src)
    task = encode_frame(df, target, name=str(src.path), source=f"file:{src.path}")
    return dataclasses.replace(task, ids=ids)


def load_labelled_and_unlabelled(
    path: str | Path,
    target: str | None = None,
    drop: Sequence[str] = (),
    id_column: str | None = None,
) -> QueryData:
    """Read a partly labelled file for querying: rows with an empty label are the pool.

    Returns a `QueryData`, which unpacks as `(X, y, class_names)`: `X`
    float64 (rows, encoded features) for every row, missing values still
    NaN; `y` float64 class indices into `class_names`, NaN where the label is
    empty (scikit-activeml's convention). Its `ids` hold `id_column`'s value
    of each row; `drop` and `id_column` are as in `load_file`. At least one
    row must be unlabelled; there may be any number of labelled rows, even
    none.
    """
    df, target, src, ids = _read(path, target, drop, id_column)
    p = src.path
    _check_features(df, target, src)
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
    return QueryData(X, y, class_names, ids)
