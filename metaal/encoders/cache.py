"""An on-disk cache of embeddings, keyed by encoder, weights, items and preprocessing.

One ``.npz`` per (encoder name, items, settings, ``key_extra``) holds the
embeddings and the full key as JSON. The file name leaves the weights out on
purpose: when the same encoder name points at other weights (a fine-tuned
folder, an updated package), the old file is found and refused with a clear
error instead of being silently reused or silently shadowed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metaal.encoders.base import Encoder, EncoderError, item_list

#: Bumped when the file layout changes, so old files are refused, not misread.
FORMAT = 1


def cache_key(encoder: Encoder, items: Sequence[Any], key_extra: str = "") -> dict[str, Any]:
    """The JSON-able key of ``encoder``'s embeddings of ``items``."""
    key = {
        "format": FORMAT,
        "encoder": encoder.name,
        "weights_sha256": encoder.fingerprint,
        "settings": encoder.settings,
        "items_sha256": encoder.digest(items),
        "n_items": len(items),
        "key_extra": key_extra,
    }
    # Round-trip so tuples compare equal to the lists read back from disk.
    return json.loads(json.dumps(key, sort_keys=True))


def cache_path(cache_dir: str | os.PathLike, key: dict[str, Any]) -> Path:
    """Where the embeddings of ``key`` live under ``cache_dir``."""
    named = {k: key[k] for k in ("format", "settings", "items_sha256", "n_items", "key_extra")}
    digest = hashlib.sha256(json.dumps(named, sort_keys=True).encode()).hexdigest()[:20]
    return Path(cache_dir) / f"{key['encoder']}-{digest}.npz"


def _read(path: Path, key: dict[str, Any]) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = json.loads(str(data["key"]))
            embeddings = data["embeddings"]
    except (OSError, KeyError, ValueError) as error:
        raise EncoderError(
            f"cache file {str(path)!r} is not an embedding cache ({error}): delete it"
        ) from None
    if stored != key:
        differs = ", ".join(
            f"{field} {stored.get(field)!r} (now {key[field]!r})"
            for field in key
            if stored.get(field) != key[field]
        )
        raise EncoderError(
            f"cache file {str(path)!r} was written by another encoder or for other inputs: "
            f"{differs}; delete the file or pass another cache_dir"
        )
    return embeddings


def embed_cached(
    encoder: Encoder,
    items: Sequence[Any],
    cache_dir: str | os.PathLike,
    key_extra: str = "",
    batch_size: int = 32,
    progress: bool = True,
) -> np.ndarray:
    """``encoder.embed(items)``, read from ``cache_dir`` when it holds them, written there if not.

    ``key_extra`` is added to the key (e.g. a data set's name and version).
    Raises `EncoderError` on a cache file written by another encoder (or other
    weights) under the same name.
    """
    items = item_list(items)
    key = cache_key(encoder, items, key_extra)
    path = cache_path(cache_dir, key)
    if path.exists():
        return _read(path, key)
    embeddings = encoder.embed(items, batch_size=batch_size, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so an interrupted run never leaves a truncated cache file.
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as f:
        np.savez(f, embeddings=embeddings, key=np.array(json.dumps(key, sort_keys=True)))
    os.replace(f.name, path)
    return embeddings
