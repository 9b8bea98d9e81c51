"""The SavedModel on disk, as the service reads it: versions, signatures, TF Serving's status
and metadata bodies, loading, and keeping loaded models out of the garbage collector's walks.

What the export promises (signature names, assets, model_info) is model_export/contract.py;
this module is where the service reads a version folder. Backends, explanations and tests
read it from here; none imports another's helpers.
"""

from __future__ import annotations

import gc
import io
import threading
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import json_format

from service.instances import ImageInput


def versions(model_base: Path) -> list[int]:
    """Numeric version directories that hold a SavedModel, highest first."""
    if not model_base.is_dir():
        return []
    found = [
        int(p.name)
        for p in model_base.iterdir()
        if p.is_dir() and p.name.isdigit() and (p / "saved_model.pb").exists()
    ]
    return sorted(found, reverse=True)


def evaluation_file(version_folder: Path) -> Path:
    from model_export.training.evaluation import EVALUATION_DIR, EVALUATION_JSON

    return version_folder / EVALUATION_DIR / EVALUATION_JSON


def evaluation(version_folder: Path) -> dict[str, Any] | None:
    """The version's evaluation on its test split (Vertex AI's ModelEvaluation body, which
    `glimpse train` writes beside the SavedModel), or None when it has none."""
    from model_export.training import evaluation as written

    if not evaluation_file(version_folder).is_file():
        return None
    try:
        body = written.read(version_folder)
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None


# Every version folder loaded in this process, by where it is and which export it holds.
_LOADED: dict[tuple[Path, int, int], Any] = {}
_LOADED_LOCK = threading.Lock()


def load(saved_model_dir: Path) -> Any:
    """The version folder's SavedModel, loaded once for the life of the process.

    TensorFlow keeps most of a loaded SavedModel's memory after the object is dropped (its
    function graphs stay registered): of the ~295 MB one Lite0 load adds, dropping it frees
    74 (three loads and drops: 670 -> 1,598 MB). So a folder loaded again (a version served
    again after a rollback, a model put back in the config, a second app in one process, as
    in the tests) reuses its first load instead of adding another; the key has
    saved_model.pb's inode and mtime, so an export written anew is loaded anew. With the
    embedded backend the predictor and the explainer of a version share the object (its
    serving and explain signatures): its weights are in memory once. Concrete functions may
    be called from several threads at once."""
    path = Path(saved_model_dir).resolve()
    stat = (path / "saved_model.pb").stat()
    key = (path, stat.st_ino, stat.st_mtime_ns)
    with _LOADED_LOCK:
        if key in _LOADED:
            return _LOADED[key]
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))  # seconds: outside the lock
    with _LOADED_LOCK:
        return _LOADED.setdefault(key, loaded)


def freeze_heap() -> None:
    """Move every object alive now (a loaded model's, its explain graphs') out of the garbage
    collector's reach; garbage is collected first, or it would be kept for good.

    A loaded TensorFlow model is ~600,000 Python objects that live as long as the process; a
    full collection walks them all, 250-400 ms with the interpreter lock held, and it comes when
    the allocation count says so: an event loop (and the health probes) paused that long at
    random. Frozen after loading, they are never walked again (gc.freeze, as CPython's docs
    advise for long-lived servers).
    """
    gc.collect()
    gc.freeze()


def warmup_image() -> ImageInput:
    """A synthetic 320x240 photo-like gradient: exercises decode, resize and the whole graph."""
    from PIL import Image

    y, x = np.mgrid[0:240, 0:320]
    rgb = np.stack([x * 255 // 319, y * 255 // 239, (x + y) * 255 // 558], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    return ImageInput("warmup", buf.getvalue(), (240, 320), None)


def signature_def_map(saved_model_dir: Path):
    """The SavedModel's SignatureDefMap proto, as TF Serving's GetModelMetadata returns it."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((saved_model_dir / "saved_model.pb").read_bytes())
    out = get_model_metadata_pb2.SignatureDefMap()
    for key, sig in sm.meta_graphs[0].signature_def.items():
        if not key.startswith("__"):  # __saved_model_init_op is not a serving signature
            out.signature_def[key].CopyFrom(sig)
    return out


def message_to_dict(message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def status_body(states: list[tuple[int, str, str | None]]) -> dict[str, Any]:
    """TF Serving's GetModelStatus body: (version, state, error or None) each, as TF Serving's
    state monitor reports them (a failed load is END with its error)."""
    return {
        "model_version_status": [
            {
                "version": str(version),
                "state": state,
                "status": {
                    "error_code": "UNKNOWN" if error else "OK",
                    "error_message": error or "",
                },
            }
            for version, state, error in states
        ]
    }


def metadata_body(name: str, version: int, signature_map) -> dict[str, Any]:
    """TF Serving's GetModelMetadata body: the signature defs."""
    return {
        "model_spec": {"name": name, "signature_name": "", "version": str(version)},
        "metadata": {"signature_def": message_to_dict(signature_map)},
    }
