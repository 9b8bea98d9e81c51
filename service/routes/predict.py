""":predict, in TF Serving's and AI Platform's URL forms."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from service import serving, tfserving_forms
from service.routes.deps import (
    StateDep,
    add_model_routes,
    error_responses,
    require_token,
)
from service.schemas import PredictRequest, PredictResponse, TensorResponse
from service.state import GatewayState

router = APIRouter(tags=["predict"], dependencies=[Depends(require_token)])

_ERRORS = error_responses(
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


async def predict(request: Request, body: PredictRequest, state: StateDep) -> Response:
    path = request.path_params
    return await answer(state, path["model"], path.get("version"), body)


async def answer(
    state: GatewayState, model: str, version: str | None, body: PredictRequest
) -> Response:
    """A :predict body, in any of its forms, answered for `model` and `version` (also what
    Vertex's :rawPredict answers: the gateway is the model's container)."""
    if body.tensor_request is not None:  # TF Serving's columnar form, or another signature
        content = await tfserving_forms.predict_tensors(state, model, version, body.tensor_request)
        return Response(content, media_type="application/json")
    assert body.instances is not None  # the schema refuses a body with neither form
    serving.admit_prediction(state, model, version, len(body.instances), body.parameters)
    predictions = await serving.predict(state, body.instances, body.parameters)

    def encode() -> bytes:
        # pydantic-core serialises directly: the objects are valid by construction, and FastAPI's
        # re-validation plus jsonable_encoder would cost milliseconds per annotated image.
        return PredictResponse(predictions=predictions).model_dump_json(exclude_none=True).encode()

    content = encode() if len(predictions) == 1 else await run_in_threadpool(encode)
    return Response(content, media_type="application/json")


add_model_routes(
    router,
    ":predict",
    predict,
    "Classify photos and return the glimpses",
    _ERRORS,
    response_model=PredictResponse | TensorResponse,
)

_OTHER_API_ERRORS = error_responses(
    {
        400: "The model has no signature for this API (TF Serving's message)",
        401: "Missing or invalid bearer token",
        404: "Unknown model or version",
        503: "Model not ready (loading, or shutting down)",
    }
)


def _refuser(verb: str) -> Callable:
    async def other_api(
        request: Request, state: StateDep, body: Annotated[dict[str, Any] | None, Body()] = None
    ) -> None:
        """`:classify` / `:regress`: refused as TF Serving refuses them for this model."""
        path = request.path_params
        signature = (body or {}).get("signature_name")
        await tfserving_forms.refuse_other_api(
            state, path["model"], path.get("version"), verb, signature
        )

    return other_api


for _verb in ("classify", "regress"):
    add_model_routes(
        router,
        f":{_verb}",
        _refuser(_verb),
        f"TF Serving's :{_verb}: the model has no {_verb} signature (400)",
        _OTHER_API_ERRORS,
        ai_platform=False,  # TF Serving's APIs; AI Platform has none of that name
    )
