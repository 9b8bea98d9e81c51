"""Typed results: the gateway's prediction object, with the annotated image already decoded.

These mirror service/schemas.py but are declared here, not imported, so that the client needs
only httpx and pydantic (no TensorFlow, no service code). Unknown fields are ignored, so a newer
service that adds fields does not break an older client.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Result(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ClassScore(_Result):
    index: int = Field(description="Class index in the model's labels (0..999 for ImageNet).")
    synset: str = Field(description="WordNet id (ImageNet); empty for your own labels.")
    label: str = Field(description="The class name: ImageNet's, or your own label.")
    score: float = Field(description="Probability.")


class Box(_Result):
    ymin: float
    xmin: float
    ymax: float
    xmax: float


class Point(_Result):
    y: float
    x: float


class Glimpse(_Result):
    order: int = Field(description="1 for the first glimpse taken.")
    box: Box = Field(description="In pixels of the 224x224 view the model classifies.")
    box_original: Box | None = Field(None, description="The same box in the photo's pixels.")
    centre: Point
    new_pixels: float = Field(description="Fraction of its pixels no earlier glimpse covered.")


class Preprocessing(_Result):
    original_size: tuple[int, int] = Field(description="(height, width) of the decoded photo.")
    crop_box: Box = Field(description="The region the model saw, in the photo's pixels.")
    view_size: int = 224
    method: str | None = None
    converted_from: str | None = None


class Prediction(_Result):
    """One photo's answer, the same whichever endpoint (gateway or TF Serving) gave it."""

    key: str | int | float | None = None  # as the instance gave it
    top_class: ClassScore = Field(description="Decided from the glimpse pixels alone.")
    top_k: list[ClassScore]
    glimpses: list[Glimpse] = Field(description="In visiting order.")
    coverage: float = Field(description="Fraction of the 224x224 view inside any glimpse.")
    full_image: ClassScore = Field(description="The backbone's answer from the whole photo.")
    annotated_image: bytes | None = Field(
        None, description="The view with the glimpses drawn (PNG or JPEG bytes), decoded."
    )
    annotated_image_format: Literal["png", "jpeg"] | None = None
    preprocessing: Preprocessing

    @classmethod
    def from_gateway(cls, body: dict[str, Any]) -> Prediction:
        """The gateway's JSON object; the image arrives as `{"b64": ...}`."""
        fields = dict(body)
        encoded = fields.pop("annotated_image_bytes", None)
        if encoded is not None:
            fields["annotated_image"] = base64.b64decode(encoded["b64"])
        return cls.model_validate(fields)

    def save_annotated(self, path: str | Path) -> Path:
        """Write the annotated image; a missing suffix is taken from its format."""
        if self.annotated_image is None:
            raise ValueError("this prediction has no annotated image (annotated_image=False)")
        path = Path(path)
        if not path.suffix:
            path = path.with_suffix(".jpg" if self.annotated_image_format == "jpeg" else ".png")
        path.write_bytes(self.annotated_image)
        return path


class VersionStatus(_Result):
    version: int
    state: str = Field(description="TF Serving's state: START, LOADING, AVAILABLE, UNLOADING, END.")
    error_code: str = "OK"
    error_message: str = ""


class ModelStatus(_Result):
    """TF Serving's GetModelStatus body, which the gateway answers too."""

    versions: list[VersionStatus]

    @property
    def available(self) -> bool:
        return any(v.state == "AVAILABLE" for v in self.versions)

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> ModelStatus:
        versions = [
            VersionStatus(
                version=int(v["version"]),
                state=v["state"],
                error_code=(v.get("status") or {}).get("error_code", "OK"),
                error_message=(v.get("status") or {}).get("error_message", ""),
            )
            for v in body.get("model_version_status", [])
        ]
        return cls(versions=versions)


class ModelMetadata(_Result):
    """TF Serving's GetModelMetadata body: the model's name, version and signatures."""

    name: str
    version: int
    signature_def: dict[str, Any] = Field(
        description="Signature name -> TF's SignatureDef as JSON (inputs, outputs, method)."
    )

    @property
    def signatures(self) -> list[str]:
        return sorted(self.signature_def)

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> ModelMetadata:
        spec = body.get("model_spec", {})
        defs = body.get("metadata", {}).get("signature_def", {}).get("signature_def", {})
        return cls(
            name=spec.get("name", ""), version=int(spec.get("version", 0)), signature_def=defs
        )
