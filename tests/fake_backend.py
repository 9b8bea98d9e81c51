"""A Predictor with no TensorFlow behind it, for the fast tier of route tests.

It implements service.predictor.Predictor (tests/test_predictor_protocol.py holds it to that),
so the routes, admission, batching-free error paths and response building run exactly as in
production while the "model" answers instantly from fixed outputs, or fails on demand.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.errors import InvalidInput, ModelNotFound, NotReady
from service.instances import ImageInput
from service.predictor import ModelOutput, Options
from service.savedmodel import ModelInfo, status_body

# A 1x1 PNG: what the fake model returns as the annotated image.
PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
    "0000000c4944415478da63f8cfc0000003010100c9fe92ef0000000049454e44ae426082"
)
INFO = ModelInfo(
    view_size=224,
    preprocessing="shorter side resized to 256 (bicubic), central 224x224 crop",
    max_glimpses=16,
    max_top_k=20,
)


@dataclass
class FakePredictor:
    """Answers every image with glimpses on a diagonal and classes 0..k-1.

    `fail_with` makes every predict raise that error (a domain error, say); `delay_s` makes it
    slow; `started` can be held to keep the model "loading"; `calls` records what was asked.
    """

    model_name: str = "saccader"
    version: int = 1
    info: ModelInfo | None = INFO
    fail_with: BaseException | None = None
    fail_start: BaseException | None = None
    delay_s: float = 0.0
    hold_start: asyncio.Event | None = None
    calls: list[tuple[list[ImageInput], list[Options]]] = field(default_factory=list)
    # Version labels the "model server" knows itself (TF Serving's models.config): the
    # gateway asks for those it does not configure (service/versions.py).
    labels: dict[str, int] = field(default_factory=dict)
    closed: bool = False
    _ready: bool = False

    async def start(self) -> None:
        if self.hold_start is not None:
            await self.hold_start.wait()
        if self.fail_start is not None:
            raise self.fail_start
        self._ready = True

    async def close(self) -> None:
        self._ready = False
        self.closed = True

    def is_ready(self) -> bool:
        return self._ready

    def served_version(self, version: int | None) -> int | None:
        if not self._ready:
            raise NotReady("model is not loaded yet")
        if version is not None and version != self.version:
            raise ModelNotFound(f"Could not find version {version} of model {self.model_name}")
        return self.version

    def model_info(self) -> ModelInfo | None:
        return self.info

    async def check(self) -> None:
        if not self._ready:
            raise NotReady("model is not loaded yet")

    async def predict(self, images: list[ImageInput], options: list[Options]) -> list[ModelOutput]:
        self.calls.append((images, options))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_with is not None:
            raise self.fail_with
        return [output(image, o) for image, o in zip(images, options, strict=True)]

    async def status(self, version: int | None) -> dict[str, Any]:
        return status_body(self.model_name, [self.served_version(version)])

    async def metadata(self, version: int | str | None) -> dict[str, Any]:
        if isinstance(version, str):  # a label, resolved as TF Serving does
            if version not in self.labels:
                raise InvalidInput(f"Unrecognized servable version label: {version}")
            version = self.labels[version]
        v = self.served_version(version)
        return {
            "model_spec": {"name": self.model_name, "signature_name": "", "version": str(v)},
            "metadata": {"signature_def": {"signature_def": SIGNATURES}},
        }

    async def run_signature(
        self, version: int | None, signature: str, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """`double`: y = 2x and its sum per row; `sizes`: each image's byte count, with its
        first byte as `head_bytes`."""
        self.served_version(version)
        if self.fail_with is not None:
            raise self.fail_with
        if signature == "double":
            x = inputs["x"]
            return {"y": 2 * x, "total": (2 * x).reshape(len(x), -1).sum(1)}
        images = inputs["input_image_bytes"]
        return {
            "size": np.array([len(b) for b in images], np.int64),
            "head_bytes": np.array([b[:1] for b in images], object),
        }


def _tensor(dtype: str, *dims: int) -> dict[str, Any]:
    return {
        "dtype": dtype,
        "tensor_shape": {
            "dim": [{"size": str(d), "name": ""} for d in dims],
            "unknown_rank": False,
        },
        "name": "",
    }


# Two signatures in TF Serving's metadata shape, for the tensor forms (columnar, signature_name).
SIGNATURES = {
    "double": {
        "inputs": {"x": _tensor("DT_FLOAT", -1, 2)},
        "outputs": {"y": _tensor("DT_FLOAT", -1, 2), "total": _tensor("DT_FLOAT", -1)},
        "method_name": "tensorflow/serving/predict",
    },
    "sizes": {
        "inputs": {"input_image_bytes": _tensor("DT_STRING", -1)},
        "outputs": {"size": _tensor("DT_INT64", -1), "head_bytes": _tensor("DT_STRING", -1)},
        "method_name": "tensorflow/serving/predict",
    },
}


def output(image: ImageInput, options: Options) -> ModelOutput:
    """The fake model's answer: deterministic, and in the shapes the real signature returns."""
    k, t = options.top_k, options.num_glimpses
    if options.boxes is not None:
        boxes = np.array(options.boxes, float)
    else:
        boxes = np.array([[16.0 * i, 16.0 * i, 16.0 * i + 64, 16.0 * i + 64] for i in range(t)])
    height, width = image.original_size
    side = min(height, width) * 224 / 256
    crop = [(height - side) / 2, (width - side) / 2, (height + side) / 2, (width + side) / 2]
    raw = {
        "classes": np.arange(k, dtype=np.int32),
        "scores": np.linspace(0.5, 0.01, k).astype(np.float32),
        "class_names": np.array([f"class {c}".encode() for c in range(k)], object),
        "glimpse_boxes": boxes.astype(np.float32),
        "num_glimpses": np.int32(t),
        "coverage": np.float32(0.25),
        "annotated_image_bytes": np.array(PNG_1X1, object),
        "crop_box": np.array(crop, np.float32),
    }
    return ModelOutput(
        classes=np.arange(k),
        scores=np.linspace(0.5, 0.01, k),
        class_names=[f"class {c}" for c in range(k)],
        synsets=[f"n{c:08d}" for c in range(k)],
        glimpse_boxes=boxes,
        coverage=0.25,
        full_image_class=0,
        full_image_score=0.75,
        full_image_name="class 0",
        full_image_synset="n00000000",
        crop_box=np.array(crop),
        image_size=(height, width),
        annotated_png=PNG_1X1,
        signature_outputs=raw,
    )
