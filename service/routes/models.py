"""Model status and metadata in TF Serving's shapes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from service.errors import NotReady
from service.routes.deps import StateDep, path_parameters, require_token, served_model
from service.schemas import ErrorBody

router = APIRouter(tags=["models"], dependencies=[Depends(require_token)])
_ERRORS = {
    401: {"model": ErrorBody, "description": "Missing or invalid bearer token"},
    404: {"model": ErrorBody, "description": "Unknown model or version"},
    503: {"model": ErrorBody, "description": "Model not loaded yet, or failed to load"},
}


def _loaded(state) -> None:
    if not state.predictor.is_ready():
        raise NotReady("model is loading; retry shortly")


async def model_status(request: Request, state: StateDep) -> dict[str, Any]:
    """TF Serving's GetModelStatus body."""
    wanted = served_model(state, request.path_params["model"], request.path_params.get("version"))
    _loaded(state)
    return await state.predictor.status(wanted)


async def model_metadata(request: Request, state: StateDep) -> dict[str, Any]:
    """TF Serving's GetModelMetadata body: the signatures."""
    wanted = served_model(state, request.path_params["model"], request.path_params.get("version"))
    _loaded(state)
    return await state.predictor.metadata(wanted)


for _prefix in ("/v1/models/{model}", "/v1/models/{model}/versions/{version}"):
    for _path, _handler in ((_prefix, model_status), (_prefix + "/metadata", model_metadata)):
        router.add_api_route(
            _path,
            _handler,
            methods=["GET"],
            responses=_ERRORS,
            openapi_extra=path_parameters(_path),
        )
