"""The one interface every backend implements, and the per-instance model output it returns.

Routes and batch jobs talk to a `Predictor`; they never import TensorFlow or gRPC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from service.instances import ImageInput

# Inputs and outputs of the SavedModel's `serving_options` signature (model_export/signatures.py).
SIGNATURE = "serving_options"


@dataclass(frozen=True)
class Options:
    num_glimpses: int
    top_k: int


@dataclass(frozen=True)
class ModelOutput:
    """One instance's slice of the signature outputs, padding removed."""

    classes: np.ndarray  # [k] int
    scores: np.ndarray  # [k]
    class_names: list[str]
    synsets: list[str]
    glimpse_boxes: np.ndarray  # [T, 4] view pixels, visiting order
    glimpse_scores: np.ndarray  # [T]
    coverage: float
    full_image_class: int
    full_image_score: float
    full_image_name: str
    full_image_synset: str
    crop_box: np.ndarray  # [4] original pixels
    image_size: tuple[int, int]
    annotated_png: bytes


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def split_outputs(outputs: dict[str, np.ndarray], options: list[Options]) -> list[ModelOutput]:
    """Batched signature outputs -> one ModelOutput per instance (shared by every backend)."""
    results = []
    for i, opt in enumerate(options):
        k, t = opt.top_k, opt.num_glimpses
        results.append(
            ModelOutput(
                classes=outputs["classes"][i, :k].astype(int),
                scores=outputs["scores"][i, :k].astype(float),
                class_names=[_text(v) for v in outputs["class_names"][i, :k]],
                synsets=[_text(v) for v in outputs["synsets"][i, :k]],
                glimpse_boxes=outputs["glimpse_boxes"][i, :t].astype(float),
                glimpse_scores=outputs["glimpse_scores"][i, :t].astype(float),
                coverage=float(outputs["coverage"][i]),
                full_image_class=int(outputs["full_image_class"][i]),
                full_image_score=float(outputs["full_image_score"][i]),
                full_image_name=_text(outputs["full_image_name"][i]),
                full_image_synset=_text(outputs["full_image_synset"][i]),
                crop_box=outputs["crop_box"][i].astype(float),
                image_size=(int(outputs["image_size"][i][0]), int(outputs["image_size"][i][1])),
                annotated_png=bytes(outputs["annotated_image_bytes"][i]),
            )
        )
    return results


class Predictor(Protocol):
    """A model behind the gateway: in-process (embedded) or remote (TF Serving)."""

    model_name: str

    async def start(self) -> None:
        """Load or connect, then warm up with a real inference; ready only afterwards."""

    async def close(self) -> None:
        """Finish what was accepted, then release resources."""

    def is_ready(self) -> bool: ...

    async def check(self) -> None:
        """Raise BackendUnavailable if the model cannot serve right now (readiness)."""

    async def predict(
        self, images: list[ImageInput], options: list[Options]
    ) -> list[ModelOutput]: ...

    async def status(self, version: int | None) -> dict[str, Any]:
        """TF Serving's GetModelStatus body."""

    async def metadata(self, version: int | None) -> dict[str, Any]:
        """TF Serving's GetModelMetadata body."""
