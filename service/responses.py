"""Model outputs -> the response objects clients see (labels, boxes, original pixels, image)."""

from __future__ import annotations

import base64
import io

import numpy as np

from model_export.contract import ModelInfo
from service.geometry import VIEW_SIZE, new_pixel_fractions
from service.instances import ImageInput
from service.predictor import ModelOutput
from service.schemas import (
    B64,
    Box,
    ClassScore,
    Glimpse,
    Point,
    Prediction,
    PredictParameters,
    Preprocessing,
)
from service.tensor_json import row_values


def _box(values) -> Box:
    ymin, xmin, ymax, xmax = (round(float(v), 2) for v in values)
    return Box(ymin=ymin, xmin=xmin, ymax=ymax, xmax=xmax)


def to_original(box, crop_box) -> Box:
    """A box in view pixels -> original-photo pixels, through the centre-crop region."""
    top, left, bottom, _ = (float(v) for v in crop_box)
    scale = (bottom - top) / VIEW_SIZE
    ymin, xmin, ymax, xmax = (float(v) for v in box)
    return _box([top + ymin * scale, left + xmin * scale, top + ymax * scale, left + xmax * scale])


def picture_format(data: bytes) -> str:
    """The model's encoding of its annotated picture: JPEG for exports since exporter
    revision 3, PNG before (and for `--annotated-format png`)."""
    return "jpeg" if data.startswith(b"\xff\xd8") else "png"


def _annotated(data: bytes, wanted: str | None) -> tuple[B64, str]:
    """The picture as the model encoded it, or re-encoded in the format the client asked."""
    fmt = picture_format(data)
    if wanted is not None and wanted != fmt:
        from PIL import Image

        buf = io.BytesIO()
        picture = Image.open(io.BytesIO(data)).convert("RGB")
        if wanted == "jpeg":
            picture.save(buf, format="JPEG", quality=90, subsampling=0)
        else:
            picture.save(buf, format="PNG", compress_level=1)
        data, fmt = buf.getvalue(), wanted
    return B64(b64=base64.b64encode(data).decode("ascii")), fmt


def build_prediction(
    image: ImageInput, out: ModelOutput, params: PredictParameters, info: ModelInfo | None = None
) -> Prediction:
    """`info` (the model's own description) names the preprocessing; without it (TF Serving
    with no local copy) the schema's description of the exported model stands.
    An image the gateway shrank while converting it (`image.scale` > 1) is mapped back: the
    crop box and boxes are given in the photo's own pixels.
    """
    picture, picture_fmt = (
        _annotated(out.annotated_image, params.annotated_image_format)
        if params.annotated_image
        else (None, None)
    )
    top, left = image.offset
    crop_box = np.asarray(out.crop_box, float) * image.scale + [top, left, top, left]
    top_k = [
        ClassScore(index=int(c), synset=syn, label=name, score=float(s))
        for c, s, name, syn in zip(
            out.classes, out.scores, out.class_names, out.synsets, strict=True
        )
    ]
    glimpses = [
        Glimpse(
            order=i + 1,
            box=_box(b),
            box_original=to_original(b, crop_box) if params.original_pixels else None,
            centre=Point(y=float(b[0] + b[2]) / 2, x=float(b[1] + b[3]) / 2),
            new_pixels=round(new, 4),
        )
        for i, (b, new) in enumerate(
            zip(out.glimpse_boxes, new_pixel_fractions(out.glimpse_boxes), strict=True)
        )
    ]
    # TF Serving's row for this instance, beside the labelled fields (never instead of them):
    # a client written for TF Serving reads `classes`, `scores`, `glimpse_boxes`... as the
    # SavedModel returns them. `coverage` and `annotated_image_bytes` are both at once.
    signature_row = row_values(
        {n: v for n, v in out.signature_outputs.items() if n not in Prediction.model_fields}
    )
    if image.scale != 1.0 or image.offset != (0.0, 0.0):
        # The model saw the gateway's cut-down copy of a huge photo: its crop box and size
        # are given in the photo's own pixels here too, as in `preprocessing`.
        if "crop_box" in signature_row:
            signature_row["crop_box"] = [float(v) for v in crop_box]
        if "image_size" in signature_row:
            signature_row["image_size"] = list(image.original_size)
    return Prediction(
        **signature_row,
        key=image.key,
        top_class=top_k[0],
        top_k=top_k,
        glimpses=glimpses,
        coverage=out.coverage,
        full_image=ClassScore(
            index=out.full_image_class,
            synset=out.full_image_synset,
            label=out.full_image_name,
            score=out.full_image_score,
        ),
        annotated_image_bytes=picture,
        annotated_image_format=picture_fmt,
        preprocessing=Preprocessing(
            original_size=image.original_size,
            crop_box=_box(crop_box),
            converted_from=image.converted_from,
            **({"method": info.preprocessing} if info and info.preprocessing else {}),
        ),
    )
