"""The SavedModel on disk, as the service reads it: versions, signatures, what the model says
about itself, TF Serving's status and metadata bodies, and the one loaded copy per version.

The SavedModel is the contract between model_export and the service, so this module is the
one place that knows its layout. Backends, explanations and tests all read it from here; none
imports another's helpers.
"""

from __future__ import annotations

import gc
import io
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import json_format

from service.errors import ModelNotFound, NotReady
from service.geometry import VIEW_SIZE
from service.instances import ImageInput

MODEL_INFO = "model_info.json"


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


def resolve_version(model_base: Path, name: str, version: int | None) -> int:
    available = versions(model_base)
    if not available:
        raise ModelNotFound(f"Could not find any versions of model {name}")
    if version is None:
        return available[0]
    if version not in available:
        raise ModelNotFound(f"Could not find version {version} of model {name}")
    return version


@dataclass(frozen=True)
class ModelInfo:
    """What an export says about itself (assets/model_info.json, written by `glimpse export`).

    The gateway checks requests against these instead of re-typing the model's limits, so a
    model exported with other limits is served with its own.
    """

    view_size: int
    preprocessing: str
    max_glimpses: int
    max_top_k: int

    @classmethod
    def read(cls, saved_model_dir: Path) -> ModelInfo:
        """The export's model info; NotReady naming what is wrong when it cannot be served."""
        path = Path(saved_model_dir) / "assets" / MODEL_INFO
        if not path.exists():
            raise NotReady(
                f"model version {Path(saved_model_dir).name} has no assets/{MODEL_INFO}:"
                " re-export it with this version of `glimpse export`"
            )
        raw = json.loads(path.read_text())
        config = raw["config"]
        info = cls(
            view_size=int(raw["view_size"]),
            preprocessing=str(raw.get("preprocessing", "")),
            max_glimpses=int(config["max_glimpses"]),
            max_top_k=int(config["max_top_k"]),
        )
        if info.view_size != VIEW_SIZE:
            # Box validation, coverage and the annotated image are computed in a 224 view.
            raise NotReady(
                f"model version {Path(saved_model_dir).name} classifies a {info.view_size}-pixel"
                f" view; this gateway serves {VIEW_SIZE}-pixel views only"
            )
        return info


class LoadedModels:
    """One `tf.saved_model.load` per version directory, shared by whoever asks.

    With the embedded backend the predictor and the explainer use the same loaded SavedModel
    (its serving and explain signatures), so its weights are in memory once, not twice.
    Concrete functions may be called from several threads at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: dict[Path, Any] = {}

    def load(self, saved_model_dir: Path) -> Any:
        key = Path(saved_model_dir).resolve()
        with self._lock:
            if key not in self._loaded:
                import tensorflow as tf

                self._loaded[key] = tf.saved_model.load(str(key))
            return self._loaded[key]

    def clear(self) -> None:
        with self._lock:
            self._loaded.clear()


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


def status_body(name: str, served: list[int]) -> dict[str, Any]:
    """TF Serving's GetModelStatus body for the versions served."""
    return {
        "model_version_status": [
            {
                "version": str(v),
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for v in served
        ]
    }


def metadata_body(name: str, version: int, signature_map) -> dict[str, Any]:
    """TF Serving's GetModelMetadata body: the signature defs."""
    return {
        "model_spec": {"name": name, "signature_name": "", "version": str(version)},
        "metadata": {"signature_def": message_to_dict(signature_map)},
    }
