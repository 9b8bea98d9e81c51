"""TF Serving's REST API, for every served model: `/v1/models/{m}[/versions/{N}|/labels/{L}]`
with `:predict` (every body form), `:classify`/`:regress` (refused as TF Serving refuses them
for this model), status and metadata, and the gateway's `:explain`.

An adapter: it turns bodies into the data plane's verbs and answers into TF Serving's JSON
(service/tensor_json.py for tensors). AI Platform's online prediction takes the same bodies,
so service/routes/aiplatform.py registers these handlers on its own URL forms.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Response

from service import tensor_json
from service.body_parsing import one_at_a_time
from service.dataplane import DataPlane, off_loop
from service.errors import InvalidInput
from service.explain.schemas import ExplainRequest, ExplainResponse
from service.routes.deps import (
    TF_SERVING_FORMS,
    ModelRef,
    ModelRefDep,
    PlaneDep,
    add_model_routes,
    error_responses,
    require_token,
)
from service.schemas import PredictRequest, PredictResponse, TensorResponse
from service.signatures import signature_defs

router = APIRouter(tags=["TF Serving"], dependencies=[Depends(require_token)])

PREDICT_ERRORS = error_responses(
    {
        400: "Invalid request or instance (the message names the instance index)",
        401: "Missing or invalid bearer token",
        404: "Unknown model or version",
        413: "Body over the payload limit",
        429: "Queue full; retry after the Retry-After header",
        503: "Model not ready (loading, or shutting down)",
        504: "The model did not answer in time",
    }
)
EXPLAIN_ERRORS = error_responses(
    {
        400: "Invalid request, instance or parameter (the message names it)",
        401: "Missing or invalid bearer token",
        404: "Unknown model or version",
        413: "Body over the payload limit",
        429: "Too many explanations queued; retry after the Retry-After header",
        503: "No local model copy for explanations, or shutting down",
        504: "The explanation did not finish within the request deadline",
    }
)


def json_response(content: bytes) -> Response:
    return Response(content, media_type="application/json")


async def answer_predict(plane: DataPlane, ref: ModelRef, body: PredictRequest) -> Response:
    """A :predict body, in any of its forms, answered for the model and version (also what
    Vertex's :rawPredict answers: the gateway is the model's container)."""
    if body.tensor_request is not None:  # TF Serving's columnar form, or another signature
        return json_response(await answer_tensors(plane, ref, body.tensor_request))
    assert body.instances is not None  # the schema refuses a body with neither form
    answered = await plane.predict(ref.name, ref.version, body.instances, body.parameters)

    def encode() -> bytes:
        # pydantic-core serialises directly: the objects are valid by construction, and
        # FastAPI's re-validation plus jsonable_encoder would cost milliseconds per image.
        answer = PredictResponse(predictions=answered.items)
        return answer.model_dump_json(exclude_none=True).encode()

    return json_response(await off_loop(len(answered.items) == 1, encode))


async def answer_tensors(plane: DataPlane, ref: ModelRef, body: dict[str, Any]) -> bytes:
    """The named signature on the request's tensors: TF Serving's `predictions` rows or
    `outputs` columns, as JSON bytes."""
    if "parameters" in body:
        raise InvalidInput(
            "parameters apply to the default signature's labelled rows; another signature"
            " takes its own inputs (see /metadata)"
        )
    async with plane.target(ref.name, ref.version, body.get("signature_name")) as target:
        # Pure Python over every value (~26 ms for one 224x224x3 float input): off the loop.
        parse = tensor_json.parse_request
        tensors, form = await asyncio.to_thread(one_at_a_time, parse, body, target.signature)

        def where(i: int) -> str:
            if form == "columnar":
                return f"inputs.input_image_bytes[{i}]"
            return f"instances[{i}].input_image_bytes"

        outputs = await plane.infer(target, tensors, where)

    def encode() -> bytes:
        if form == "row":
            return b'{"predictions":' + tensor_json.rows_json(outputs).encode() + b"}"
        return b'{"outputs":' + tensor_json.columns_json(outputs).encode() + b"}"

    return await asyncio.to_thread(encode)


async def predict(body: PredictRequest, ref: ModelRefDep, plane: PlaneDep) -> Response:
    return await answer_predict(plane, ref, body)


async def explain(body: ExplainRequest, ref: ModelRefDep, plane: PlaneDep) -> Response:
    """Explain the classification of photos (docs/explain.md)."""
    answered = await plane.explain(ref.name, ref.version, body.instances, body.parameters)

    def encode() -> bytes:
        answer = ExplainResponse(explanations=answered.items)
        return answer.model_dump_json(exclude_none=True).encode()

    return json_response(await off_loop(len(answered.items) == 1, encode))


async def model_status(ref: ModelRefDep, plane: PlaneDep) -> dict[str, Any]:
    """TF Serving's GetModelStatus body."""
    return await plane.status(ref.name, ref.version)


async def model_metadata(ref: ModelRefDep, plane: PlaneDep) -> dict[str, Any]:
    """TF Serving's GetModelMetadata body: the signatures."""
    _, body = await plane.metadata(ref.name, ref.version)
    return body


_OTHER_APIS = {
    "classify": ("classification", "tensorflow/serving/classify"),
    "regress": ("regression", "tensorflow/serving/regress"),
}


def _refuser(verb: str) -> Callable:
    async def other_api(
        ref: ModelRefDep, plane: PlaneDep, body: Annotated[dict[str, Any] | None, Body()] = None
    ) -> None:
        """`:classify` and `:regress` need a signature of that method, which the exported
        model does not have: TF Serving's own 400 for that case, after the same model and
        version checks as every request."""
        signature = (body or {}).get("signature_name")
        _, metadata = await plane.metadata(ref.name, ref.version)
        defs = signature_defs(metadata)
        name = signature if isinstance(signature, str) and signature else "serving_default"
        if name not in defs:
            raise InvalidInput(f"No signature was found with the name: {name}")
        kind, method = _OTHER_APIS[verb]
        found = defs[name].get("method_name", "")
        if found != method:
            raise InvalidInput(
                f"Expected {kind} signature method_name to be {method}. Was: {found}"
            )
        # A model exported with such a signature: the gateway does not implement these APIs.
        raise InvalidInput(f":{verb} is not served by the gateway; use :predict")

    return other_api


STATUS_ERRORS = error_responses(
    {
        400: "Unknown version label, or a version past int64",
        401: "Missing or invalid bearer token",
        404: "Unknown model or version",
        503: "Model not loaded yet, or failed to load",
    }
)
OTHER_API_ERRORS = error_responses(
    {
        400: "The model has no signature for this API (TF Serving's message)",
        401: "Missing or invalid bearer token",
        404: "Unknown model or version",
        503: "Model not ready (loading, or shutting down)",
    }
)

add_model_routes(
    router,
    TF_SERVING_FORMS,
    ":predict",
    predict,
    "Classify photos and return the glimpses",
    PREDICT_ERRORS,
    response_model=PredictResponse | TensorResponse,
)
add_model_routes(
    router,
    TF_SERVING_FORMS,
    ":explain",
    explain,
    "Explain the classification of photos",
    EXPLAIN_ERRORS,
    response_model=ExplainResponse,
)
for _verb in ("classify", "regress"):
    add_model_routes(
        router,
        TF_SERVING_FORMS,
        f":{_verb}",
        _refuser(_verb),
        f"TF Serving's :{_verb}: the model has no {_verb} signature (400)",
        OTHER_API_ERRORS,
    )
add_model_routes(
    router,
    TF_SERVING_FORMS,
    "",
    model_status,
    "TF Serving's model status",
    STATUS_ERRORS,
    method="GET",
)
add_model_routes(
    router,
    TF_SERVING_FORMS,
    "/metadata",
    model_metadata,
    "TF Serving's model metadata: the signatures",
    STATUS_ERRORS,
    method="GET",
)
