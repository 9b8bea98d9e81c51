""":explain, in TF Serving's and AI Platform's URL forms (the same four as :predict).

The route only validates and hands over: the work runs in service/explain/ on the gateway's
own copy of the SavedModel, whatever backend serves predictions (docs/explain.md).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from service.errors import InvalidInput, NotReady
from service.explain.explainer import Explainer
from service.explain.schemas import ExplainRequest, ExplainResponse
from service.instances import decode_instances
from service.routes.deps import (
    StateDep,
    add_model_verb_routes,
    error_responses,
    parse_version,
    require_token,
    served_model,
)
from service.state import GatewayState

router = APIRouter(tags=["explain"], dependencies=[Depends(require_token)])

_ERRORS = error_responses(
    {
        400: "Invalid request, instance or parameter (the message names it)",
        401: "Missing or invalid bearer token",
        404: "Unknown model or version",
        413: "Body over the payload limit",
        415: "Body is not JSON",
        429: "Too many explanations queued; retry after the Retry-After header",
        503: "No local model copy for explanations, or shutting down",
        504: "The explanation did not finish within the request deadline",
    }
)


def explainer_for(app: FastAPI, state: GatewayState) -> Explainer:
    """One Explainer per app, made on first use: apps that never explain load nothing."""
    explainer = getattr(app.state, "explainer", None)
    if explainer is None:
        explainer = app.state.explainer = Explainer(state.settings)
    return explainer


async def explain(request: Request, body: ExplainRequest, state: StateDep) -> Response:
    path = request.path_params
    served_model(state, path["model"], path.get("version"))
    limit = state.settings.max_instances  # the operator's limit holds here too, before decoding
    if len(body.instances) > limit:
        raise InvalidInput(f"{len(body.instances)} instances is over the limit of {limit}")
    if state.shutting_down:
        raise NotReady("the service is shutting down")
    explainer = explainer_for(request.app, state)
    explainer.check(len(body.instances), body.parameters, parse_version(path.get("version")))
    images = await run_in_threadpool(
        decode_instances, body.instances, state.settings.max_image_pixels
    )
    explanations = await explainer.explain(images, body.parameters)
    content = ExplainResponse(explanations=explanations).model_dump_json(exclude_none=True)
    return Response(content, media_type="application/json")


add_model_verb_routes(
    router, "explain", explain, "Explain the classification of photos", ExplainResponse, _ERRORS
)
