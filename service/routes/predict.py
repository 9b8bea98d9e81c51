""":predict, in TF Serving's and AI Platform's URL forms."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from service import serving
from service.routes.deps import StateDep, add_model_verb_routes, error_responses, require_token
from service.schemas import PredictRequest, PredictResponse

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
    serving.admit_prediction(
        state, path["model"], path.get("version"), len(body.instances), body.parameters
    )
    predictions = await serving.predict(state, body.instances, body.parameters)

    def encode() -> bytes:
        # pydantic-core serialises directly: the objects are valid by construction, and FastAPI's
        # re-validation plus jsonable_encoder would cost milliseconds per annotated image.
        return PredictResponse(predictions=predictions).model_dump_json(exclude_none=True).encode()

    content = encode() if len(predictions) == 1 else await run_in_threadpool(encode)
    return Response(content, media_type="application/json")


add_model_verb_routes(
    router, "predict", predict, "Classify photos and return the glimpses", PredictResponse, _ERRORS
)
