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
    parse_version,
    path_parameters,
    require_json,
    require_token,
    served_model,
)
from service.schemas import ErrorBody
from service.state import GatewayState

router = APIRouter(tags=["explain"], dependencies=[Depends(require_token)])

_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "string"}}
}
_ERRORS = {
    status: {"model": ErrorBody, "description": text}
    | ({"headers": _RETRY_AFTER} if status in (429, 503) else {})
    for status, text in [
        (400, "Invalid request, instance or parameter (the message names it)"),
        (401, "Missing or invalid bearer token"),
        (404, "Unknown model or version"),
        (413, "Body over the payload limit"),
        (415, "Body is not JSON"),
        (429, "Too many explanations queued; retry after the Retry-After header"),
        (503, "No local model copy for explanations, or shutting down"),
        (504, "The explanation did not finish within the request deadline"),
    ]
}


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


PATHS = {
    "/v1/models/{model}:explain": "Explain the classification of photos",
    "/v1/models/{model}/versions/{version}:explain": "The same, with a given model version",
    "/v1/projects/{project}/models/{model}:explain": "The same, AI Platform URL form",
    "/v1/projects/{project}/models/{model}/versions/{version}:explain": (
        "The same, AI Platform URL form with a version (`v<N>` or `N`)"
    ),
}

for _path, _summary in PATHS.items():
    router.add_api_route(
        _path,
        explain,
        methods=["POST"],
        response_model=ExplainResponse,
        responses=_ERRORS,
        dependencies=[Depends(require_json)],
        summary=_summary,
        name=_path,
        openapi_extra=path_parameters(_path),
    )
