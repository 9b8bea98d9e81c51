"""TF Serving's REST answer for our SavedModel -> the same `Prediction` the gateway returns.

TF Serving returns the raw outputs of the signature (model_export/signatures.py): parallel
arrays padded to the batch maximum (class -1, box -1), labels in `class_names`, boxes in view
pixels only, and `annotated_image_bytes` as `{"b64": ...}` because its name ends in `_bytes`.
This module does what the gateway's service/responses.py does with the same outputs, so a
caller cannot tell which endpoint answered.
"""

from __future__ import annotations

import base64
import math
from typing import Any

from glimpse_client.models import Box, ClassScore, Glimpse, Point, Prediction, Preprocessing

VIEW_SIZE = 224
# What the SavedModel's in-graph preprocessing does (model_export/preprocessing.py).
METHOD = "shorter side resized to 256 (bicubic), central 224x224 crop"


def _box(values: list[float]) -> Box:
    ymin, xmin, ymax, xmax = (round(float(v), 2) for v in values)
    return Box(ymin=ymin, xmin=xmin, ymax=ymax, xmax=xmax)


def _to_original(box: list[float], crop_box: list[float]) -> Box:
    top, left, bottom, _ = (float(v) for v in crop_box)
    scale = (bottom - top) / VIEW_SIZE
    ymin, xmin, ymax, xmax = (float(v) for v in box)
    return _box([top + ymin * scale, left + xmin * scale, top + ymax * scale, left + xmax * scale])


def signature_inputs(
    b64: str, num_glimpses: int, top_k: int, boxes: list[list[float]] | None = None
) -> dict[str, Any]:
    """One row-format instance for `serving_options`, or `serving_boxes` with given boxes."""
    row: dict[str, Any] = {"input_image_bytes": {"b64": b64}, "top_k": top_k}
    if boxes is None:
        return {**row, "num_glimpses": num_glimpses}
    return {**row, "num_glimpses": len(boxes), "glimpse_boxes": boxes}


def new_pixel_fractions(boxes: list[list[float]]) -> list[float]:
    """For each glimpse, the fraction of its view pixels (by centre, as the model counts
    them) that no earlier glimpse covered; what the gateway reports as `new_pixels`."""
    seen: set[tuple[int, int]] = set()
    fractions = []
    for ymin, xmin, ymax, xmax in boxes:
        rows = range(max(0, math.ceil(ymin - 0.5)), min(VIEW_SIZE, math.ceil(ymax - 0.5)))
        cols = range(max(0, math.ceil(xmin - 0.5)), min(VIEW_SIZE, math.ceil(xmax - 0.5)))
        pixels = {(r, c) for r in rows for c in cols}
        fractions.append(len(pixels - seen) / len(pixels) if pixels else 0.0)
        seen |= pixels
    return fractions


def prediction(
    row: dict[str, Any], key: str | None, annotated: bool, original_pixels: bool
) -> Prediction:
    """One row of `predictions` -> Prediction, dropping the batch padding."""
    top_k = [
        ClassScore(index=int(c), synset=syn, label=name, score=float(s))
        for c, s, name, syn in zip(
            row["classes"], row["scores"], row["class_names"], row["synsets"], strict=True
        )
        if int(c) >= 0
    ]
    crop_box = row["crop_box"]
    boxes = [b for b in row["glimpse_boxes"] if float(b[2]) >= 0]  # padding: every value -1
    glimpses = [
        Glimpse(
            order=i + 1,
            box=_box(b),
            box_original=_to_original(b, crop_box) if original_pixels else None,
            centre=Point(y=float(b[0] + b[2]) / 2, x=float(b[1] + b[3]) / 2),
            new_pixels=round(new, 4),
        )
        for i, (b, new) in enumerate(zip(boxes, new_pixel_fractions(boxes), strict=True))
    ]
    image = row.get("annotated_image_bytes")
    picture = base64.b64decode(image["b64"]) if annotated and image else None
    return Prediction(
        key=key,
        top_class=top_k[0],
        top_k=top_k,
        glimpses=glimpses,
        coverage=float(row["coverage"]),
        full_image=ClassScore(
            index=int(row["full_image_class"]),
            synset=row["full_image_synset"],
            label=row["full_image_name"],
            score=float(row["full_image_score"]),
        ),
        annotated_image=picture,
        annotated_image_format=_format(picture) if picture is not None else None,
        preprocessing=Preprocessing(
            original_size=tuple(int(v) for v in row["image_size"]),
            crop_box=_box(crop_box),
            method=METHOD,
        ),
    )


def _format(picture: bytes) -> str:
    """The model's encoding of its picture, from its first bytes: JPEG for exports since
    exporter revision 3, PNG before."""
    return "jpeg" if picture.startswith(b"\xff\xd8") else "png"
