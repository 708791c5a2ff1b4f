"""`metaal embed`: turn your own texts or images into an NPZ of pretrained embeddings.

    metaal embed --data reviews.csv --text review --target label --out reviews.npz
    metaal embed --images photos/ --out photos.npz

Texts: one row per text; the ``--text`` column is embedded (MiniLM by
default), the ``--target`` column holds the labels, and an empty target cell
marks an unlabelled row. Images: ``FOLDER`` holds one subfolder per class
with its images (searched recursively; names starting with ``.``, such as
``.DS_Store``, are skipped); EfficientNet-Lite0 by default. ``--encoder`` takes
another registered name or a folder of weights.

The NPZ holds ``X`` (rows, width) float32 embeddings, ``y`` float64 class
indices into ``class_names`` with NaN for an unlabelled row, ``class_names``,
``encoder`` and, for images, ``path`` (each image's path relative to
``FOLDER``). `metaal evaluate --data`, `metaal query --data` (with ``--id
path`` to name the images) and `metaal.data.load_file` read it.

Embeddings are cached (``--cache-dir``, default ``$METAAL_CACHE`` or
``~/.cache/metaal/embeddings``), so rerunning on the same items is quick.
Every input is checked before anything is embedded.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

#: The default encoder for each kind of input.
DEFAULT_ENCODERS = {"text": "minilm", "image": "efficientnet-lite0"}


def labels_to_y(labels: Sequence[str | None]) -> tuple[np.ndarray, tuple[str, ...]]:
    """(y, class_names): float64 indices into the sorted names, NaN where a label is None."""
    class_names = tuple(sorted({label for label in labels if label is not None}))
    index = {name: i for i, name in enumerate(class_names)}
    y = np.array([np.nan if label is None else index[label] for label in labels], np.float64)
    return y, class_names


def read_texts(
    path: str | os.PathLike, text: str, target: str
) -> tuple[list[str], list[str | None]]:
    """Texts of column ``text`` and labels of ``target`` (None where empty) from a CSV / TSV.

    Raises `DataError` for a missing file or column, or an empty text cell.
    """
    from metaal.data import DataError
    from metaal.data.files import read_table

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found; check the path")
    if p.suffix.lower() not in (".csv", ".tsv"):
        raise DataError(f"{p}: --data takes a .csv or .tsv file of texts; got {p.suffix!r}")
    df, src = read_table(p, as_text=[text, target])
    missing = [c for c in (text, target) if c not in df.columns]
    if missing:
        raise DataError(
            f"{p}: column(s) {missing} not found; columns are {list(df.columns)}. "
            "Name the text column with --text and the label column with --target"
        )
    if text == target:
        raise DataError(f"{p}: --text and --target are both {text!r}; name two columns")
    if df.empty:
        raise DataError(f"{p}: the file has a header but no data rows")
    empty = np.nonzero(df[text].isna().to_numpy())[0]
    if len(empty):
        raise DataError(
            f"{p}: text column {text!r} is empty in {len(empty)} row(s) ({src.where(empty)}); "
            "write a text there or drop those rows"
        )
    # read_table made blank cells NaN: those rows are unlabelled.
    labels = [None if pd.isna(v) else str(v).strip() for v in df[target]]
    return df[text].astype(str).tolist(), labels


def list_images(folder: str | os.PathLike) -> tuple[list[Path], list[str]]:
    """Image files under ``folder`` and their classes (the subfolder each one is in).

    Files are sorted within each class; names starting with ``.`` are
    skipped. Raises `DataError` for a missing folder, a file outside the
    class subfolders, or a class subfolder without files. Whether each file
    is an image is the encoder's check (before it embeds anything).
    """
    from metaal.data import DataError

    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; pass a folder with one subfolder per class")
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    loose = [p.name for p in entries if not p.is_dir()]
    if loose:
        raise DataError(
            f"{root}: {', '.join(loose[:3])} {'is' if len(loose) == 1 else 'are'} not in a class "
            "subfolder; put every image in the subfolder named after its class"
        )
    if not entries:
        raise DataError(f"{root}: no class subfolders; put each class's images in its own one")
    paths, labels = [], []
    for class_dir in entries:
        files = sorted(
            p
            for p in class_dir.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
        if not files:
            raise DataError(f"{class_dir}: class folder without files; add images or remove it")
        paths += files
        labels += [class_dir.name] * len(files)
    return paths, labels


def check_out(out: str | os.PathLike, overwrite: bool) -> Path:
    """The output path, after refusing a name without .npz or an existing file."""
    from metaal.data import DataError

    path = Path(out)
    if path.suffix.lower() != ".npz":
        raise DataError(f"--out {path}: name the output file .npz (numpy would append it)")
    if path.exists() and not overwrite:
        raise DataError(f"--out {path} exists; pass --overwrite to replace it, or another name")
    if not path.parent.is_dir():
        raise DataError(f"--out {path}: folder {path.parent} does not exist")
    return path


def embed(
    items: Sequence,
    kind: str,
    encoder: str | None = None,
    batch_size: int = 32,
    cache: str | os.PathLike | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, str]:
    """(embeddings, encoder name) of ``items`` by ``encoder`` (default: `DEFAULT_ENCODERS`).

    ``cache`` is the embedding cache folder (default `metaal.data.fm.cache_dir()`).
    Raises `EncoderError` for an encoder of the wrong kind, a bad item or a bad cache file.
    """
    from metaal.data.fm import cache_dir
    from metaal.encoders import EncoderError, embed_cached, load_encoder

    model = load_encoder(encoder or DEFAULT_ENCODERS[kind])
    if model.kind != kind:
        raise EncoderError(
            f"encoder {model.name!r} embeds {model.kind}s, but the input is {kind}s: pass "
            f"--encoder {DEFAULT_ENCODERS[kind]} or another {kind} encoder"
        )
    X = embed_cached(
        model,
        items,
        cache_dir() if cache is None else cache,
        key_extra="metaal-embed",
        batch_size=batch_size,
        progress=progress,
    )
    return X, model.name


def write_npz(out: Path, X: np.ndarray, labels: Sequence[str | None], **extra) -> None:
    """Write ``X``, ``y``, ``class_names`` and ``extra`` arrays to ``out`` (via a temp file)."""
    y, class_names = labels_to_y(labels)
    arrays = {"X": X.astype(np.float32), "y": y, "class_names": np.array(class_names, str)}
    arrays.update({k: np.asarray(v, str) for k, v in extra.items()})
    # Write then rename, so an interrupted run never leaves a half-written --out file.
    with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".npz", delete=False) as f:
        np.savez(f, **arrays)
    os.replace(f.name, out)


def add_arguments(parser: argparse.ArgumentParser, argv: Sequence[str] = ()) -> None:
    """Options of `metaal embed`."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", metavar="FILE", help="CSV / TSV file with a text column")
    source.add_argument("--images", metavar="FOLDER", help="folder with one subfolder per class")
    parser.add_argument("--text", metavar="COLUMN", help="the column of texts (with --data)")
    parser.add_argument(
        "--target",
        metavar="COLUMN",
        help="the label column (with --data); an empty cell marks an unlabelled row",
    )
    parser.add_argument("--out", required=True, help="the .npz file to write")
    parser.add_argument(
        "--encoder",
        metavar="NAME_OR_PATH",
        help="a registered encoder (minilm, efficientnet-lite0) or a folder of weights "
        "(default: minilm for texts, efficientnet-lite0 for images)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="items per forward pass")
    parser.add_argument(
        "--cache-dir",
        help="embedding cache folder (default: $METAAL_CACHE or ~/.cache/metaal/embeddings)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def main(args: argparse.Namespace) -> int:
    """Embed the input and write the NPZ; returns the exit code (2 on bad input)."""
    from metaal.data import DataError
    from metaal.encoders import EncoderError

    try:
        out = check_out(args.out, args.overwrite)
        extra = {}
        if args.data:
            if not args.text or not args.target:
                raise DataError("--data needs --text COLUMN (the texts) and --target COLUMN")
            items, labels = read_texts(args.data, args.text, args.target)
            kind = "text"
        else:
            if args.text or args.target:
                raise DataError("--text and --target name columns of --data; images take none")
            paths, labels = list_images(args.images)
            items, kind = [str(p) for p in paths], "image"
            extra["path"] = [str(p.relative_to(args.images)) for p in paths]
        X, name = embed(items, kind, args.encoder, args.batch_size, args.cache_dir)
        write_npz(out, X, labels, encoder=name, **extra)
    except (DataError, EncoderError) as err:
        print(f"metaal embed: error: {err}", file=sys.stderr)
        return 2
    n_unlabelled = sum(label is None for label in labels)
    print(
        f"{len(items)} {kind}s embedded by {name} ({X.shape[1]}-d), "
        f"{len(set(labels) - {None})} classes, {n_unlabelled} unlabelled: written to {out}"
    )
    return 0
