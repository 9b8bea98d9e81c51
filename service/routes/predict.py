""":predict, in TF Serving's and AI Platform's URL forms."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from service.errors import BackendTimeout, InvalidInput, NotReady
from service.instances import decode_instances
from service.predictor import Options
from service.responses import build_prediction
from service.routes.deps import (
    StateDep,
    add_model_verb_routes,
    error_responses,
    require_token,
    served_model,
)
from service.schemas import PredictRequest, PredictResponse
from service.state import GatewayState

router = APIRouter(tags=["predict"], dependencies=[Depends(require_token)])

_ERRORS = error_responses(
    {
        400: "Invalid request or instance (the message names the instance index)",
        401: "Missing or invalid bearer token",
        404: "Unknown model or version",
        413: "Body over the payload limit",
        415: "Body is not JSON",
        429: "Queue full; retry after the Retry-After header",
        503: "Model not ready (loading, or shutting down)",
        504: "The model did not answer in time",
    }
)


_INLINE_B64 = 200_000  # ~150 KB image: at most tens of ms even if it must be converted


async def _off_loop(inline: bool, fn, *args):
    """CPU work goes to a worker thread unless it is one small item, whose sub-millisecond
    validation or encoding costs less than the thread hop (a p50 cost at concurrency 1)."""
    if inline:
        return fn(*args)
    return await run_in_threadpool(fn, *args)


async def respond(
    state: GatewayState, model: str, version: str | None, body: PredictRequest
) -> Response:
    """Validate, batch, predict, label and answer: the whole request path."""
    settings, metrics = state.settings, state.metrics
    state.predictor.check_version(served_model(state, model, version))
    if len(body.instances) > settings.max_instances:
        raise InvalidInput(
            f"{len(body.instances)} instances is over the limit of {settings.max_instances}"
        )
    if state.shutting_down:
        raise NotReady("the service is shutting down")
    if not state.predictor.is_ready():
        raise NotReady("model is loading; retry shortly")

    started = time.perf_counter()
    small = len(body.instances) == 1 and len(body.instances[0].input_image_bytes.b64) < _INLINE_B64
    images = await _off_loop(small, decode_instances, body.instances, settings.max_image_pixels)
    decoded = time.perf_counter()
    metrics.stage.labels("decode").observe(decoded - started)

    params = body.parameters
    options = [Options.of(params)] * len(images)
    try:
        outputs = await asyncio.wait_for(
            state.predictor.predict(images, options), settings.request_timeout_s
        )
    except TimeoutError:
        raise BackendTimeout(
            f"no answer from the model within {settings.request_timeout_s:g} s"
        ) from None
    answered = time.perf_counter()

    def encode() -> bytes:
        predictions = [build_prediction(i, o, params) for i, o in zip(images, outputs, strict=True)]
        # pydantic-core serialises directly: the objects are valid by construction, and FastAPI's
        # re-validation plus jsonable_encoder would cost milliseconds per annotated image.
        return PredictResponse(predictions=predictions).model_dump_json(exclude_none=True).encode()

    content = await _off_loop(len(images) == 1, encode)
    metrics.stage.labels("encode").observe(time.perf_counter() - answered)
    metrics.instances.inc(len(images))
    return Response(content, media_type="application/json")


async def predict(request: Request, body: PredictRequest, state: StateDep) -> Response:
    path = request.path_params
    return await respond(state, path["model"], path.get("version"), body)


add_model_verb_routes(
    router, "predict", predict, "Classify photos and return the glimpses", PredictResponse, _ERRORS
)
