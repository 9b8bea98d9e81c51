""":explain, in TF Serving's and AI Platform's URL forms (the same four as :predict).

The route only validates and hands over: the work runs in service/explain/ on the gateway's
own copy of the SavedModel, whatever backend serves predictions (docs/explain.md).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from service import serving
from service.explain.schemas import ExplainRequest, ExplainResponse
from service.routes.deps import StateDep, add_model_routes, error_responses, require_token

router = APIRouter(tags=["explain"], dependencies=[Depends(require_token)])

_ERRORS = error_responses(
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


async def explain(request: Request, body: ExplainRequest, state: StateDep) -> Response:
    path = request.path_params
    params = body.parameters
    serving.admit_explanation(
        state, path["model"], path.get("version"), len(body.instances), params
    )
    explanations = await serving.explain(state, body.instances, params)
    content = ExplainResponse(explanations=explanations).model_dump_json(exclude_none=True)
    return Response(content, media_type="application/json")


add_model_routes(
    router,
    ":explain",
    explain,
    "Explain the classification of photos",
    _ERRORS,
    response_model=ExplainResponse,
)
