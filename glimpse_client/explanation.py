"""Typed `:explain` results (docs/explain.md): AI Platform's legacy explanation shape, with the
rendered attribution decoded to image bytes.

Declared here rather than imported from service/explain/schemas.py so the client stays free of
service code; unknown fields are ignored, so additions on the server do not break it.
"""

from __future__ import annotations

import base64
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from glimpse_client.models import Box


class _Result(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


def _image(encoded: dict[str, Any] | None) -> tuple[bytes | None, str | None]:
    """`{"b64_jpeg": ...}` or `{"b64_png": ...}` -> (bytes, "jpeg" | "png")."""
    for fmt in ("jpeg", "png"):
        value = (encoded or {}).get(f"b64_{fmt}")
        if value:
            return base64.b64decode(value), fmt
    return None, None


class Faithfulness(_Result):
    """The map's top cells at the glimpses' area, judged by the full-image classifier: kept
    with the rest blurred (sufficiency) or blurred themselves (necessity); pixel deletion and
    insertion curves when asked for (`pixel_curves=True`)."""

    metric: str = "equal_area_cells"
    area: float
    full_probability: float
    sufficiency_probability: float
    sufficiency_keeps_prediction: bool
    necessity_drop: float
    necessity_changes_prediction: bool
    pixel_deletion_auc: float | None = None
    pixel_insertion_auc: float | None = None
    pixel_deletion_curve: list[float] | None = None
    pixel_insertion_curve: list[float] | None = None


class GlimpseAttribution(_Result):
    """One glimpse, and the model re-run on it alone and on all the others without it."""

    order: int
    box: Box = Field(description="In pixels of the 224x224 view.")
    probability: float = Field(description="The class's probability from this glimpse alone.")
    without: float = Field(description="... from all the other glimpses.")
    drop: float = Field(description="Probability from all glimpses minus `without`.")
    new_pixels: float


class SagNode(_Result):
    id: int
    glimpses: list[int] = Field(description="Orders of the glimpses kept.")
    confidence: float
    relative_confidence: float
    minimal_sufficient: bool


class SagEdge(_Result):
    source: int
    target: int
    removed: int
    drop: float


class AttentionGraph(_Result):
    """The structured attention graph over the glimpses (method `sag`)."""

    threshold: float
    full_confidence: float
    search: str
    minimal_sufficient_sets: list[list[int]]
    roots: list[list[int]]
    nodes: list[SagNode]
    edges: list[SagEdge]
    image: bytes | None = None


class LabelAttribution(_Result):
    """One explained class: scores, the picture of the attribution, and how faithful it is."""

    label_index: int
    label_name: str
    synset: str | None = None
    probability: float | None = None
    method: str
    explained_model: str = Field(description="`glimpses` or `full_image`.")
    example_score: float = Field(description="The explained logit.")
    baseline_score: float
    approx_error: float | None = Field(None, description="Completeness gap, where defined.")
    image: bytes | None = Field(None, description="The rendered attribution (JPEG or PNG).")
    image_format: str | None = None
    faithfulness: Faithfulness | None = None
    glimpses: list[GlimpseAttribution] | None = None
    sag: AttentionGraph | None = None
    attribution_map: list[list[float]] | None = Field(
        None, description="The raw 224x224 map, when asked for (`attribution_map=True`)."
    )
    visualization: dict[str, Any] = {}

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> LabelAttribution:
        fields = dict(body)
        rendered = fields.pop("attributions", {}) or {}
        fields["image"], fields["image_format"] = _image(next(iter(rendered.values()), None))
        if isinstance(fields.get("attribution_map"), dict):
            fields["attribution_map"] = fields["attribution_map"].get("values")
        if fields.get("sag"):
            sag = dict(fields["sag"])
            sag["image"], _ = _image(sag.get("image"))
            fields["sag"] = sag
        return cls.model_validate(fields)


class Explanation(_Result):
    key: str | None = None
    attributions: list[LabelAttribution] = Field(
        description="`attributions_by_label` on the wire: one entry per explained class."
    )
    model_evaluations: int = Field(description="Images the model ran on for this explanation.")
    timing_ms: dict[str, float] = {}

    @property
    def top(self) -> LabelAttribution:
        """The first (usually only) explained class."""
        return self.attributions[0]

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Explanation:
        return cls(
            key=body.get("key"),
            attributions=[
                LabelAttribution.from_body(a) for a in body.get("attributions_by_label", [])
            ],
            model_evaluations=body.get("model_evaluations", 0),
            timing_ms=body.get("timing_ms", {}),
        )
