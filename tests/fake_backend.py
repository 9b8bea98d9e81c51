"""A Backend with no TensorFlow behind it, for the fast tier of adapter tests.

Its predictors implement service.predictor.Predictor and it implements service.backends.Backend
(tests/test_predictor_protocol.py holds them to that), so the adapters, the data plane's
admission, scheduling and versions, batching and response building run exactly as in
production while each "model" answers instantly from fixed outputs, or fails on demand.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model_export.contract import ModelInfo
from service.errors import GlimpseError, InvalidInput
from service.instances import ImageInput
from service.model_config import ModelConfig
from service.predictor import ModelOutput, Options

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
class FakeBackend:
    """Every model answers with glimpses on a diagonal and classes 0..k-1.

    `versions` says which versions each model has ("saccader": [1] by default; a test may
    change it while the gateway runs, as a new folder would). `fail_with` makes every
    prediction raise that error; `delay_s` makes it slow; `hold_start` keeps loads waiting;
    `fail_start` fails them (`fail_versions` some); `calls` records (model, version, images,
    options) of each batch. Signature calls: `signature_calls` records (signature, rows) of
    each, `signature_delay_s` makes them slow, and `sizes` refuses an image holding REFUSE.
    """

    versions: dict[str, list[int]] = field(default_factory=lambda: {"saccader": [1]})
    info: ModelInfo | None = INFO
    fail_with: BaseException | None = None
    fail_start: BaseException | None = None
    fail_versions: dict[tuple[str, int], BaseException] = field(default_factory=dict)
    discover_error: GlimpseError | None = None
    delay_s: float = 0.0
    hold_start: asyncio.Event | None = None
    calls: list[tuple[str, int, list[ImageInput], list[Options]]] = field(default_factory=list)
    signature_calls: list[tuple[str, int]] = field(default_factory=list)
    signature_delay_s: float = 0.0
    # Version labels the "model server" knows itself (TF Serving's models.config): the
    # gateway asks for those its model config does not name.
    labels: dict[str, int] = field(default_factory=dict)
    opened: list[FakePredictor] = field(default_factory=list)
    in_process: bool = True  # False: as TF Serving, explanations need a local copy

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def discover(self, model: ModelConfig) -> list[int]:
        if self.discover_error is not None:
            raise self.discover_error
        return sorted(self.versions.get(model.name, []), reverse=True)

    def open(self, model: ModelConfig, version: int) -> FakePredictor:
        predictor = FakePredictor(self, model.name, version)
        self.opened.append(predictor)
        return predictor

    async def label(self, model: ModelConfig, label: str) -> int:
        if label not in self.labels:
            raise InvalidInput(f"Unrecognized servable version label: {label}")
        return self.labels[label]


class FakePredictor:
    """One version of a fake model."""

    def __init__(self, backend: FakeBackend, model_name: str, version: int):
        self.model_name = model_name
        self.version = version
        self._backend = backend
        self.closed = False

    async def load(self) -> None:
        if self._backend.hold_start is not None:
            await self._backend.hold_start.wait()
        failure = self._backend.fail_versions.get((self.model_name, self.version))
        if failure or self._backend.fail_start:
            raise failure or self._backend.fail_start

    async def close(self) -> None:
        self.closed = True

    def model_info(self) -> ModelInfo | None:
        return self._backend.info

    def loaded(self) -> Any | None:
        return None  # no SavedModel: the fast tier explains only as far as admission

    async def metadata(self) -> dict[str, Any]:
        return {
            "model_spec": {
                "name": self.model_name,
                "signature_name": "",
                "version": str(self.version),
            },
            "metadata": {"signature_def": {"signature_def": SIGNATURES}},
        }

    async def run_batch(
        self, items: list[tuple[ImageInput, Options]]
    ) -> list[ModelOutput | BaseException]:
        images, options = [i for i, _ in items], [o for _, o in items]
        if images[0].key != "warmup":
            self._backend.calls.append((self.model_name, self.version, images, options))
        if self._backend.delay_s:
            await asyncio.sleep(self._backend.delay_s)
        if self._backend.fail_with is not None and images[0].key != "warmup":
            raise self._backend.fail_with
        return [output(image, o) for image, o in items]

    async def run_signature(
        self, signature: str, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """`double`: y = 2x and its sum per row; `sizes`: each image's byte count, with its
        first byte as `head_bytes`."""
        if self._backend.fail_with is not None:
            raise self._backend.fail_with
        self._backend.signature_calls.append((signature, len(next(iter(inputs.values())))))
        if self._backend.signature_delay_s:
            await asyncio.sleep(self._backend.signature_delay_s)
        if signature == "double":
            x = inputs["x"]
            return {"y": 2 * x, "total": (2 * x).reshape(len(x), -1).sum(1)}
        images = inputs["input_image_bytes"]
        if any(b"REFUSE" in bytes(b) for b in images):
            raise InvalidInput("the model could not decode the image: REFUSE")
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
        annotated_image=PNG_1X1,
        signature_outputs=raw,
    )
