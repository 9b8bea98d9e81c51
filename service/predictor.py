"""The one interface every backend implements, and the per-instance model output it returns.

Routes and batch jobs talk to a `Predictor`; they never import TensorFlow or gRPC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from model_export.contract import IMAGE_INPUT, SERVING_BOXES, SERVING_OPTIONS, ModelInfo
from service.instances import ImageInput
from service.schemas import PredictParameters

Box = tuple[float, float, float, float]  # ymin, xmin, ymax, xmax in 224-view pixels


@dataclass(frozen=True)
class Options:
    num_glimpses: int
    top_k: int
    boxes: tuple[Box, ...] | None = None  # the caller's glimpses; num_glimpses == len(boxes)

    @classmethod
    def of(cls, params: PredictParameters) -> Options:
        boxes = params.glimpse_boxes
        given = None if boxes is None else tuple(tuple(b) for b in boxes)
        return cls(params.num_glimpses, params.top_k, given)  # type: ignore[arg-type]


# A warm-up that traces both signatures: the first real request must not pay for either.
WARMUP_OPTIONS = (Options(6, 5), Options(1, 1, ((80.0, 80.0, 144.0, 144.0),)))


@dataclass(frozen=True)
class ModelCall:
    """One signature call for part of a micro-batch: which items, and their input tensors."""

    signature: str
    items: list[int]
    inputs: dict[str, np.ndarray | list[bytes]]


def model_calls(data: list[bytes], options: list[Options]) -> list[ModelCall]:
    """Split a micro-batch by signature: policy glimpses in one call, given boxes in another.

    Given boxes are padded to the longest list in the call (the padding is never read: each
    row's num_glimpses says how many are real)."""
    calls = []
    for signature, wanted in ((SERVING_OPTIONS, False), (SERVING_BOXES, True)):
        items = [i for i, o in enumerate(options) if (o.boxes is not None) == wanted]
        if not items:
            continue
        inputs = {
            IMAGE_INPUT: [data[i] for i in items],
            "num_glimpses": np.array([options[i].num_glimpses for i in items], np.int32),
            "top_k": np.array([options[i].top_k for i in items], np.int32),
        }
        if wanted:
            longest = max(len(options[i].boxes or ()) for i in items)
            boxes = np.zeros((len(items), longest, 4), np.float32)
            for row, i in enumerate(items):
                given = options[i].boxes or ()
                boxes[row, : len(given)] = given
            inputs["glimpse_boxes"] = boxes
        calls.append(ModelCall(signature, items, inputs))
    return calls


@dataclass(frozen=True)
class ModelOutput:
    """One instance's slice of the signature outputs, padding removed."""

    classes: np.ndarray  # [k] int
    scores: np.ndarray  # [k]
    class_names: list[str]
    synsets: list[str]
    glimpse_boxes: np.ndarray  # [T, 4] view pixels, visiting order
    coverage: float
    full_image_class: int
    full_image_score: float
    full_image_name: str
    full_image_synset: str
    crop_box: np.ndarray  # [4] original pixels
    image_size: tuple[int, int]
    annotated_image: bytes  # JPEG or PNG, as the model encodes it (its first bytes tell)
    # Every output of the signature for this instance, as TF Serving would return its row
    # (padding removed): the gateway's answers carry these keys beside its labelled fields.
    signature_outputs: dict[str, np.ndarray] = field(default_factory=dict)


# Outputs padded to the batch's largest top_k / num_glimpses (model_export/signatures.py).
_TOP_K_AXIS = frozenset({"classes", "scores", "class_names", "synsets"})
_GLIMPSE_AXIS = frozenset({"glimpse_boxes"})


def _row(name: str, value: np.ndarray, k: int, t: int) -> np.ndarray:
    if name in _TOP_K_AXIS:
        return value[:k]
    if name in _GLIMPSE_AXIS:
        return value[:t]
    return value


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def split_outputs(outputs: dict[str, np.ndarray], options: list[Options]) -> list[ModelOutput]:
    """Batched signature outputs -> one ModelOutput per instance (shared by every backend)."""
    results = []
    for i, opt in enumerate(options):
        row = {n: _row(n, v[i], opt.top_k, opt.num_glimpses) for n, v in outputs.items()}
        results.append(
            ModelOutput(
                classes=row["classes"].astype(int),
                scores=row["scores"].astype(float),
                class_names=[_text(v) for v in row["class_names"]],
                synsets=[_text(v) for v in row["synsets"]],
                glimpse_boxes=row["glimpse_boxes"].astype(float),
                coverage=float(row["coverage"]),
                full_image_class=int(row["full_image_class"]),
                full_image_score=float(row["full_image_score"]),
                full_image_name=_text(row["full_image_name"]),
                full_image_synset=_text(row["full_image_synset"]),
                crop_box=row["crop_box"].astype(float),
                image_size=(int(row["image_size"][0]), int(row["image_size"][1])),
                annotated_image=bytes(row["annotated_image_bytes"]),
                signature_outputs=row,
            )
        )
    return results


def assemble(
    calls: list[ModelCall], outputs: list[dict[str, np.ndarray]], options: list[Options]
) -> list[ModelOutput]:
    """Each call's batched outputs -> one ModelOutput per item, in the micro-batch's order."""
    results: dict[int, ModelOutput] = {}
    for call, out in zip(calls, outputs, strict=True):
        split = split_outputs(out, [options[i] for i in call.items])
        results.update(zip(call.items, split, strict=True))
    return [results[i] for i in range(len(options))]


class Predictor(Protocol):
    """One version of one model: in-process (embedded) or in TF Serving. It runs what it is
    given at once; queueing, batching and turns are the data plane's (service/model_runner.py),
    so every backend is scheduled alike."""

    model_name: str
    version: int

    async def load(self) -> None:
        """Load or connect; the caller warms it up with a real inference before serving."""

    async def close(self) -> None:
        """Release what was loaded (the caller has drained the requests)."""

    def model_info(self) -> ModelInfo | None:
        """What the version says about itself (its limits); None if the gateway cannot know,
        and then the model checks its own limits."""

    def loaded(self) -> Any | None:
        """The loaded SavedModel when the version runs in this process (its explanations
        share it), else None (they load the gateway's local copy)."""

    async def metadata(self) -> dict[str, Any]:
        """TF Serving's GetModelMetadata body for this version (the signatures)."""

    async def run_batch(
        self, items: list[tuple[ImageInput, Options]]
    ) -> list[ModelOutput | BaseException]:
        """One micro-batch of the labelled path: an output per item, or the error that item
        alone caused (an image the model cannot read)."""

    async def run_signature(
        self, signature: str, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """One call of any signature the model has, on exactly these tensors: tensor-form
        requests answer exactly what the SavedModel returns. InvalidInput when the model
        refuses them."""
