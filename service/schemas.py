"""Request and response bodies: the public contract, documented in the OpenAPI page.

The request mirrors TF Serving / AI Platform (`instances`, `{"b64": ...}`); the response is one
object per instance, in order, with the class, the glimpses and the annotated image.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

from service.geometry import VIEW_SIZE

_TINY_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
)


class GoogleJson(BaseModel):
    """Google's JSON APIs (ml v1, Vertex): camelCase names on the wire, snake_case here."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class B64(BaseModel):
    """Binary data as TF Serving and AI Platform carry it in JSON."""

    model_config = ConfigDict(extra="forbid")
    b64: str = Field(description="Base64 (standard alphabet, padding optional) of the bytes.")


def instance_key(value: Any) -> str | int | float:
    """gcloud's own examples key instances with numbers (`"key": 3`): a key is any JSON
    scalar but a boolean, kept as given (3 stays 3, "3" stays "3"), in one clear message."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("a key is a string or a number")
    if isinstance(value, str) and len(value) > 256:
        raise ValueError("a string key has at most 256 characters")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("a number key must be finite")
    return value


InstanceKey = Annotated[
    str | int | float,
    PlainValidator(instance_key),
    WithJsonSchema({"anyOf": [{"type": "string", "maxLength": 256}, {"type": "number"}]}),
]


class Instance(BaseModel):
    """One photo. The bare form `{"b64": "..."}` is accepted too (TF Serving's row format)."""

    model_config = ConfigDict(extra="forbid")
    input_image_bytes: B64 = Field(description="JPEG, PNG, WebP, BMP or GIF (first frame).")
    key: InstanceKey | None = Field(
        None, description="A string or a number, echoed back in the prediction as given."
    )

    @model_validator(mode="before")
    @classmethod
    def _bare_b64(cls, data: Any) -> Any:
        """TF Serving's row format also allows `{"b64": ...}` (here, beside an optional key)."""
        if isinstance(data, dict) and "b64" in data and "input_image_bytes" not in data:
            rest = {k: v for k, v in data.items() if k != "b64"}
            return {"input_image_bytes": {"b64": data["b64"]}, **rest}
        return data


def _view_box(box: list[float]) -> list[float]:
    ymin, xmin, ymax, xmax = box
    if not all(math.isfinite(v) for v in box):
        raise ValueError("coordinates must be finite numbers")
    if min(box) < 0 or max(box) > VIEW_SIZE:
        raise ValueError(
            f"[ymin, xmin, ymax, xmax] must lie in the {VIEW_SIZE}x{VIEW_SIZE} view, 0..{VIEW_SIZE}"
        )
    if ymax - ymin < 1 or xmax - xmin < 1:
        raise ValueError("the box is empty: ymax - ymin and xmax - xmin must be at least 1 pixel")
    return box


ViewBox = Annotated[list[float], Field(min_length=4, max_length=4), AfterValidator(_view_box)]


class PredictParameters(BaseModel):
    """Options for the whole request. Unknown names are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")
    # The upper limits are the served model's own (its model_info asset: 16 and 20 for the
    # exported model), checked at admission, so they are not re-typed here.
    num_glimpses: int = Field(
        6, ge=1, description="Glimpses the model takes (T), up to the model's `max_glimpses`."
    )
    top_k: int = Field(
        5, ge=1, description="Classes listed in `top_k`, up to the model's `max_top_k`."
    )
    annotated_image: bool = Field(True, description="Return the photo with the glimpses drawn.")
    annotated_image_format: Literal["png", "jpeg"] | None = Field(
        None,
        description=(
            "The annotated picture's encoding; left out, the model's own (JPEG for models"
            " exported since exporter revision 3, PNG before). Another is re-encoded by the"
            " gateway; the answer's `annotated_image_format` says which you got."
        ),
    )
    original_pixels: bool = Field(True, description="Also give boxes in original-photo pixels.")
    glimpse_boxes: list[ViewBox] | None = Field(
        None,
        min_length=1,
        description=(
            "Your own glimpses, `[ymin, xmin, ymax, xmax]` in pixels of the 224x224 view: the"
            " model skips choosing and decides from exactly these pixels (the glimpses in the"
            " answer are these boxes, in this order). What does the model see from here only?"
        ),
        examples=[[[40, 60, 104, 124], [40, 100, 104, 164]]],
    )

    @model_validator(mode="after")
    def _boxes_set_the_count(self) -> PredictParameters:
        if self.glimpse_boxes is None:
            return self
        given = len(self.glimpse_boxes)
        if "num_glimpses" in self.model_fields_set and self.num_glimpses != given:
            raise ValueError(
                f"num_glimpses ({self.num_glimpses}) differs from the {given} glimpse_boxes;"
                " leave it out when giving boxes"
            )
        self.num_glimpses = given
        return self


DEFAULT_SIGNATURES = (None, "", "serving_default")  # what names the default signature


def is_tensor_request(body: Any) -> bool:
    """TF Serving's forms the gateway answers tensor for tensor: columnar `inputs`, or any
    signature but the default (whose rows the gateway labels)."""
    return isinstance(body, dict) and (
        "inputs" in body or body.get("signature_name") not in DEFAULT_SIGNATURES
    )


class PredictRequest(BaseModel):
    """`instances` with the default signature is the gateway's labelled path (glimpses, class
    names, annotated image, and every output of the signature beside them). TF Serving's other
    forms (`inputs`, or `signature_name` naming another signature of the model's metadata) are
    answered as TF Serving answers them: the named signature's tensors, nothing added."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "instances": [{"input_image_bytes": {"b64": _TINY_PNG}, "key": "photo-1"}],
                    "parameters": {"num_glimpses": 6, "top_k": 3},
                },
                {
                    "signature_name": "classify",
                    "inputs": {"input_image_bytes": [{"b64": _TINY_PNG}]},
                },
            ]
        },
    )
    instances: list[Instance] | None = Field(
        None, min_length=1, description="Row form; for another signature, its named inputs."
    )
    inputs: Any = Field(
        None, description="TF Serving's columnar form: each input's whole batch by name."
    )
    parameters: PredictParameters = Field(default_factory=PredictParameters)
    signature_name: str | None = Field(
        None, description="Any signature the model's metadata lists; empty: serving_default."
    )
    # The raw body of a tensor request (is_tensor_request): service/routes/tfserving.py reads
    # it against the signature the data plane resolved.
    _tensors: dict[str, Any] | None = PrivateAttr(None)

    @model_validator(mode="wrap")
    @classmethod
    def _forms(cls, data: Any, handler: Any) -> PredictRequest:
        if is_tensor_request(data):
            signature = data.get("signature_name")
            if signature is not None and not isinstance(signature, str):
                raise ValueError(
                    "JSON Value: {...} not formatted correctly. 'signature_name' key must be a"
                    " string value."
                )
            request = cls.model_construct(signature_name=signature)
            request._tensors = data
            return request
        if isinstance(data, dict) and data.get("instances") is None:
            raise ValueError("Missing 'inputs' or 'instances' key")
        return handler(data)

    @property
    def tensor_request(self) -> dict[str, Any] | None:
        return self._tensors


class ClassScore(BaseModel):
    index: int = Field(
        description="Class index in the model's labels: 0..999 for ImageNet, 0..K-1 for a"
        " model trained on K labels of your own (in sorted label order)."
    )
    synset: str = Field(
        description="WordNet id for ImageNet models, e.g. n02123045; empty for your own labels."
    )
    label: str = Field(description="Human-readable name: ImageNet's, or your own label.")
    score: float = Field(description="Probability.")


class Box(BaseModel):
    ymin: float
    xmin: float
    ymax: float
    xmax: float


class Point(BaseModel):
    y: float
    x: float


class Glimpse(BaseModel):
    order: int = Field(description="1 for the first glimpse taken.")
    box: Box = Field(description="In pixels of the 224x224 view the model classifies.")
    box_original: Box | None = Field(None, description="The same box in original-photo pixels.")
    centre: Point = Field(description="Box centre, 224x224 view pixels.")
    new_pixels: float = Field(
        description="Fraction of this glimpse's pixels that no earlier glimpse covered."
    )


class Preprocessing(BaseModel):
    """How the photo became the 224x224 view (the AI Workshop contract says 224x224)."""

    original_size: tuple[int, int] = Field(description="(height, width) of the decoded photo.")
    crop_box: Box = Field(description="The region kept, in original pixels.")
    view_size: int = VIEW_SIZE
    method: str = "shorter side resized to 256 (bicubic), central 224x224 crop"
    converted_from: str | None = Field(
        None, description="Set when the gateway re-encoded the image (e.g. CMYK JPEG, WebP)."
    )


class Prediction(BaseModel):
    """The labelled answer for one instance. Beside these fields, every output of the model's
    signature that no field already holds (`classes`, `scores`, `glimpse_boxes`, ...) stands
    under its own name, as TF Serving writes it: clients of either kind read the same row."""

    model_config = ConfigDict(extra="allow")
    key: str | int | float | None = Field(None, description="The instance's key, as given.")
    top_class: ClassScore = Field(description="What the model decided from the glimpses alone.")
    top_k: list[ClassScore]
    glimpses: list[Glimpse] = Field(description="In visiting order.")
    coverage: float = Field(description="Fraction of the 224x224 view inside any glimpse.")
    full_image: ClassScore = Field(
        description="What the same backbone says from the whole photo, for comparison."
    )
    annotated_image_bytes: B64 | None = Field(
        None, description="The view with the glimpses drawn; unseen pixels dimmed."
    )
    annotated_image_format: Literal["png", "jpeg"] | None = None
    preprocessing: Preprocessing


class PredictResponse(BaseModel):
    predictions: list[Prediction]


class TensorResponse(BaseModel):
    """TF Serving's answer to its tensor forms: `predictions` (rows) for `instances`, `outputs`
    (columns) for `inputs`; each value as the signature returns it."""

    predictions: list[Any] | None = None
    outputs: Any = None


class RpcStatus(BaseModel):
    """google.rpc.Status as Google's JSON APIs write it (service/error_body.py)."""

    code: int = Field(description="The HTTP status code.")
    message: str
    status: str = Field(examples=["INVALID_ARGUMENT", "NOT_FOUND"])


class ErrorBody(BaseModel):
    """TF Serving's error shape on `/v1/models/...`; a google.rpc.Status on `/v1/projects/...`."""

    error: str | RpcStatus = Field(
        examples=["instances[2].input_image_bytes: not a decodable image"]
    )
