"""The one interface every backend implements, and the per-instance model output it returns.

Routes and batch jobs talk to a `Predictor`; they never import TensorFlow or gRPC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from service.instances import ImageInput
from service.savedmodel import ModelInfo
from service.schemas import PredictParameters

# The SavedModel's signatures the predictors call (model_export/signatures.py): the policy
# chooses the glimpses, or the caller gives them.
SIGNATURE = "serving_options"
BOXES_SIGNATURE = "serving_boxes"

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
    for signature, wanted in ((SIGNATURE, False), (BOXES_SIGNATURE, True)):
        items = [i for i, o in enumerate(options) if (o.boxes is not None) == wanted]
        if not items:
            continue
        inputs = {
            "input_image_bytes": [data[i] for i in items],
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
    annotated_png: bytes
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
                annotated_png=bytes(row["annotated_image_bytes"]),
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


class Served(Protocol):
    """Whoever will do admitted work (a predictor, or the explainer's model copy): what
    admission (service/serving.py) asks before any work starts."""

    def is_ready(self) -> bool: ...

    def served_version(self, version: int | None) -> int | None:
        """The version that answers a request for `version` (None: the default; None back:
        whichever the model server picks); ModelNotFound for one not served, NotReady before
        loading."""

    def model_info(self) -> ModelInfo | None:
        """What the served model says about itself (its limits); None if the gateway cannot
        know, and then the model checks its own limits."""


class Predictor(Served, Protocol):
    """A model behind the gateway: in-process (embedded) or remote (TF Serving)."""

    model_name: str

    async def start(self) -> None:
        """Load or connect, then warm up with a real inference; ready only afterwards."""

    async def close(self) -> None:
        """Finish what was accepted, then release resources."""

    async def check(self) -> None:
        """Raise BackendUnavailable if the model cannot serve right now (readiness)."""

    async def predict(
        self, images: list[ImageInput], options: list[Options]
    ) -> list[ModelOutput]: ...

    async def run_signature(
        self, version: int | None, signature: str, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """One call of any signature the model has, on exactly these tensors, outside the
        micro-batcher: TF Serving's own request forms (columnar, `signature_name`) answer
        exactly what the SavedModel returns. InvalidInput when the model refuses them."""

    async def status(self, version: int | None) -> dict[str, Any]:
        """TF Serving's GetModelStatus body."""

    async def metadata(self, version: int | str | None) -> dict[str, Any]:
        """TF Serving's GetModelMetadata body. A str is a version label the gateway does not
        configure: the model server resolves it (the body names its version) or refuses it
        with InvalidInput, as TF Serving does; this is how labels are resolved
        (service/versions.py)."""
